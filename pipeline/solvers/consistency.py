"""The final data-consistency step of the latent-space solvers: a model image made consistent
with the measurements, exactly (k-space replacement or CG on the regularised normal equations) or
as a sparse deviation from it (or from its low band: :mod:`sgilo.pipeline.solvers.trusted_band`),
and zeroed outside the coils' support."""

from __future__ import annotations

import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.fft import fft2c, ifft2c
from sgilo.pipeline.algorithms.conjugate_gradient import conjugate_gradient
from sgilo.pipeline.solvers.fit_config import MRIFitConfig
from sgilo.pipeline.solvers.sparse_deviation import resolve_dc_wavelet, sparse_deviation
from sgilo.pipeline.solvers.trusted_band import applies, low_band, resolve_band_lambda


def data_consistency(
    x: torch.Tensor,
    y: torch.Tensor,
    op: LinearOperator,
    *,
    weight: float = 1e-3,
    iterations: int = 50,
) -> torch.Tensor:
    """Make ``x`` (complex ``(B, H, W)``) consistent with the measurements ``y``.

    Single-coil Cartesian: exact k-space replacement, ``F x ← y`` where sampled. Otherwise
    (SENSE, non-Cartesian): ``iterations`` CG steps from ``x̂ = x`` on
    ``(A^H A + μ I) x = A^H y + μ x̂`` with ``μ = weight · ‖A^H A‖`` per slice
    (:meth:`sgilo.operators.base.LinearOperator.normal_norm`): 1 for the Cartesian operators
    (normalised maps, 0/1 mask), and for the non-Cartesian one, whose ``A^H A`` scales with the
    number of samples (no density compensation), its largest eigenvalue by the power iteration,
    so ``weight`` means the same for both. The CG is
    :func:`sgilo.pipeline.algorithms.conjugate_gradient.conjugate_gradient`.
    """
    mask = op.slice_masks(x.shape[0])
    if mask is not None and op.coil_maps is None:  # single-coil Cartesian
        mask = mask.to(y.real.dtype)
        k = fft2c(x)
        measured = y / mask.clamp_min(torch.finfo(mask.dtype).tiny)
        return ifft2c(torch.where(mask > 0, measured, k))
    # (A^H A + μ I) x = A^H y + μ x̂ by CG, started from x̂
    mu = weight * op.normal_norm(x.shape[0], x.dtype).to(x.device).view(-1, 1, 1)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return op.normal(v) + mu * v

    return conjugate_gradient(normal, op.A_adjoint(y) + mu * x, x, iterations=iterations)


def make_consistent(
    x: torch.Tensor,
    y: torch.Tensor,
    op: LinearOperator,
    config: MRIFitConfig,
    resolution: int | None = None,
) -> torch.Tensor:
    """The final step on a model image ``x`` (complex ``(B, H, W)``, units of ``y``): the sparse
    deviation ``x + ν`` (:func:`sgilo.pipeline.solvers.sparse_deviation.sparse_deviation`) when
    ``config.dc_wavelet`` resolves to λ > 0 (``"auto"`` always does), else exact data consistency
    (:func:`data_consistency` with ``config.dc_weight``, ``config.dc_iterations``). With the
    generator's ``resolution`` given, ``config.dc_band > 0`` and Cartesian data, the sparse
    deviation is taken from the low band of the model image (zeroed outside the coils'
    support, :func:`coil_support`, first) only, at the λ of
    :func:`sgilo.pipeline.solvers.trusted_band.resolve_band_lambda`
    (:mod:`sgilo.pipeline.solvers.trusted_band`)."""
    batch = x.shape[0]
    lam = resolve_dc_wavelet(config.dc_wavelet, op, batch)
    if not bool((lam > 0).all()):
        return data_consistency(x, y, op, weight=config.dc_weight, iterations=config.dc_iterations)
    if applies(config.dc_band, resolution, op, batch):
        support = coil_support(op)  # the model outside the coils' view must not leak inward
        inside = x if support is None else x * support.to(x.device)
        reference = low_band(inside, config.dc_band, int(resolution))
        lam = resolve_band_lambda(config.dc_wavelet, op, batch, y)
        return sparse_deviation(reference, y, op, lam)
    return sparse_deviation(x, y, op, lam)


def final_lambdas(
    op: LinearOperator,
    config: MRIFitConfig,
    batch: int,
    resolution: int | None,
    y: torch.Tensor | None = None,
) -> list[float]:
    """The relative λ per slice ``(B,)`` of :func:`make_consistent`'s step with these
    arguments and the measurements ``y`` (0: exact data consistency)."""
    lam = resolve_dc_wavelet(config.dc_wavelet, op, batch)
    if bool((lam > 0).all()) and applies(config.dc_band, resolution, op, batch):
        lam = resolve_band_lambda(config.dc_wavelet, op, batch, y)
    return [float(v) for v in lam]


def coil_support(op: LinearOperator) -> torch.Tensor | None:
    """Where the coil maps see the image, ``Σ_c |S_c|² > 0``: bool ``(H, W)`` or ``(B, H, W)``
    (``None`` for operators without maps). Outside it the measurements carry no information
    (ESPIRiT zeroes its maps outside the object), so a model image there is pure prior: a
    generator asked for a brain where a slice has almost none leaves one there that no amount
    of data consistency removes. SENSE reconstructions are 0 there; so are ours."""
    maps = op.coil_maps
    if maps is None:
        return None
    return maps.abs().pow(2).sum(dim=-3) > 0


def finish_model_image(
    x: torch.Tensor, y: torch.Tensor, op: LinearOperator, config: object, resolution: int | None
) -> torch.Tensor:
    """The final step of a latent solver on a model image ``x`` (complex ``(B, H, W)``, in the
    units of ``y``; :func:`sgilo.pipeline.solvers.problem.finish_image` after the scale): data
    consistency with ``y`` when the config asks for it (trusting the band of a generator of
    ``resolution`` that the config sets; ``None``: the whole model image), then 0 outside the
    coils' support."""
    out = x
    if getattr(config, "data_consistency", False):
        out = make_consistent(x, y, op, config, resolution)
    support = coil_support(op)
    if support is not None:
        out = out * support.to(out.device)
    return out.detach()
