"""One entry point for every input `sgilo reconstruct` accepts: detect the format, read it, turn
image inputs into k-space, and undersample retrospectively when asked.

Formats (decided by :func:`sgilo.pipeline.io.formats.detect_format`, the one format sniffer):

- ``fastmri``: :func:`sgilo.pipeline.io.fastmri.read_fastmri` (an HDF5 file that is neither
  fastMRI nor ISMRMRD, and a ``.h5`` file that is not HDF5, are reported by that reader);
- ``ismrmrd``: :func:`sgilo.pipeline.io.ismrmrd.read_ismrmrd_volumes` (one study per volume:
  contrast, phase, repetition, set);
- ``dicom``: :func:`sgilo.pipeline.io.dicom.read_dicom` (a folder with several series gives one
  study each);
- ``nifti``: :func:`sgilo.pipeline.io.nifti.read_nifti`.

Image inputs become single-coil, fully sampled k-space by a centred orthonormal FFT of each
slice (:func:`sgilo.operators.fft.fft2c`); the image itself is kept as the study's ``target`` (so
metrics are computed) and the image record as ``image_source`` (so exports keep its geometry).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sgilo.operators.fft import fft2c
from sgilo.operators.masks import Seed
from sgilo.pipeline.io.formats import FORMATS, IMAGE_FORMATS, detect_format
from sgilo.pipeline.io.limits import shown_name
from sgilo.pipeline.io.types import InputError, KSpaceStudy


def _error(path: Path, what: str) -> InputError:
    return InputError(f"{shown_name(path)}: {' '.join(what.split())}")


def image_study(name: str, source: Path, image: np.ndarray, record: object) -> KSpaceStudy:
    """A fully sampled single-coil study from real images ``(slices, H, W)``: k-space
    ``fft2c(image)`` complex64 ``(slices, 1, H, W)``, ``target`` the image (float32),
    ``image_source`` the image record."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    kspace = fft2c(torch.from_numpy(image).to(torch.complex64)).numpy()
    return KSpaceStudy(
        name=name,
        source=source,
        kspace=np.ascontiguousarray(kspace[:, None], dtype=np.complex64),
        multicoil=False,
        target=image,
        image_source=record,  # type: ignore[arg-type]
    )


def read_studies(path: str | os.PathLike[str], fmt: str | None = None) -> list[KSpaceStudy]:
    """Read an input as k-space studies (image inputs fully sampled), in its own format or
    ``fmt`` if given. Raises :class:`InputError` (one line, naming the file)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt == "fastmri":
        from sgilo.pipeline.io.fastmri import read_fastmri

        return [read_fastmri(path)]
    if fmt == "ismrmrd":
        from sgilo.pipeline.io.ismrmrd import read_ismrmrd_volumes

        return read_ismrmrd_volumes(path)
    if fmt == "nifti":
        from sgilo.pipeline.io.nifti import read_nifti

        volume = read_nifti(path)
        return [image_study(volume.name, path, volume.data, volume)]
    if fmt == "dicom":
        from sgilo.pipeline.io.dicom import read_dicom

        return [image_study(s.name, path, s.data, s) for s in read_dicom(path)]
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def read_input(
    path: str | os.PathLike[str],
    *,
    acceleration: float | None = None,
    center_fraction: float | None = None,
    seed: Seed | None = None,
    mask_kind: str = "random",
) -> list[KSpaceStudy]:
    """Read an input as studies ready to reconstruct: with ``acceleration`` and
    ``center_fraction`` each study is undersampled retrospectively
    (:func:`sgilo.pipeline.io.fastmri.retrospective_undersample`, seeded from the file name when
    ``seed`` is None); image inputs need them.

    Raises:
        InputError: a bad input; an image input without ``acceleration``/``center_fraction``;
            ``acceleration`` without ``center_fraction``; undersampling an undersampled input.
    """
    from sgilo.pipeline.io.fastmri import retrospective_undersample

    path = Path(path)
    if (acceleration is None) != (center_fraction is None):
        raise _error(path, "--acceleration and --center-fraction go together")
    fmt = detect_format(path)
    if fmt in IMAGE_FORMATS and acceleration is None:
        raise _error(
            path,
            f"an image input ({fmt}) is undersampled retrospectively: give --acceleration and "
            "--center-fraction",
        )
    studies = read_studies(path, fmt)
    if acceleration is None:
        return studies
    return [
        retrospective_undersample(s, acceleration, center_fraction, seed, mask_kind)
        for s in studies
    ]
