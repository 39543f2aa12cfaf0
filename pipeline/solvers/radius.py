"""The size of ILO's and SGILO's ℓ1 balls from how much of k-space was measured.

Both solvers bound, per round, the change of every variable ``v`` from its round-start value
``v₀`` by ``‖v − v₀‖₁ ≤ ρ_r · √n · ‖v₀‖₂`` (``n`` entries): a mean absolute change per entry of at
most ``ρ_r`` times the variable's root-mean-square size
(:func:`pipeline.solvers.ilo.size_scaled_radius`).

How large ``ρ_r`` may be depends on the data. On MNI training slices (docs/GENERATIVE_TUNING.md,
"The ℓ1 radius and the sampled fraction") the best ``ρ_r`` fell by ten times or more from 4× to
8× undersampling, for single-coil and 8-coil data alike: with fewer measured columns the freed
intermediate features fit the aliasing instead of the anatomy. (8-coil 4× data would take a larger
ball than 0.03, single-coil 4× data would not; the rule depends on ``f`` only.) So the default
(``"auto"``) sets ``ρ_r`` from the per-coil sampled fraction ``f`` of each slice,

    ρ_r(f) = ρ₈ · (ρ₄ / ρ₈) ^ ((log f − log f₈) / (log f₄ − log f₈)),   clamped to [ρ₈, ρ₄],

a geometric interpolation between the two measured anchors ``(f₈, ρ₈) = (1/8, 0.003)`` and
``(f₄, ρ₄) = (1/4, 0.03)``, constant outside them (no extrapolation beyond what was measured).

``f`` is the fraction of sampled k-space locations of a Cartesian mask (the same for every coil),
and ``K / (H · W)`` for ``K`` non-Cartesian samples per coil (a Nyquist-rate radial acquisition has
``f ≈ π/2``, so only strongly undersampled trajectories get a smaller ball). Natural-image
operators (the baseline suite) keep the fixed :data:`IMAGE_RADIUS_FRACTION`, the value chosen
before this rule, which was measured on MRI only.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from operators.mri import NonCartesianMRI
from pipeline.solvers.latent_common import ImageProblem, Problem, cartesian_mask

FRACTION_8X = 1 / 8
FRACTION_4X = 1 / 4
RADIUS_AT_8X = 0.003
RADIUS_AT_4X = 0.03
IMAGE_RADIUS_FRACTION = 0.03

RadiusSetting = float | Literal["auto"]


def sampled_fraction(problem: Problem) -> torch.Tensor:
    """``(B,)`` per-coil fraction of the k-space grid measured in each slice (all measurements,
    held-out ones included)."""
    op, batch = problem.op, problem.batch
    h, w = op.ishape
    if isinstance(op, NonCartesianMRI):
        return torch.full((batch,), op.oshape[-1] / (h * w), dtype=torch.float64)
    mask = cartesian_mask(op, batch) > 0
    return mask.reshape(batch, -1).to(torch.float64).mean(dim=1).cpu()


def radius_for_fraction(fraction: torch.Tensor) -> torch.Tensor:
    """``ρ_r(f)`` of the module docstring, elementwise on a float tensor of sampled fractions."""
    t = (fraction.clamp_min(1e-12).log() - math.log(FRACTION_8X)) / math.log(
        FRACTION_4X / FRACTION_8X
    )
    t = t.clamp(0.0, 1.0)
    return RADIUS_AT_8X * (RADIUS_AT_4X / RADIUS_AT_8X) ** t


def resolve_radius_fraction(
    setting: RadiusSetting, problem: Problem | ImageProblem, device: torch.device
) -> torch.Tensor:
    """The ``(B,)`` radius fractions ``ρ_r`` a solver uses: ``setting`` itself when it is a number,
    else (``"auto"``) :func:`radius_for_fraction` of each slice's sampled fraction
    (:data:`IMAGE_RADIUS_FRACTION` for natural-image problems)."""
    batch = problem.batch
    if setting != "auto":
        value = float(setting)
    elif isinstance(problem, ImageProblem):
        value = IMAGE_RADIUS_FRACTION
    else:
        return radius_for_fraction(sampled_fraction(problem)).to(device)
    return torch.full((batch,), value, dtype=torch.float64, device=device)
