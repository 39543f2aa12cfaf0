"""Image-quality metrics in the fastMRI conventions, on magnitude volumes.

All functions take a target ``gt`` and a reconstruction ``pred`` as real (magnitude) numpy arrays
of shape ``(slices, H, W)``; a single 2-D image ``(H, W)`` is treated as a one-slice volume. With
``x`` the target volume and ``x̂`` the reconstruction:

* ``nmse``  NMSE = ‖x̂ − x‖² / ‖x‖², Frobenius norms over the whole volume.
* ``psnr``  PSNR = 10 log10(R² / MSE), MSE = mean((x̂ − x)²) over the whole volume and
  ``R = max(x)`` (the target *volume* maximum) unless ``data_range`` is given. This is PSNR **per
  volume**: it is not the mean of per-slice PSNRs, which uses each slice's own maximum and MSE and
  can differ by several dB on volumes whose slices have different intensity ranges.
* ``ssim``  SSIM computed **per slice** with a 7×7 uniform window, K1 = 0.01, K2 = 0.03, sample
  covariances (N/(N−1), N = 49) and ``R = max(x)`` over the volume, then averaged over slices.
  Each slice's SSIM map is averaged after cropping a 3-pixel border (scikit-image's convention).

Inputs are validated: shapes must match, values must be real and finite, arrays non-empty, and NMSE
and PSNR need a target that is not identically zero.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["evaluate", "nmse", "psnr", "ssim"]

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_volume(name: str, x: ArrayLike) -> np.ndarray:
    """Check one input and return it as float64, shape (slices, H, W)."""
    arr = np.asarray(x)
    if np.iscomplexobj(arr):
        raise ValueError(
            f"{name}: expected real magnitude values (take np.abs first), "
            f"received dtype {arr.dtype}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name}: expected a real numeric array, received dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise ValueError(
            f"{name}: expected shape (slices, H, W) or (H, W), received shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, received shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name}: expected finite values, received {bad} NaN/inf entries")
    return arr


def _pair(gt: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate both inputs and check that their shapes agree."""
    g = _as_volume("gt", gt)
    p = _as_volume("pred", pred)
    if g.shape != p.shape:
        raise ValueError(
            f"shape mismatch: expected pred of the target's shape {np.shape(gt)}, "
            f"received {np.shape(pred)}"
        )
    return g, p


def _data_range(g: np.ndarray, data_range: float | None) -> float:
    """The peak value R: ``data_range`` if given, else the target volume maximum."""
    if data_range is None:
        r = float(g.max())
        if r <= 0.0:
            raise ValueError(
                f"data_range: expected a target with a positive maximum, received max {r}; "
                "pass data_range explicitly"
            )
        return r
    r = float(data_range)
    if not math.isfinite(r) or r <= 0.0:
        raise ValueError(f"data_range: expected a finite positive number, received {data_range}")
    return r


def _require_nonzero_target(g: np.ndarray) -> None:
    if not np.any(g):
        raise ValueError("gt: expected a target that is not all zero, received an all-zero array")


def nmse(gt: ArrayLike, pred: ArrayLike) -> float:
    """Normalised mean squared error over the volume.

    NMSE = ‖pred − gt‖² / ‖gt‖² (sums over all slices and pixels).

    Args:
        gt: real, (slices, H, W) or (H, W); target magnitude, not all zero.
        pred: real, same shape as ``gt``.

    Returns:
        NMSE ≥ 0 (0 for a perfect reconstruction).
    """
    g, p = _pair(gt, pred)
    _require_nonzero_target(g)
    return float(np.sum((p - g) ** 2) / np.sum(g**2))


def psnr(gt: ArrayLike, pred: ArrayLike, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, computed **per volume**.

    PSNR = 10 log10(R² / MSE), MSE = mean over all slices and pixels of (pred − gt)², and
    R = ``data_range`` or, by default, max(gt) over the whole volume. This is not the mean of
    per-slice PSNRs (each with its own slice maximum), which can differ by several dB.

    Args:
        gt: real, (slices, H, W) or (H, W); target magnitude, not all zero.
        pred: real, same shape as ``gt``.
        data_range: peak value R; default the target volume maximum.

    Returns:
        PSNR in dB; ``inf`` when pred equals gt.
    """
    g, p = _pair(gt, pred)
    _require_nonzero_target(g)
    r = _data_range(g, data_range)
    mse = float(np.mean((p - g) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(r * r / mse)


def ssim(gt: ArrayLike, pred: ArrayLike, data_range: float | None = None) -> float:
    """Structural similarity, computed per slice and averaged over slices.

    For each slice, with local means μ, variances σ² and covariance σ_xy taken over a 7×7 uniform
    window (sample statistics, factor N/(N−1) with N = 49):

        SSIM = (2 μ_x μ_y + C1)(2 σ_xy + C2) / ((μ_x² + μ_y² + C1)(σ_x² + σ_y² + C2)),

    C1 = (K1 R)², C2 = (K2 R)², K1 = 0.01, K2 = 0.03, R = ``data_range`` or max(gt) over the
    whole volume. The SSIM map of a slice is averaged after cropping a 3-pixel border, and the
    slice values are averaged (scikit-image's ``structural_similarity``, as fastMRI uses it).

    Args:
        gt: real, (slices, H, W) or (H, W) with H, W ≥ 7; target magnitude.
        pred: real, same shape as ``gt``.
        data_range: R; default the target volume maximum (must then be positive).

    Returns:
        Mean SSIM over slices, at most 1 (1 when pred equals gt).
    """
    from skimage.metrics import structural_similarity

    g, p = _pair(gt, pred)
    if min(g.shape[1:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim: expected slices of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, "
            f"received {g.shape[1]}×{g.shape[2]}"
        )
    r = _data_range(g, data_range)
    values = [
        structural_similarity(
            g_slice,
            p_slice,
            win_size=SSIM_WINDOW,
            gaussian_weights=False,
            data_range=r,
            K1=SSIM_K1,
            K2=SSIM_K2,
        )
        for g_slice, p_slice in zip(g, p, strict=True)
    ]
    return float(np.mean(values))


def evaluate(gt: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """NMSE, per-volume PSNR (dB) and slice-averaged SSIM, all with R = max(gt) of the volume.

    Args:
        gt: real, (slices, H, W) or (H, W); target magnitude, not all zero.
        pred: real, same shape as ``gt``.

    Returns:
        ``{"nmse": ..., "psnr": ..., "ssim": ...}``.
    """
    return {"nmse": nmse(gt, pred), "psnr": psnr(gt, pred), "ssim": ssim(gt, pred)}
