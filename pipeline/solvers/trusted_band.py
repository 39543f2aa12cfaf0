"""The band of a generator's image that the final data-consistency step trusts.

A generator's model image ``x̂`` is right where its prior knows the anatomy, and that is its
coarse structure: on unseen subjects its k-space error over the *unmeasured* phase-encoding
columns is below the classical reconstructions' next to the calibration region and above them
from about 8–10 cycles per field of view out, where its texture is drawn, not measured
(docs/GENERATIVE.md, "The trusted band"). So the final step keeps only the model image's low
band as the reference of its sparse deviation,

    x = argmin_x ½‖A x − y‖² + λ ‖Ψ (x − L x̂)‖₁ ,      L = F⁻¹ diag(w) F ,

with ``w`` a weight per phase-encoding column ``k`` (the last axis, the one a Cartesian mask
undersamples; centred k-space, ``k`` = column index − ``W // 2``, i.e. cycles per field of
view):

    w(k) = clip((k₁ − |k|) / (k₁ − k₀), 0, 1),   k₀ = b · (R/2) · W/S,  k₁ = 3 k₀,

full trust up to ``k₀``, none beyond ``k₁``, linear between. ``b`` (``dc_band``) is a fraction
of the generator's Nyquist frequency ``R/2`` (a resolution-``R`` prior knows at most ``R/2``
cycles across the square it covers, the central ``S × S`` of the ``(H, W)`` grid, ``S =
min(H, W)``: :mod:`sgilo.pipeline.solvers.resample`; ``W/S`` converts to cycles across the
grid's width). Beyond ``k₁`` the output is the ℓ1-wavelet reconstruction of what the low band
leaves of the data, which is why the step's ``λ`` is then the classical ℓ1-wavelet's default
(:func:`resolve_band_lambda`). ``b = 0`` turns it off: the whole model image is the reference,
as in the sparse-deviation step of :mod:`sgilo.pipeline.solvers.sparse_deviation`.

Readout frequencies are not weighted (a column of a Cartesian column mask is measured along its
whole length). Other sampling (2-D masks, non-Cartesian trajectories) has no phase-encoding axis
to weight: the step keeps the whole model image there, as it does with exact data consistency
(``dc_wavelet=0``) and where the generator's resolution is not known.
"""

from __future__ import annotations

import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.fft import fft2c, ifft2c
from sgilo.pipeline.solvers.classical import default_lambda, tuned_lambda

#: ``b``: full trust up to this fraction of the generator's Nyquist frequency, none beyond 3×
#: it (6.4 and 19.2 cycles per field of view for a 128² prior on its own grid); chosen on the
#: tuning set of :mod:`sgilo.pipeline.research.auto_margin` (docs/GENERATIVE.md)
DEFAULT_DC_BAND = 0.1
#: ``k₁ / k₀``
BAND_TAPER = 3.0


def band_edges(band: float, resolution: int, grid: tuple[int, int]) -> tuple[float, float]:
    """``(k₀, k₁)`` of the module docstring in columns of the ``(H, W)`` ``grid`` for a
    generator of ``resolution`` ``R``."""
    h, w = (int(v) for v in grid)
    k0 = band * resolution / 2 * w / min(h, w)
    return k0, BAND_TAPER * k0


def band_weights(
    band: float, resolution: int, grid: tuple[int, int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``w`` of the module docstring, float64 ``(W,)`` over the grid's columns (centred)."""
    k0, k1 = band_edges(band, resolution, grid)
    width = int(grid[1])
    k = (torch.arange(width, dtype=torch.float64, device=device) - width // 2).abs()
    return ((k1 - k) / (k1 - k0)).clamp(0.0, 1.0)


def low_band(x: torch.Tensor, band: float, resolution: int) -> torch.Tensor:
    """``L x`` for a complex ``x`` ``(B, H, W)``: its k-space columns weighted by
    :func:`band_weights`; same shape and dtype."""
    w = band_weights(band, resolution, tuple(x.shape[-2:]), x.device).to(x.real.dtype)
    return ifft2c(fft2c(x) * w)


def applies(band: float, resolution: int | None, op: LinearOperator, batch: int) -> bool:
    """Whether the final step uses the low band: ``band > 0``, the generator's ``resolution``
    known, and a Cartesian column mask (each column measured along its whole length or not at
    all; not a 2-D or non-Cartesian sampling pattern)."""
    if band <= 0 or resolution is None:
        return False
    mask = op.slice_masks(batch)
    return mask is not None and bool((mask.amax(dim=-2) == mask.amin(dim=-2)).all())


def resolve_band_lambda(
    setting: float | str, op: LinearOperator, batch: int, y: torch.Tensor | None = None
) -> torch.Tensor:
    """The ``(B,)`` float64 relative λ of the step around the low band: ``setting`` when it is
    a number, else (``"auto"``) the classical ℓ1-wavelet's default for the data's kind and each
    slice's sampled fraction, raised where the measurements ``y`` ``(B, *op.oshape)`` are
    noisier than the tuning's (:func:`sgilo.pipeline.solvers.classical.tuned_lambda`; without
    ``y``: :func:`sgilo.pipeline.solvers.classical.default_lambda`)."""
    if setting != "auto":
        return torch.full((batch,), float(setting), dtype=torch.float64)
    if y is None:
        return default_lambda("l1-wavelet", op, batch)
    return tuned_lambda("l1-wavelet", y, op)
