"""How much of k-space an MRI operator measures, and defaults that follow it.

Two defaults of the generative solvers depend on how strongly the data constrain the image: the
size of ILO's and SGILO's ℓ1 balls (:mod:`sgilo.pipeline.solvers.radius`) and the weight of the
sparse deviation in the final data-consistency step
(:mod:`sgilo.pipeline.solvers.sparse_deviation`). Both were measured on MNI training slices at the
benchmark's two accelerations, 8× and 4× (per-coil sampled fractions ``f₈ = 1/8`` and ``f₄ =
1/4``), and both are set per slice from its sampled fraction ``f`` by
:func:`interpolate_by_fraction`:

    v(f) = v₈ · (v₄ / v₈) ^ ((log f − log f₈) / (log f₄ − log f₈)),   clamped between v₈ and v₄,

a geometric interpolation between the two measured anchors, constant outside them (no
extrapolation beyond what was measured).

``f`` is the fraction of sampled k-space locations of a Cartesian mask (the same for every coil),
and ``K / (H · W)`` for ``K`` non-Cartesian samples per coil
(:meth:`sgilo.operators.base.LinearOperator.sampled_fraction`; a Nyquist-rate radial acquisition
has ``f ≈ π/2``, so only strongly undersampled trajectories count as such).
"""

from __future__ import annotations

import math

import torch

from sgilo.operators.base import LinearOperator

FRACTION_8X = 1 / 8
FRACTION_4X = 1 / 4


def sampled_fraction(op: LinearOperator, batch: int) -> torch.Tensor:
    """``(B,)`` float64 per-coil fraction of the k-space grid that ``op`` measures in each of
    ``batch`` slices (held-out measurements included): ``op.sampled_fraction(batch)``."""
    return op.sampled_fraction(batch)


def sampled_columns(op: LinearOperator, batch: int) -> torch.Tensor | None:
    """The k-space columns (last-axis entries) that ``op``'s Cartesian mask samples in any row of
    any of ``batch`` slices, long ``(L',)`` on the mask's device; ``None`` when the operator has
    no Cartesian mask or samples every column (nothing to leave out). ``A x`` and the data are
    zero on every other column, so a loss over k-space needs only these
    (:class:`sgilo.pipeline.solvers.problem.Problem`)."""
    masks = op.slice_masks(batch)
    if masks is None:
        return None
    sampled = (masks > 0).any(dim=-2).any(dim=0)  # (W,)
    if bool(sampled.all()):
        return None
    return torch.nonzero(sampled).flatten()


def interpolate_by_fraction(fraction: torch.Tensor, at_8x: float, at_4x: float) -> torch.Tensor:
    """``v(f)`` of the module docstring, elementwise on a float tensor of sampled fractions."""
    t = (fraction.clamp_min(1e-12).log() - math.log(FRACTION_8X)) / math.log(
        FRACTION_4X / FRACTION_8X
    )
    t = t.clamp(0.0, 1.0)
    return at_8x * (at_4x / at_8x) ** t
