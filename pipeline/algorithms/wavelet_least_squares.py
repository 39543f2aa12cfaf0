"""ℓ1-wavelet regularised least squares by FISTA with cycle spinning, batched over slices.

For every batch element ``b`` (its own ``λ_b`` and step):

    x_b = argmin_x ½‖A x − y_b‖² + λ_b ‖Ψ x‖₁,

``Ψ`` the orthogonal wavelet transform of :mod:`sgilo.pipeline.algorithms.wavelet`, by FISTA
(:mod:`sgilo.pipeline.algorithms.fista`) with the step ``t_b = 1/L_b``, ``L_b`` the largest
eigenvalue of ``AᴴA`` from the power iteration, and the proximal step

    x ← S_k⁻¹ Ψᴴ soft_{t λ}(Ψ S_k v),

``S_k`` a circular shift of the image by ``s_k`` pixels (cycle spinning; ``s_k = (0, 0)`` gives
the plain iteration, sigpy's ``L1WaveletRecon``). ``Ψᴴ soft(Ψ ·)``
(:meth:`~sgilo.pipeline.algorithms.wavelet.Wavelet2D.shrink`) is the shrinkage sigpy's app uses;
it is the exact proximal map only for a square orthogonal ``Ψ``, which the zero-extended
transform is not at the image border. The shifts are given, the same for every batch element, so
an image does not depend on the batch it is in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.algorithms.fista import fista
from sgilo.pipeline.algorithms.power_iteration import DEFAULT_ITERATIONS, power_iteration
from sgilo.pipeline.algorithms.wavelet import DEFAULT_WAVELET, Wavelet2D


def _per_element(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` → ``(B, 1, …)`` broadcasting against ``like`` ``(B, …)``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def wavelet_l1_least_squares(
    y: torch.Tensor,
    op: LinearOperator,
    lam: torch.Tensor | float,
    x0: torch.Tensor,
    iterations: int,
    *,
    start: torch.Tensor,
    shifts: Sequence[tuple[int, int]] | None = None,
    wavelet: str = DEFAULT_WAVELET,
    power_iterations: int = DEFAULT_ITERATIONS,
    on_iteration: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``x_K`` of the module docstring, in the dtype of ``x0``.

    Args:
        y: complex ``(B, *op.oshape)``, the measurements.
        op: the forward model ``A`` on complex ``(B, H, W)`` (``op.residual_gradient``,
            ``op.normal``).
        lam: ``λ ≥ 0``, a number or ``(B,)``.
        x0: the start, complex ``(B, H, W)``.
        iterations: FISTA iterations ``K``.
        start: the start of the power iteration for ``L``, ``(B, H, W)``.
        shifts: ``s_k`` for ``k = 1 … K`` (at least ``K`` pairs), or ``None`` for no shifts.
        wavelet: an orthogonal wavelet's PyWavelets name.
        power_iterations: steps of the power iteration.
        on_iteration: called with ``k`` (1-based) after the proximal step of iteration ``k``.
    """
    if shifts is not None and len(shifts) < iterations:
        raise ValueError(f"need {iterations} shifts, got {len(shifts)}")
    with torch.no_grad():
        y = y.to(x0.dtype)
        b = x0.shape[0]
        real = x0.real.dtype
        lam_b = torch.as_tensor(lam, dtype=real, device=x0.device).expand(b)
        lipschitz = power_iteration(op.normal, start.to(x0), power_iterations)
        step = 1.0 / lipschitz.to(real).clamp_min(1e-12)
        psi = Wavelet2D(tuple(x0.shape[-2:]), name=wavelet)
        k = 0

        gradient = op.residual_gradient(y)  # z ↦ Aᴴ(A z − y)

        def prox(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal k
            s = (0, 0) if shifts is None else (int(shifts[k][0]), int(shifts[k][1]))
            k += 1
            level = t.reshape(-1) * lam_b
            out = psi.shrink(torch.roll(v, s, dims=(-2, -1)) if any(s) else v, level)
            out = torch.roll(out, (-s[0], -s[1]), dims=(-2, -1)) if any(s) else out
            if on_iteration:
                on_iteration(k)
            return out

        return fista(gradient, prox, _per_element(step, x0), x0, iterations)
