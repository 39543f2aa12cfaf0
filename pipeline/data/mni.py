"""nilearn's bundled MNI152 T1 template as 2-D axial slices, with a fixed train/validation split.

Source: ``nilearn.datasets.load_mni152_template(resolution=1)`` — a skull-stripped average of 152
subjects, 197×233×189 voxels at 1 mm, RAS+ affine (voxel (i, j, k) ↦ MNI (i − 98, j − 134,
k − 72) mm). It ships inside the nilearn wheel, so loading it needs no network.

Slices
    Axial slices ``vol[:, :, z]`` are shown in radiological convention: anterior at the top, the
    patient's right on the image's left, i.e. ``np.flipud(np.fliplr(vol[:, :, z].T))`` (233×197),
    then zero-padded to a centred 233×233 square, resized to ``size``×``size`` with
    ``skimage.transform.resize(..., anti_aliasing=True)`` and divided by the volume maximum, so
    values lie in [0, 1].

Split (fixed, by axial index z; MNI z = z − 72 mm)
    * Validation: two bands of 8 contiguous slices, 1 mm apart,
      z = 86…93 (MNI +14…+21 mm, through the bodies of the lateral ventricles, with basal ganglia
      and thalami) and z = 108…115 (MNI +36…+43 mm, above the ventricles: centrum semiovale and
      cortex).
    * Training: every axial slice that contains brain — more than 5 % of its 197×233 pixels
      non-zero, which is z = 12…148 — and lies at least 6 slices (6 mm) from every validation
      slice.

    **Validation slices are never used for training anything** (generators, score models,
    hyper-parameter fits): they are the held-out slices reconstructions are evaluated on, and the
    6 mm margin keeps near-duplicate neighbours of them out of the training set too.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "BRAIN_FRACTION",
    "BRAIN_Z",
    "MARGIN",
    "TRAINING_Z",
    "VALIDATION_BANDS",
    "VALIDATION_Z",
    "axial_display_slice",
    "brain_z_indices",
    "mni_slice_z",
    "mni_slices",
    "mni_volume",
    "pad_to_square",
]

Split = Literal["train", "validation"]

#: Validation bands as half-open ranges of axial indices z: lateral ventricles; centrum semiovale.
VALIDATION_BANDS: tuple[tuple[int, int], ...] = ((86, 94), (108, 116))
#: Minimum distance, in slices (= mm), between any training slice and any validation slice.
MARGIN = 6
#: A slice "contains brain" when more than this fraction of its pixels is non-zero.
BRAIN_FRACTION = 0.05
#: Axial indices whose slices contain brain (first, last inclusive), from ``brain_z_indices()``.
BRAIN_Z: tuple[int, int] = (12, 148)

VALIDATION_Z: tuple[int, ...] = tuple(z for lo, hi in VALIDATION_BANDS for z in range(lo, hi))
TRAINING_Z: tuple[int, ...] = tuple(
    z for z in range(BRAIN_Z[0], BRAIN_Z[1] + 1) if min(abs(z - v) for v in VALIDATION_Z) >= MARGIN
)


def _load() -> tuple[np.ndarray, np.ndarray]:
    from sgilo.pipeline.data.mni_sources import mni_arrays

    arrays = mni_arrays()
    return arrays.t1, arrays.affine


def mni_volume() -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 T1 template at 1 mm (loaded once per process, then cached).

    Returns:
        volume: float32, (197, 233, 189) indexed (x, y, z) in RAS+ order, values in [0, 1];
            read-only (it is the cached array).
        affine: float64, (4, 4); voxel index → MNI millimetres.
    """
    volume, affine = _load()
    return volume, affine.copy()


def brain_z_indices(min_fraction: float = BRAIN_FRACTION) -> tuple[int, ...]:
    """Axial indices z whose slice has more than ``min_fraction`` of its pixels non-zero."""
    volume, _ = _load()
    fraction = np.count_nonzero(volume, axis=(0, 1)) / (volume.shape[0] * volume.shape[1])
    return tuple(int(z) for z in np.flatnonzero(fraction > min_fraction))


def axial_display_slice(volume: np.ndarray, z: int) -> np.ndarray:
    """Axial slice z of an RAS+ volume in radiological display orientation.

    ``out = flipud(fliplr(volume[:, :, z].T))``: row 0 is the most anterior y, column 0 the most
    right-sided x (the patient's right on the image's left).

    Args:
        volume: real, (X, Y, Z) in RAS+ voxel order.
        z: axial index, 0 ≤ z < Z.

    Returns:
        (Y, X) view of the slice.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume: expected shape (X, Y, Z), received shape {volume.shape}")
    if not 0 <= z < volume.shape[2]:
        raise ValueError(f"z: expected 0 <= z < {volume.shape[2]}, received {z}")
    return np.flipud(np.fliplr(volume[:, :, z].T))


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Zero-pad a (H, W) image to (S, S), S = max(H, W), centred (odd extra pixel after)."""
    if image.ndim != 2:
        raise ValueError(f"image: expected shape (H, W), received shape {image.shape}")
    h, w = image.shape
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    return np.pad(image, ((top, s - h - top), (left, s - w - left)))


def mni_slice_z(split: Split) -> tuple[int, ...]:
    """The axial index z of each slice that ``mni_slices(split)`` returns, in the same order."""
    if split == "train":
        return TRAINING_Z
    if split == "validation":
        return VALIDATION_Z
    raise ValueError(f"split: expected 'train' or 'validation', received {split!r}")


def mni_slices(split: Split, size: int = 128) -> np.ndarray:
    """Axial MNI152 slices of one split, display-oriented, square, resized and scaled to [0, 1].

    slice_n = clip(resize(pad_to_square(axial_display_slice(vol, z_n)), (size, size)) / max(vol),
    0, 1) for z_n in ``mni_slice_z(split)``.

    Args:
        split: ``"train"`` (``TRAINING_Z``) or ``"validation"`` (``VALIDATION_Z``, held out).
        size: output side length in pixels (≥ 8).

    Returns:
        float32, (N, size, size) with N = len(mni_slice_z(split)).
    """
    from skimage.transform import resize

    zs = mni_slice_z(split)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size: expected an integer >= 8, received {size!r}")
    volume, _ = _load()
    peak = float(volume.max())
    out = np.empty((len(zs), size, size), dtype=np.float32)
    for n, z in enumerate(zs):
        square = pad_to_square(axial_display_slice(volume, z)).astype(np.float64)
        if square.shape != (size, size):
            square = resize(square, (size, size), anti_aliasing=True, preserve_range=True)
        out[n] = np.clip(square / peak, 0.0, 1.0)
    return out
