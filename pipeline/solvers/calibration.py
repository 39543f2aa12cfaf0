"""What a latent-space solver reads off the sampled k-space before fitting: the number of
measurements ``m`` per slice, the run of fully sampled centre columns (the calibration region) and
the phase ``e^{iφ}`` of the image of that region (the carrier of a 1-channel generator's
magnitude image)."""

from __future__ import annotations

import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.fft import ifft2c


def num_measurements(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """``m`` per slice ``(B,)`` in the real dtype and on the device of ``y``: sampled entries ×
    coils (Cartesian), else all of ``y``
    (:meth:`sgilo.operators.base.LinearOperator.num_measurements`), at least 1."""
    count = op.num_measurements(y.shape[0]).clamp_min(1)
    return count.to(dtype=y.real.dtype, device=y.device)


def calibration_phase(y: torch.Tensor, op: LinearOperator) -> torch.Tensor:
    """``e^{iφ}`` ``(B, H, W)``, φ the phase of the image of the fully sampled centre columns
    (:meth:`sgilo.operators.base.LinearOperator.calibration_region`; coils combined with the
    conjugate maps for SENSE)."""
    windows = op.calibration_region(y.shape[0])  # (B, W)
    if windows is None:
        raise ValueError(
            "phase='from-calibration' needs a Cartesian operator; use phase='none' for "
            "non-Cartesian data"
        )
    windows = windows.to(y.device)
    if not bool(windows.any(dim=1).all()):
        raise ValueError(
            "phase='from-calibration' needs fully sampled centre columns in every slice's mask"
        )
    window = windows[:, None, :].to(y.real.dtype)  # (B, 1, W) → broadcasts over rows
    if op.coil_maps is not None:
        coil_images = ifft2c(window[:, None] * y)
        maps = op.coil_maps.to(y.dtype)
        low = (maps.conj() * coil_images).sum(dim=1)
    else:
        low = ifft2c(window * y)
    mag = low.abs()
    return torch.where(mag > 0, low / mag.clamp_min(torch.finfo(mag.dtype).tiny), 1.0).to(y.dtype)
