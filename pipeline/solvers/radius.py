"""The size of ILO's and SGILO's ℓ1 balls from how much of k-space was measured.

Both solvers bound, per round, the change of every variable ``v`` from its round-start value
``v₀`` by ``‖v − v₀‖₁ ≤ ρ_r · √n · ‖v₀‖₂`` (``n`` entries): a mean absolute change per entry of at
most ``ρ_r`` times the variable's root-mean-square size
(:func:`sgilo.pipeline.solvers.ilo.size_scaled_radius`).

How large ``ρ_r`` may be depends on the data. On MNI training slices (docs/GENERATIVE_TUNING.md,
"The ℓ1 radius and the sampled fraction") the best ``ρ_r`` fell by ten times or more from 4× to
8× undersampling, for single-coil and 8-coil data alike: with fewer measured columns the freed
intermediate features fit the aliasing instead of the anatomy. (8-coil 4× data would take a larger
ball than 0.03, single-coil 4× data would not; the rule depends on ``f`` only.) So the default
(``"auto"``) sets ``ρ_r`` per slice from its per-coil sampled fraction ``f``
(:mod:`sgilo.pipeline.solvers.sampling`): 0.003 at ``f = 1/8``, 0.03 at ``f = 1/4``, geometric in
between, constant outside.

Natural-image operators (the baseline suite) keep the fixed :data:`IMAGE_RADIUS_FRACTION`, the
value chosen before this rule, which was measured on MRI only.
"""

from __future__ import annotations

from typing import Literal

import torch

from sgilo.pipeline.solvers import sampling
from sgilo.pipeline.solvers.problem import ImageProblem, Problem

RADIUS_AT_8X = 0.003
RADIUS_AT_4X = 0.03
IMAGE_RADIUS_FRACTION = 0.03

RadiusSetting = float | Literal["auto"]


def sampled_fraction(problem: Problem) -> torch.Tensor:
    """``(B,)`` per-coil fraction of the k-space grid measured in each slice of ``problem``
    (:func:`sgilo.pipeline.solvers.sampling.sampled_fraction`)."""
    return sampling.sampled_fraction(problem.op, problem.batch)


def radius_for_fraction(fraction: torch.Tensor) -> torch.Tensor:
    """``ρ_r(f)``: 0.003 at 8×, 0.03 at 4×, elementwise on a float tensor of sampled fractions
    (:func:`sgilo.pipeline.solvers.sampling.interpolate_by_fraction`)."""
    return sampling.interpolate_by_fraction(fraction, RADIUS_AT_8X, RADIUS_AT_4X)


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
