"""The power iteration for the largest eigenvalue of ``AᴴA`` per batch element.

Its one implementation lives in :mod:`sgilo.operators.power_iteration` (the operators use it for
:meth:`~sgilo.operators.base.LinearOperator.normal_norm` and may not import the pipeline); this
module is its name in the algorithm layer:

    w_k = N v_{k−1},    λ_k = ‖w_k‖₂,    v_k = w_k / λ_k,    v₀ seeded,

``λ_K → λ_max(N)`` per batch element. References: von Mises & Pollaczek-Geiringer (1929); Golub &
Van Loan, *Matrix Computations*, §7.3.1.
"""

from __future__ import annotations

from sgilo.operators.power_iteration import DEFAULT_ITERATIONS, power_iteration, seeded_start

__all__ = ["DEFAULT_ITERATIONS", "power_iteration", "seeded_start"]
