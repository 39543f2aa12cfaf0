"""Real MR images that ship inside the pydicom wheel (no network, no download attempts).

pydicom bundles a few real MR DICOM files in ``pydicom/data/test_files`` — ``MR_small.dcm``
(64×64, int16) in several transfer syntaxes, ``examples_overlay.dcm`` (300×484) and 16×16
thumbnails under ``dicomdirtests/``. Other test files (``MR2_*``, ``emri_small*``) live in the
``pydicom-data`` repository and are fetched on demand; ``get_testdata_files("MR*")`` tries those
downloads and warns when they fail. This module never does: it lists the bundled directory itself
and keeps the files that the project's DICOM reader :func:`sgilo.pipeline.io.dicom.read_dicom`
reads as one MR image (``Modality`` ``"MR"``, pixel data that decodes with the codecs installed
here: ``MR_small_jpeg_ls_lossless.dcm`` needs a JPEG-LS plugin and the truncated example cannot
decode, so both are skipped); pixels come from that reader too.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

from sgilo.pipeline.io.dicom import read_dicom
from sgilo.pipeline.io.types import InputError

__all__ = ["bundled_test_files_dir", "mr_example_paths", "mr_small"]


def bundled_test_files_dir() -> Path:
    """pydicom's bundled ``test_files`` directory (located via MR_small.dcm, never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small.dcm", download=False)
    if path is None:  # pragma: no cover - MR_small.dcm is part of every pydicom wheel
        raise FileNotFoundError("pydicom's bundled MR_small.dcm is missing from this install")
    return Path(str(path)).parent


def _decodable_mr(path: Path, min_size: int) -> bool:
    """True if :func:`sgilo.pipeline.io.dicom.read_dicom` reads ``path`` as one MR image of
    side ≥ min_size."""
    try:
        series = read_dicom(path)
    except InputError:  # not DICOM, not MR, no pixel data, a missing codec, corrupt
        return False
    return min(series[0].data.shape[-2:]) >= min_size


@functools.lru_cache(maxsize=8)
def _mr_paths(min_size: int) -> tuple[Path, ...]:
    root = bundled_test_files_dir()
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".py")
    with warnings.catch_warnings():
        # Reading odd test files emits pydicom UserWarnings (implicit VR found, excess padding).
        warnings.simplefilter("ignore")
        return tuple(p for p in candidates if _decodable_mr(p, min_size))


def mr_example_paths(min_size: int = 32) -> list[Path]:
    """Paths of pydicom's bundled real MR files that decode here, sorted.

    Args:
        min_size: smallest accepted image side; the default 32 drops the 16×16 thumbnails in
            ``dicomdirtests/`` (pass 1 to keep them).

    Returns:
        Existing local files only (MR_small.dcm in its decodable transfer syntaxes,
        examples_overlay.dcm, …).
    """
    return list(_mr_paths(int(min_size)))


def mr_small() -> np.ndarray:
    """``MR_small.dcm`` (a real 64×64 MR slice) as :func:`sgilo.pipeline.io.dicom.read_dicom`
    reads it: RescaleSlope · stored + RescaleIntercept.

    Returns:
        float32, (64, 64).
    """
    (series,) = read_dicom(bundled_test_files_dir() / "MR_small.dcm")
    return series.data[0]
