"""Conjugate gradients for a batch of Hermitian positive (semi)definite systems ``N x = b``.

Hestenes–Stiefel, per batch element (every inner product is per slice, so the slices of a batch
run as independent systems in one loop):

    r₀ = b − N x₀,   p₀ = r₀
    α_k = ⟨r_k, r_k⟩ / ⟨p_k, N p_k⟩
    x_{k+1} = x_k + α_k p_k,        r_{k+1} = r_k − α_k N p_k
    β_k = ⟨r_{k+1}, r_{k+1}⟩ / ⟨r_k, r_k⟩,        p_{k+1} = r_{k+1} + β_k p_k

with ``⟨a, b⟩ = Re Σ conj(a) b`` over all but the batch axis (:func:`batch_dot`). A fixed number of
iterations is the usual regulariser of CG-SENSE; with a ``tolerance`` a slice whose residual has
fallen to ``tolerance · ‖r₀‖`` stops (α = β = 0 from then on) while the others go on, and the loop
ends when every slice has stopped. Denominators are clamped at 1e-30, so a slice that has
converged exactly stays put instead of dividing 0 by 0.

Reference: M. R. Hestenes and E. Stiefel, "Methods of conjugate gradients for solving linear
systems", J. Res. Natl. Bur. Stand. 49 (1952) 409–436.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: the clamp of CG's denominators ⟨p, N p⟩ and ⟨r, r⟩
TINY = 1e-30


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-slice real inner product ``Re ⟨a, b⟩`` over all but the first axis: ``(B,)``."""
    return (a.conj() * b).real.reshape(a.shape[0], -1).sum(dim=1)


def _per_slice(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` → broadcastable against ``like`` ``(B, …)``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    iterations: int,
    tolerance: float | None = None,
    on_iteration: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Solve ``N x = b`` per batch element by the iteration of the module docstring.

    Args:
        normal: ``v ↦ N v``, Hermitian positive (semi)definite per batch element, ``(B, *shape)``
            to ``(B, *shape)`` (e.g. ``lambda v: op.normal(v) + μ v``).
        b: the right-hand side, real or complex ``(B, *shape)``.
        x0: the start (``None``: zero, and then ``r₀ = b`` without applying ``N``).
        iterations: the most iterations ``K``.
        tolerance: ``None`` runs all ``K`` iterations; else a slice stops once
            ``‖r_k‖ ≤ tolerance · ‖r₀‖`` (and the loop once all have).
        on_iteration: called after iteration ``k`` (1-based) with ``⟨r_k, r_k⟩`` ``(B,)``.

    Returns:
        ``x_K``, same shape and dtype as ``b``.
    """
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        x = x0.clone()
        r = b - normal(x)
    p = r.clone()
    rs = batch_dot(r, r)
    floor = None if tolerance is None else tolerance**2 * rs
    for k in range(iterations):
        active = None if floor is None else rs > floor
        if active is not None and not bool(active.any()):
            break
        ap = normal(p)
        alpha = rs / batch_dot(p, ap).clamp_min(TINY)
        if active is not None:
            alpha = torch.where(active, alpha, torch.zeros_like(rs))
        x = x + _per_slice(alpha, x) * p
        r = r - _per_slice(alpha, r) * ap
        rs_new = batch_dot(r, r)
        beta = rs_new / rs.clamp_min(TINY)
        if active is not None:
            beta = torch.where(active, beta, torch.zeros_like(rs))
        p = r + _per_slice(beta, p) * p
        rs = rs_new
        if on_iteration is not None:
            on_iteration(k + 1, rs)
    return x
