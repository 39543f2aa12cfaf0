"""Total-variation regularised least squares: two problems, both solved by the package's one
primal–dual iteration (:func:`sgilo.pipeline.algorithms.pdhg.pdhg`, Chambolle–Pock).

**Natural images** (:func:`tv_least_squares`, the baseline of
:mod:`sgilo.pipeline.research.natural_baselines`): real images ``x`` ``(B, C, H, W)``,

    min_{x ∈ [lo, hi]}  (1/2λ) ‖A x − y‖² + TV(x),     TV(x) = Σ_p ‖(∇x)_p‖₂,

the isotropic TV coupled over channels (the norm at pixel ``p`` runs over the ``C`` channels and
the 2 directions of the forward differences ``∇``, :func:`gradient`); it has the minimisers of
``½‖A x − y‖² + λ TV(x)``. With ``K = [A; ∇]``, ``‖K‖² ≤ ‖AᴴA‖ + 8``, steps ``τ σ ‖K‖² ≤ 1``, the
dual ``p`` of the data term and ``q`` of TV:

    p ← (p + σ (A x̄ − y)) / (1 + σ λ)            (prox of the conjugate of (1/2λ)‖· − y‖², scaled)
    q ← Π_{‖q_p‖ ≤ 1}(q + σ ∇x̄)                    (projection per pixel onto the unit ball)
    x' ← clip_{[lo, hi]}(x − τ (Aᴴ p + ∇ᴴ q))
    x̄ ← 2 x' − x,   x ← x'

The TV dual lives in the unit ball whatever λ, so unobserved regions fill in at a rate independent
of λ. The step ratio ``τ/σ`` changes the speed, not the minimiser.

**Complex images, anisotropic TV** (:func:`anisotropic_tv_least_squares`, the classical MRI
reconstruction ``tv`` of :mod:`sgilo.pipeline.solvers.classical`): ``x`` complex ``(B, *shape)``,

    min_x  ½‖A x − y‖² + λ ‖G x‖₁,     ‖G x‖₁ = Σ_{d, p} |(G x)_{d, p}|,

``G`` the circular backward differences of :func:`circular_difference` (sigpy's
``FiniteDifference``) and ``|·|`` the complex modulus of each difference. This is the problem of
sigpy's ``TotalVariationRecon`` and the iteration is the one its ``LinearLeastSquares`` app runs:
``K = [A; G]``, dual ``u = (u_A, u_G)`` from 0, ``σ = 1``, ``τ = 1/λ_max(KᴴK)`` by the power
iteration (30 steps from a given start), ``θ = 1``, no primal prox:

    u_A ← (u_A + σ (A x̄ − y)) / (1 + σ)            (prox of the conjugate of ½‖·‖²)
    u_G ← Π_{|·| ≤ λ}(u_G + σ G x̄)                  (per entry: the conjugate of λ‖·‖₁)
    x' ← x − τ (Aᴴ u_A + Gᴴ u_G)
    x̄ ← 2 x' − x,   x ← x'

Reference: A. Chambolle and T. Pock, "A first-order primal-dual algorithm for convex problems with
applications to imaging", J. Math. Imaging Vis. 40 (2011) 120–145.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.algorithms.pdhg import Dual, Step, pdhg, per_slice
from sgilo.pipeline.algorithms.power_iteration import DEFAULT_ITERATIONS, power_iteration


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with a zero last difference: ``(B, C, H, W) -> (B, C, 2, H, W)``."""
    g = x.new_zeros(*x.shape[:2], 2, *x.shape[2:])
    g[:, :, 0, :-1] = x[:, :, 1:] - x[:, :, :-1]
    g[:, :, 1, :, :-1] = x[..., 1:] - x[..., :-1]
    return g


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`gradient` (minus the divergence):
    ``(B, C, 2, H, W) -> (B, C, H, W)``."""
    gh, gw = g[:, :, 0], g[:, :, 1]
    out = torch.zeros_like(gh)
    out[:, :, 1:] += gh[:, :, :-1]
    out[:, :, :-1] -= gh[:, :, :-1]
    out[..., 1:] += gw[..., :-1]
    out[..., :-1] -= gw[..., :-1]
    return out


#: ``‖∇‖² ≤ 8`` for the forward differences of :func:`gradient` in 2-D
GRADIENT_NORM_SQUARED = 8.0


def tv_least_squares(
    y: torch.Tensor,
    op: LinearOperator,
    lam: float,
    iterations: int,
    *,
    steps: tuple[float, float] = (0.1, 10.0),
    box: tuple[float, float] = (0.0, 1.0),
    norm_margin: float = 1.01,
) -> torch.Tensor:
    """``argmin_{x ∈ box} ½‖A x − y‖² + λ TV(x)`` by ``iterations`` steps of the module
    docstring's iteration, from ``x₀ = clip(Aᴴ y)``, in float32.

    Args:
        y: real ``(B, *op.oshape)``.
        op: a real operator on ``(C, H, W)`` images.
        lam: ``λ > 0``.
        iterations: the number of primal–dual steps.
        steps: ``(τ ‖K‖, σ ‖K‖)``, whose product must be ≤ 1 (default 0.1 and 10: the primal
            step small, which fills unobserved regions fast).
        box: ``[lo, hi]`` of the constraint.
        norm_margin: ``‖A‖`` is taken as ``norm_margin · √‖AᴴA‖`` (:meth:`normal_norm`, a power
            iteration where not analytic, which converges from below).

    Returns:
        float32 ``(B, *op.ishape)``.
    """
    lo, hi = box
    with torch.no_grad():
        y = y.to(torch.float32)
        a_norm = norm_margin * float(op.normal_norm(1)[0]) ** 0.5
        norm = (a_norm**2 + GRADIENT_NORM_SQUARED) ** 0.5
        if steps[0] * steps[1] > 1.0:
            raise ValueError(f"tv_least_squares: need τσ‖K‖² ≤ 1, got steps {steps}")
        tau, s = steps[0] / norm, steps[1] / norm
        x0 = op.A_adjoint(y).clamp(lo, hi)

        def prox_dual(v: Dual, sigma: Step) -> Dual:
            p, q = v
            q_norm = q.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
            return p / (1.0 + sigma * lam), q / torch.clamp(q_norm, min=1.0)

        return pdhg(
            lambda x: (op.A(x) - y, gradient(x)),
            lambda u: op.A_adjoint(u[0]) + gradient_adjoint(u[1]),
            prox_dual,
            lambda v, t: v.clamp(lo, hi),
            x0,
            (torch.zeros_like(y), gradient(x0).zero_()),
            sigma=s,
            tau=tau,
            iterations=iterations,
        )


def circular_difference(x: torch.Tensor) -> torch.Tensor:
    """Circular backward differences along every axis but the batch axis, sigpy's
    ``FiniteDifference``: ``(G x)_d = x − roll(x, 1, d)``, ``(B, *shape) → (B, D, *shape)`` with
    ``D = len(shape)`` (the differences in axis order)."""
    return torch.stack([x - torch.roll(x, 1, dims=d) for d in range(1, x.ndim)], dim=1)


def circular_difference_adjoint(g: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`circular_difference`: ``Σ_d g_d − roll(g_d, −1, d)``,
    ``(B, D, *shape) → (B, *shape)``."""
    out = None
    for d in range(g.shape[1]):
        gd = g[:, d]
        term = gd - torch.roll(gd, -1, dims=d + 1)
        out = term if out is None else out + term
    return out


def project_modulus(v: torch.Tensor, radius: Step) -> torch.Tensor:
    """Each entry of ``v`` (real or complex) projected onto ``|v| ≤ radius``: the prox of the
    conjugate of ``radius · ‖·‖₁`` (the indicator of the ℓ∞ ball). ``radius``: ≥ 0, a number or
    broadcastable against ``v``."""
    magnitude = v.abs()
    return torch.where(magnitude > radius, v * (radius / magnitude), v)


def anisotropic_tv_least_squares(
    y: torch.Tensor,
    op: LinearOperator,
    lam: Step,
    x0: torch.Tensor,
    iterations: int,
    *,
    start: torch.Tensor,
    power_iterations: int = DEFAULT_ITERATIONS,
    on_iteration: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """``argmin_x ½‖A x − y‖² + λ ‖G x‖₁`` per batch element by ``iterations`` steps of the module
    docstring's iteration (sigpy's ``TotalVariationRecon``), in the dtype of ``x0``.

    Args:
        y: complex ``(B, *op.oshape)``, the measurements.
        op: the forward model ``A`` on complex ``(B, *op.ishape)`` (``op.A``, ``op.A_adjoint``,
            ``op.normal``).
        lam: ``λ ≥ 0``, a number or a ``(B,)`` tensor (one per batch element).
        x0: the start, complex ``(B, *op.ishape)``.
        iterations: the number of primal–dual steps.
        start: the start of the power iteration for ``λ_max(AᴴA + GᴴG)``, ``(B, *op.ishape)``
            (``τ`` per batch element); sigpy's app draws it from numpy's global random state.
        power_iterations: its number of steps (30: sigpy's ``max_power_iter``).
        on_iteration: called after primal–dual step ``k`` (1-based) with ``x_k``.

    Returns:
        ``x_K``, shape and dtype of ``x0``.
    """
    with torch.no_grad():
        y = y.to(x0.dtype)
        b = x0.shape[0]
        lam_b = torch.as_tensor(lam, dtype=x0.real.dtype, device=x0.device).expand(b)
        differences = circular_difference(x0)
        radius = per_slice(lam_b, differences)

        def normal(v: torch.Tensor) -> torch.Tensor:
            return op.normal(v) + circular_difference_adjoint(circular_difference(v))

        tau = 1.0 / power_iteration(normal, start.to(x0), power_iterations)

        def prox_dual(v: Dual, sigma: Step) -> Dual:
            return v[0] / (1 + sigma), project_modulus(v[1], radius)

        return pdhg(
            lambda x: (op.A(x) - y, circular_difference(x)),
            lambda u: op.A_adjoint(u[0]) + circular_difference_adjoint(u[1]),
            prox_dual,
            lambda v, t: v,
            x0,
            (torch.zeros_like(y), torch.zeros_like(differences)),
            sigma=1.0,
            tau=tau,
            iterations=iterations,
            on_iteration=on_iteration,
        )
