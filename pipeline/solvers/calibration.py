"""What a latent-space solver reads off the sampled k-space before fitting: the number of
measurements ``m`` per slice, and the phase carrier ``e^{iφ}`` of a 1-channel generator's magnitude
image, estimated in one of two ways:

- :func:`calibration_phase` (``"from-calibration"``): φ the phase of the image of the fully
  sampled centre columns (the calibration region). With a fastMRI 8× mask that region is 5 of 128
  columns, so φ is resolved to about ±2 cycles per field of view across the columns, and the
  blurred magnitude leaks into it; single-coil data have nothing better.
- :func:`sense_phase` (``"from-sense"``): φ the phase of a CG-SENSE reconstruction from *all* the
  measured samples, low-passed to ``|k_y|, |k_x| ≤ PHASE_CYCLES`` cycles per field of view. The
  coils unfold the aliasing of the outer columns, so the phase is resolved in both directions.
  On MNI 8-coil 8× training slices its magnitude-weighted error ``Σ m |c − c*| / Σ m`` against
  the true carrier ``c*`` is 0.14–0.16 instead of 0.33–0.36 (4×: 0.03–0.04 instead of 0.10), and
  ILO gains about 2 dB (docs/GENERATIVE_TUNING.md, "8-coil 8×: the phase carrier").
"""

from __future__ import annotations

import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.fft import fft2c, ifft2c
from sgilo.pipeline.solvers.classical import cg_sense

#: the low-pass of :func:`sense_phase`: spatial frequencies up to this many cycles per field of
#: view in each direction (chosen on MNI training slices; a physical smoothness, so it does not
#: scale with the matrix size)
PHASE_CYCLES = 12


def num_measurements(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """``m`` per slice ``(B,)`` in the real dtype and on the device of ``y``: sampled entries ×
    coils (Cartesian), else all of ``y``
    (:meth:`sgilo.operators.base.LinearOperator.num_measurements`), at least 1."""
    count = op.num_measurements(y.shape[0]).clamp_min(1)
    return count.to(dtype=y.real.dtype, device=y.device)


def unit_phasor(x: torch.Tensor) -> torch.Tensor:
    """``x / |x|`` elementwise, 1 where ``x = 0`` (same shape and dtype)."""
    mag = x.abs()
    return torch.where(mag > 0, x / mag.clamp_min(torch.finfo(mag.dtype).tiny), 1.0).to(x.dtype)


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
    return unit_phasor(low)


def low_pass(x: torch.Tensor, cycles: int) -> torch.Tensor:
    """``x`` (complex ``(B, H, W)``) with its centred spectrum kept where ``|k_y|, |k_x| ≤
    cycles`` (``k`` in cycles per field of view, DC at ``(H // 2, W // 2)``) and zeroed
    elsewhere."""
    h, w = x.shape[-2:]
    ky = (torch.arange(h, device=x.device) - h // 2).abs() <= cycles
    kx = (torch.arange(w, device=x.device) - w // 2).abs() <= cycles
    band = (ky[:, None] & kx[None, :]).to(x.real.dtype)
    return ifft2c(fft2c(x) * band)


def sense_phase(y: torch.Tensor, op: LinearOperator, cycles: int = PHASE_CYCLES) -> torch.Tensor:
    """``e^{iφ}`` ``(B, H, W)``, φ the phase of the CG-SENSE reconstruction of ``y``
    (:func:`sgilo.pipeline.solvers.classical.cg_sense`, its default iterations) low-passed by
    :func:`low_pass` to ``cycles`` cycles per field of view: ``c = L(x_SENSE) / |L(x_SENSE)|``.
    Needs coil maps (a SENSE operator, Cartesian or not); ``ValueError`` otherwise."""
    if op.coil_maps is None:
        raise ValueError("phase='from-sense' needs coil maps; use 'from-calibration'")
    x = cg_sense(y, op).image.to(y.dtype)
    return unit_phasor(low_pass(x, cycles))
