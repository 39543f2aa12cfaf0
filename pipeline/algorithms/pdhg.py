"""The primal–dual hybrid gradient method (PDHG) of Chambolle and Pock, batched.

The problem, for a linear ``K`` (possibly stacked, ``K = [K₁; K₂; …]``), an offset ``b`` and convex
``f``, ``g`` with proximal maps:

    min_x  f(K x − b) + g(x)   =   min_x max_u  ⟨K x − b, u⟩ − f*(u) + g(x).

With steps ``σ, τ > 0`` (``σ τ ‖K‖² ≤ 1``), ``θ ∈ [0, 1]`` and a start ``x₀``, ``u₀``,
``x̄₀ = x₀``:

    u_{k+1} = prox_{σ f*}(u_k + σ (K x̄_k − b))
    x_{k+1} = prox_{τ g}(x_k − τ Kᴴ u_{k+1})
    x̄_{k+1} = (1 + θ) x_{k+1} − θ x_k

The dual is a tuple of blocks, one per row block ``K_i`` (a data term, a regulariser, …), all
stepped with the same ``σ``; ``prox_{σ f*}`` sees the whole tuple, so a block may be separable or
not. ``σ`` and ``τ`` are numbers, or ``(B,)`` tensors with one step per batch element (each slice
its own ``‖K‖``). ``θ = 1`` is the method of the reference (sigpy's ``PrimalDualHybridGradient``
with its defaults); it converges as ``O(1/k)`` in the primal–dual gap.

The package's one PDHG: :mod:`sgilo.pipeline.algorithms.total_variation` builds its two TV solvers
on it (the natural-image baseline and the classical MRI reconstruction ``tv``).

Reference: A. Chambolle and T. Pock, "A first-order primal-dual algorithm for convex problems with
applications to imaging", J. Math. Imaging Vis. 40 (2011) 120–145.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Dual = tuple[torch.Tensor, ...]
#: a step: a number, or a ``(B,)`` tensor (one per batch element)
Step = float | torch.Tensor


def per_slice(step: Step, like: torch.Tensor) -> Step:
    """``step`` broadcastable against ``like`` ``(B, …)``: a number as it is, a ``(B,)`` tensor
    viewed as ``(B, 1, …, 1)``."""
    if isinstance(step, torch.Tensor):
        return step.view(-1, *([1] * (like.ndim - 1)))
    return step


def pdhg(
    residual: Callable[[torch.Tensor], Dual],
    adjoint: Callable[[Dual], torch.Tensor],
    prox_dual: Callable[[Dual, Step], Dual],
    prox_primal: Callable[[torch.Tensor, Step], torch.Tensor],
    x0: torch.Tensor,
    u0: Dual,
    *,
    sigma: Step,
    tau: Step,
    iterations: int,
    theta: float = 1.0,
    on_iteration: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """``x_K`` of the module docstring's iteration.

    Args:
        residual: ``x ↦ K x − b``, ``(B, *shape)`` to a tuple of blocks ``(B, …)`` (the offset
            lives here, so a prox of ``f*`` need not know it).
        adjoint: ``u ↦ Kᴴ u = Σ_i K_iᴴ u_i``, the tuple to ``(B, *shape)``.
        prox_dual: ``(v, σ) ↦ prox_{σ f*}(v)`` on the tuple.
        prox_primal: ``(v, τ) ↦ prox_{τ g}(v)`` (``lambda v, t: v`` for ``g = 0``).
        x0: the primal start, ``(B, *shape)`` (not modified).
        u0: the dual start, one tensor per block of ``residual``.
        sigma, tau: the steps (:data:`Step`), ``σ τ ‖K‖² ≤ 1`` per batch element.
        iterations: ``K`` ≥ 0.
        theta: the extrapolation ``θ``.
        on_iteration: called after iteration ``k`` (1-based) with ``x_k``.

    Returns:
        ``x_K``, same shape and dtype as ``x0``.
    """
    x = x_bar = x0
    u = u0
    tau_x = per_slice(tau, x0)
    for k in range(iterations):
        blocks = zip(u, residual(x_bar), strict=True)
        u = prox_dual(tuple(ui + per_slice(sigma, ri) * ri for ui, ri in blocks), sigma)
        x_new = prox_primal(x - tau_x * adjoint(u), tau)
        x_bar = (1 + theta) * x_new - theta * x
        x = x_new
        if on_iteration is not None:
            on_iteration(k + 1, x)
    return x
