"""Real MR images that ship inside the pydicom wheel (no network, no download attempts).

pydicom bundles a few real MR DICOM files in ``pydicom/data/test_files`` — ``MR_small.dcm``
(64×64, int16) in several transfer syntaxes, ``examples_overlay.dcm`` (300×484) and 16×16
thumbnails under ``dicomdirtests/``. Other test files (``MR2_*``, ``emri_small*``) live in the
``pydicom-data`` repository and are fetched on demand; ``get_testdata_files("MR*")`` tries those
downloads and warns when they fail. This module never does: it lists the bundled directory itself
and keeps the files whose ``Modality`` is ``"MR"``, that carry pixel data, and whose pixels decode
with the codecs installed here (``MR_small_jpeg_ls_lossless.dcm`` needs a JPEG-LS plugin and the
truncated example cannot decode, so both are skipped).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

__all__ = ["bundled_test_files_dir", "dicom_pixels", "mr_example_paths", "mr_small"]


def bundled_test_files_dir() -> Path:
    """pydicom's bundled ``test_files`` directory (located via MR_small.dcm, never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small.dcm", download=False)
    if path is None:  # pragma: no cover - MR_small.dcm is part of every pydicom wheel
        raise FileNotFoundError("pydicom's bundled MR_small.dcm is missing from this install")
    return Path(str(path)).parent


def _decodable_mr(path: Path, min_size: int) -> bool:
    """True if ``path`` is an MR dataset whose pixel data decodes to an image ≥ min_size²."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return False
    if header.get("Modality") != "MR":
        return False
    try:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            return False
        pixels = ds.pixel_array
    except Exception:  # any missing codec or corrupt pixel data: not a usable example
        return False
    return pixels.ndim >= 2 and min(pixels.shape[-2:]) >= min_size


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


def dicom_pixels(path: str | Path) -> np.ndarray:
    """Pixels of a single-frame DICOM file in physical units.

    out = RescaleSlope · stored + RescaleIntercept (slope 1, intercept 0 when the tags are absent).

    Args:
        path: a DICOM file.

    Returns:
        float32, (H, W).
    """
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    if stored.ndim != 2:
        raise ValueError(f"{path}: expected a single-frame (H, W) image, received {stored.shape}")
    slope = float(ds.get("RescaleSlope") or 1.0)
    intercept = float(ds.get("RescaleIntercept") or 0.0)
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def mr_small() -> np.ndarray:
    """``MR_small.dcm`` (a real 64×64 MR slice) with rescale slope/intercept applied.

    Returns:
        float32, (64, 64).
    """
    return dicom_pixels(bundled_test_files_dir() / "MR_small.dcm")
