"""Total-variation regularised least squares by the primal–dual algorithm of Chambolle and Pock.

The problem, for real images ``x`` ``(B, C, H, W)`` and a linear operator ``A``:

    min_{x ∈ [lo, hi]}  (1/2λ) ‖A x − y‖² + TV(x),     TV(x) = Σ_p ‖(∇x)_p‖₂,

the isotropic TV coupled over channels (the norm at pixel ``p`` runs over the ``C`` channels and
the 2 directions of the forward differences ``∇``, :func:`gradient`); it has the minimisers of
``½‖A x − y‖² + λ TV(x)``. With ``K = [A; ∇]``, ``‖K‖² ≤ ‖AᴴA‖ + 8``, steps ``τ σ ‖K‖² ≤ 1`` and
``x̄₀ = x₀``, the iteration (dual ``p`` for the data term, ``q`` for TV) is

    p ← (p + σ (A x̄ − y)) / (1 + σ λ)            (prox of the conjugate of (1/2λ)‖· − y‖², scaled)
    q ← Π_{‖q_p‖ ≤ 1}(q + σ ∇x̄)                    (projection per pixel onto the unit ball)
    x' ← clip_{[lo, hi]}(x − τ (Aᴴ p + ∇ᴴ q))
    x̄ ← 2 x' − x,   x ← x'

The TV dual lives in the unit ball whatever λ, so unobserved regions fill in at a rate independent
of λ. The step ratio ``τ/σ`` changes the speed, not the minimiser.

This is the package's one TV solver of its own (the natural-image baseline of
:mod:`sgilo.pipeline.research.natural_baselines`). The classical MRI reconstruction ``tv``
(:func:`sgilo.pipeline.solvers.classical.total_variation`) keeps sigpy's
``TotalVariationRecon``: it solves another problem (complex images, no box, sigpy's anisotropic
finite differences, its own step sizes from its own power iterations), and its tuned λ and
published numbers (docs/CLASSICAL_TUNING.md) are that app's; running this iteration instead would
change them.

Reference: A. Chambolle and T. Pock, "A first-order primal-dual algorithm for convex problems with
applications to imaging", J. Math. Imaging Vis. 40 (2011) 120–145.
"""

from __future__ import annotations

import torch

from sgilo.operators.base import LinearOperator


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
        x = op.A_adjoint(y).clamp(lo, hi)
        x_bar = x.clone()
        p = torch.zeros_like(y)
        q = gradient(x).zero_()
        for _ in range(iterations):
            p = (p + s * (op.A(x_bar) - y)) / (1.0 + s * lam)
            q = q + s * gradient(x_bar)
            q = q / torch.clamp(q.pow(2).sum(dim=(1, 2), keepdim=True).sqrt(), min=1.0)
            x_new = (x - tau * (op.A_adjoint(p) + gradient_adjoint(q))).clamp(lo, hi)
            x_bar = 2.0 * x_new - x
            x = x_new
    return x
