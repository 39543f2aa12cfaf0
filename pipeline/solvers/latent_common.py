"""MRI glue shared by the latent-space solvers (CSGM, ILO): generator freezing, measurement
counts, the phase estimated from the calibration region, and the final data-consistency step."""

from __future__ import annotations

import torch

from operators.base import LinearOperator
from operators.fft import fft2c, ifft2c
from operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI
from pipeline.solvers.classical import batch_dot


def latent_dtype_device(generator: object, y: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    if isinstance(generator, torch.nn.Module):
        for p in generator.parameters():
            return p.dtype, p.device
    return y.real.dtype, y.device


def freeze(generator: object) -> list[tuple[torch.nn.Parameter, bool]]:
    if not isinstance(generator, torch.nn.Module):
        return []
    flags = [(p, p.requires_grad) for p in generator.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    return flags


def unfreeze(generator: object, flags: list[tuple[torch.nn.Parameter, bool]]) -> None:
    for p, flag in flags:
        p.requires_grad_(flag)


def cartesian_mask(op: LinearOperator, batch: int) -> torch.Tensor:
    """The real ``(B, H, W)`` sampling mask of a Cartesian operator."""
    mask = op.mask if isinstance(op, SingleCoilMRI) else op.mask[..., 0, :, :]
    return mask.expand(batch, *op.ishape)


def num_measurements(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """``m`` per slice ``(B,)``: sampled entries × coils (Cartesian), else all of ``y``."""
    batch = y.shape[0]
    if isinstance(op, NonCartesianMRI):
        return torch.full((batch,), float(y[0].numel()), dtype=y.real.dtype, device=y.device)
    coils = op.num_coils if isinstance(op, MultiCoilMRI) else 1
    count = (cartesian_mask(op, batch) > 0).reshape(batch, -1).sum(dim=1) * coils
    return count.clamp_min(1).to(y.real.dtype)


def centre_columns(mask: torch.Tensor) -> torch.Tensor:
    """``(W,)`` 0/1: the contiguous run of fully sampled columns around the centre ``W // 2``."""
    full = (mask > 0).all(dim=0)
    width = full.shape[0]
    window = torch.zeros_like(full)
    centre = width // 2
    if not bool(full[centre]):
        return window
    lo = hi = centre
    while lo > 0 and bool(full[lo - 1]):
        lo -= 1
    while hi < width - 1 and bool(full[hi + 1]):
        hi += 1
    window[lo : hi + 1] = True
    return window


def calibration_phase(y: torch.Tensor, op: LinearOperator) -> torch.Tensor:
    """``e^{iφ}`` ``(B, H, W)``, φ the phase of the image of the fully sampled centre columns
    (coils combined with the conjugate maps for SENSE)."""
    if isinstance(op, NonCartesianMRI):
        raise ValueError(
            "phase='from-calibration' needs a Cartesian operator; use phase='none' for "
            "non-Cartesian data"
        )
    batch = y.shape[0]
    mask = cartesian_mask(op, batch)
    windows = torch.stack([centre_columns(mask[b]) for b in range(batch)])  # (B, W)
    if not bool(windows.any(dim=1).all()):
        raise ValueError(
            "phase='from-calibration' needs fully sampled centre columns in every slice's mask"
        )
    window = windows[:, None, :].to(y.real.dtype)  # (B, 1, W) → broadcasts over rows
    if isinstance(op, MultiCoilMRI):
        coil_images = ifft2c(window[:, None] * y)
        maps = op.maps.to(y.dtype)
        low = (maps.conj() * coil_images).sum(dim=1)
    else:
        low = ifft2c(window * y)
    mag = low.abs()
    return torch.where(mag > 0, low / mag.clamp_min(torch.finfo(mag.dtype).tiny), 1.0).to(y.dtype)


def data_consistency(
    x: torch.Tensor,
    y: torch.Tensor,
    op: LinearOperator,
    *,
    weight: float = 1e-2,
    iterations: int = 10,
) -> torch.Tensor:
    """Make ``x`` (complex ``(B, H, W)``) consistent with the measurements ``y``.

    Single-coil Cartesian: exact k-space replacement, ``F x ← y`` where sampled. Otherwise
    (SENSE, non-Cartesian): ``iterations`` CG steps from ``x̂ = x`` on
    ``(A^H A + μ I) x = A^H y + μ x̂`` with ``μ = weight``.
    """
    if isinstance(op, SingleCoilMRI):
        mask = cartesian_mask(op, x.shape[0]).to(y.real.dtype)
        k = fft2c(x)
        measured = y / mask.clamp_min(torch.finfo(mask.dtype).tiny)
        return ifft2c(torch.where(mask > 0, measured, k))
    # (A^H A + μ I) x = A^H y + μ x̂ by CG, started from x̂
    mu = weight
    b = op.A_adjoint(y) + mu * x
    sol = x.clone()
    r = b - (op.normal(sol) + mu * sol)
    p = r.clone()
    rs = batch_dot(r, r)
    for _ in range(iterations):
        ap = op.normal(p) + mu * p
        alpha = rs / batch_dot(p, ap).clamp_min(1e-30)
        sol = sol + alpha.view(-1, 1, 1) * p
        r = r - alpha.view(-1, 1, 1) * ap
        rs_new = batch_dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)).view(-1, 1, 1) * p
        rs = rs_new
    return sol
