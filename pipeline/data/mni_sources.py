"""The MNI152 arrays that nilearn ships, read from nilearn or from an exported archive.

Every template-based data source of the project (:mod:`~sgilo.pipeline.data.mni`'s slices,
``synth-brain``, the synthetic contrasts of the out-of-distribution suite) reads these four
arrays, all 197×233×189 at 1 mm on one RAS+ grid (inside the nilearn wheel pinned in
requirements.lock; nothing is downloaded):

* ``t1``: ``load_mni152_template(resolution=1)``, float32 in [0, 1], with its ``affine``;
* ``gm``, ``wm``: ``load_mni152_gm_template`` / ``load_mni152_wm_template``, float64;
* ``mask``: ``load_mni152_brain_mask(resolution=1) > 0``, bool.

A machine without nilearn (the bare CUDA image that trains on a GPU, models/weights/PROVENANCE.md)
reads them from an archive that this module writes on a machine with it::

    python -m sgilo.pipeline.data.mni_sources mni_template.npz   # 8 MB
    SGILO_MNI_ARCHIVE=mni_template.npz sgilo train-gan --data synth-brain ...

The archive holds the arrays exactly (the tissue maps' float64 values are float32 numbers), so
images made from it are bit for bit those made from nilearn.
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ARCHIVE_ENV", "MNIArrays", "export_archive", "mni_arrays"]

#: environment variable naming an archive written by :func:`export_archive`
ARCHIVE_ENV = "SGILO_MNI_ARCHIVE"


@dataclass(frozen=True)
class MNIArrays:
    """The template arrays (module docstring); read-only, shared by every caller."""

    t1: np.ndarray
    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray


def _from_nilearn() -> dict[str, np.ndarray]:
    from nilearn import datasets

    img = datasets.load_mni152_template(resolution=1)
    return {
        "t1": np.asarray(img.get_fdata(dtype=np.float32)),
        "affine": np.asarray(img.affine, dtype=np.float64),
        "gm": datasets.load_mni152_gm_template(resolution=1).get_fdata(),
        "wm": datasets.load_mni152_wm_template(resolution=1).get_fdata(),
        "mask": datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0,
    }


def _from_archive(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        missing = {"t1", "affine", "gm", "wm", "mask"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not an MNI archive (missing {sorted(missing)})")
        return {
            "t1": z["t1"].astype(np.float32),
            "affine": z["affine"].astype(np.float64),
            "gm": z["gm"].astype(np.float64),
            "wm": z["wm"].astype(np.float64),
            "mask": z["mask"].astype(bool),
        }


@functools.lru_cache(maxsize=1)
def mni_arrays() -> MNIArrays:
    """The arrays, from ``$SGILO_MNI_ARCHIVE`` when it is set, else from nilearn; loaded once per
    process."""
    archive = os.environ.get(ARCHIVE_ENV)
    arrays = _from_archive(archive) if archive else _from_nilearn()
    for a in arrays.values():
        a.setflags(write=False)
    return MNIArrays(**arrays)


def export_archive(path: str | Path) -> Path:
    """Write the arrays, read from nilearn, to the compressed ``.npz`` at ``path``; returns it.

    float32 for the maps is exact: every value of nilearn's float64 GM/WM maps is a float32
    number (checked here; a nilearn whose maps were not would raise).
    """
    arrays = _from_nilearn()
    for name in ("gm", "wm"):
        single = arrays[name].astype(np.float32)
        if not np.array_equal(single.astype(np.float64), arrays[name]):
            raise ValueError(f"nilearn's {name} map is not exact in float32")
        arrays[name] = single
    path = Path(path)
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sgilo.pipeline.data.mni_sources",
        description="Export nilearn's MNI152 arrays to an archive for machines without nilearn.",
    )
    parser.add_argument("out", type=Path, help="the .npz to write")
    args = parser.parse_args(argv)
    path = export_archive(args.out)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB; use it with {ARCHIVE_ENV}={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
