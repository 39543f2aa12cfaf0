"""FISTA: accelerated proximal gradient for ``min_x f(x) + g(x)``, ``f`` smooth, ``g`` with a prox.

With step ``t ≤ 1/L`` (``L`` the Lipschitz constant of ``∇f``; ``L = ‖AᴴA‖`` for
``f = ½‖A x − y‖²``), from ``x₀``, ``z₁ = x₀``, ``θ₁ = 1``:

    x_k     = prox_{t g}(z_k − t ∇f(z_k))
    θ_{k+1} = (1 + √(1 + 4 θ_k²)) / 2
    z_{k+1} = x_k + ((θ_k − 1) / θ_{k+1}) (x_k − x_{k−1})

``F(x_k) − F* ≤ 2 L ‖x₀ − x*‖² / (k + 1)²``. The iterates may be torch tensors or numpy arrays
(only ``+``, ``−`` and scalar ``*`` are used), so a solver can run it on whatever its operators
take; the prox may change with ``k`` (cycle spinning draws a new shift for every call).

Reference: A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for
linear inverse problems", SIAM J. Imaging Sci. 2 (2009) 183–202.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

Array = TypeVar("Array")


def fista(
    gradient: Callable[[Array], Array],
    prox: Callable[[Array, float], Array],
    step: float | Array,
    x0: Array,
    iterations: int,
) -> Array:
    """``x_K`` of the module docstring.

    Args:
        gradient: ``z ↦ ∇f(z)`` (e.g. ``Aᴴ(A z − y)``), same shape and dtype as ``z``.
        prox: ``(v, t) ↦ prox_{t g}(v)`` (e.g. soft thresholding at ``t λ``), called once per
            iteration, in order.
        step: ``t`` (``≤ 1/L``): a number, or an array broadcasting against ``x`` (one step
            per batch element, e.g. ``(B, 1, 1)``), which ``prox`` receives as it is.
        x0: the start, any shape (a slice ``(H, W)`` or a batch).
        iterations: ``K`` ≥ 0.
    """
    x = z = x0
    theta = 1.0
    for _ in range(iterations):
        x_next = prox(z - step * gradient(z), step)
        theta_next = (1 + math.sqrt(1 + 4 * theta * theta)) / 2
        z = x_next + ((theta - 1) / theta_next) * (x_next - x)
        x, theta = x_next, theta_next
    return x
