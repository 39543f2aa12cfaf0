"""ESPIRiT on objects cut by the readout edges: the tuning measurement behind
:func:`sgilo.pipeline.espirit.readout_padding`.

Tuning images (none is scored by a benchmark):

- MNI **training** axial slices 5 and 40 (inside the field of view);
- MNI training axial slices 40 and 60 cropped to their central 70 % and 65 % and resized back, so
  that the head is cut by every edge (a field of view tighter than the head);
- axial slices 6 and 18 of nibabel's ``anatomical.nii`` (a head with skull that fills the field
  of view; the OOD suite uses slice 12 of the same volume);
- the abdomen-like phantom with texture seed 7 (the suite uses seed 0).

For 8 birdcage coils at 4× and 8× (fastMRI random masks, 30 dB SNR, seed 3) it reconstructs each
slice with CG-SENSE (:func:`sgilo.pipeline.solvers.classical.cg_sense`, defaults) using the true
maps and ESPIRiT maps estimated without readout padding, with it, and with the automatic choice,
and records PSNR against the magnitude and the edge statistic of
:func:`sgilo.pipeline.espirit.readout_padding`.

    python -m sgilo.pipeline.research.espirit_edges --out docs/espirit_edges.json   # ~1 min
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MAPS = ("true", "no padding", "padding", "auto")


def _crop_centre(image: np.ndarray, fraction: float) -> np.ndarray:
    h, w = image.shape
    ch, cw = round(h * fraction), round(w * fraction)
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top : top + ch, left : left + cw]


def tuning_images(size: int = 128) -> tuple[np.ndarray, list[str]]:
    """The tuning set of the module docstring: float32 ``(7, size, size)`` and a name each."""
    from sgilo.pipeline.data import mni, ood
    from sgilo.pipeline.data.training import prepare_image
    from sgilo.pipeline.io.nifti import read_nifti_volumes

    train = mni.mni_slices("train", size)
    images, names = [train[5], train[40]], ["train-axial-5", "train-axial-40"]
    for k, fraction in ((40, 0.7), (60, 0.65)):
        images.append(prepare_image(_crop_centre(train[k], fraction), size))
        names.append(f"train-axial-{k}-cut-{fraction:g}")
    (volume,) = read_nifti_volumes(ood.nibabel_data_dir() / "anatomical.nii")[:1]
    for k in (6, 18):
        images.append(prepare_image(np.clip(volume.data[k].astype(np.float64), 0, None), size))
        names.append(f"anatomical-axial-{k}")
    images.append(prepare_image(ood.body_phantom(0, seed=7), size))
    names.append("abdomen-seed7")
    return np.stack(images).astype(np.float32), names


def measure(size: int = 128, snr_db: float = 30.0, seed: int = 3) -> list[dict]:
    """One row per setting and tuning slice: CG-SENSE PSNR with each kind of maps in
    :data:`MAPS`, and whether the automatic rule padded."""
    import torch

    from sgilo.pipeline.espirit import calibration_region, espirit, readout_padding
    from sgilo.pipeline.experiment import DEFAULT_SETTINGS, make_operator
    from sgilo.pipeline.metrics import psnr
    from sgilo.pipeline.solvers.classical import cg_sense

    images, names = tuning_images(size)
    rows = []
    for setting in (s for s in DEFAULT_SETTINGS if s.coils):
        for image, name in zip(images, names, strict=True):
            acq = setting.simulate(image[None], snr_db=snr_db, seed=seed)
            calib = calibration_region(acq.mask, acq.kspace.shape[-2:])
            kspace = acq.kspace[0]
            choices = {"true": acq.maps}
            for label, pad in (("no padding", False), ("padding", True), ("auto", None)):
                choices[label] = espirit(kspace, calib, pad_readout=pad)
            row = {"setting": setting.label, "image": name}
            for label, maps in choices.items():
                y, op = make_operator(acq, maps=torch.from_numpy(np.asarray(maps, np.complex64)))
                row[label] = psnr(acq.target[0], cg_sense(y, op).image.abs().numpy()[0])
            row["padded"] = readout_padding(kspace, calib[1])
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table, with the mean per column."""
    lines = [
        "| setting | image | " + " | ".join(f"{m} maps" for m in MAPS) + " | auto padded |",
        "|---|---|" + "---:|" * len(MAPS) + "---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r[m]:.2f}" for m in MAPS)
        lines.append(f"| {r['setting']} | {r['image']} | {cells} | {r['padded']} |")
    means = " | ".join(f"{np.mean([r[m] for r in rows]):.2f}" for m in MAPS)
    lines.append(f"| mean | | {means} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = measure()
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
