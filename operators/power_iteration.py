"""The power iteration: the largest eigenvalue of a Hermitian positive semidefinite map, per batch
element.

For ``N = AᴴA`` (or any Hermitian PSD map acting slice by slice on a batch) and a start ``v₀``,

    w_k = N v_{k−1},    λ_k = ‖w_k‖₂,    v_k = w_k / λ_k        (k = 1 … K),

with the norm taken per batch element; ``λ_K`` converges to the largest eigenvalue ``λ_max`` of
each element's ``N`` at the rate ``(λ₂/λ_max)^K`` (from below for a start with a component along
the top eigenvector). This is the one implementation in the package: the operators' default
:meth:`sgilo.operators.base.LinearOperator.normal_norm` uses it, and
:mod:`sgilo.pipeline.algorithms.power_iteration` re-exports it for the solvers (the operators may
not import the pipeline).

References: R. von Mises and H. Pollaczek-Geiringer, "Praktische Verfahren der
Gleichungsauflösung", ZAMM 9 (1929); G. H. Golub and C. F. Van Loan, *Matrix Computations*,
4th ed., §7.3.1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: power iterations of :func:`power_iteration` unless told otherwise (sigpy's ``MaxEig`` default)
DEFAULT_ITERATIONS = 30


def seeded_start(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> torch.Tensor:
    """A reproducible start ``(B, *ishape)``: standard normal entries of ``dtype`` drawn on the CPU
    from a generator seeded with ``seed`` (so the start does not depend on the device), then moved
    to ``device``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype).to(device)


def power_iteration(
    normal: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    iterations: int = DEFAULT_ITERATIONS,
) -> torch.Tensor:
    """``λ_K`` of the module docstring: the largest eigenvalue of ``normal`` per batch element.

    Args:
        normal: the Hermitian PSD map ``v ↦ N v``, ``(B, *shape) → (B, *shape)``, acting on each
            batch element separately (e.g. ``op.normal``).
        start: ``v₀``, real or complex ``(B, *shape)`` (:func:`seeded_start`).
        iterations: ``K`` ≥ 1.

    Returns:
        ``(B,)`` real tensor (the real dtype of ``start``), on ``start``'s device; no gradient.
    """
    if iterations < 1:
        raise ValueError(f"power_iteration: expected iterations >= 1, got {iterations}")
    v = start
    norm = torch.ones(v.shape[0], dtype=v.real.dtype, device=v.device)
    with torch.no_grad():
        for _ in range(iterations):
            v = normal(v)
            norm = v.reshape(v.shape[0], -1).norm(dim=1)
            v = v / norm.clamp_min(torch.finfo(norm.dtype).tiny).view(-1, *([1] * (v.ndim - 1)))
    return norm
