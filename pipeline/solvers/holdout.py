"""Held-out measurements: choosing ILO's and SGILO's iterate on data they did not fit.

ILO and SGILO keep, by the papers' rule, the iterate with the lowest measurement loss. With a
generator that cannot represent the slice, the intermediate layers' freedom lets the loss keep
falling while the image fills the unmeasured k-space with aliasing: at 8× the rounds end below
their own CSGM start (docs/GENERATIVE_TUNING.md). The measurement loss cannot see this; the error
on measurements that were not fitted can (the self-validation of ZS-SSL, Yaman et al. 2022).

With ``holdout = f > 0`` a fraction ``f`` of the measured k-space columns outside the
fully sampled centre (every slice its own random draw, from ``holdout_seed``) is set aside:

- the start, the rounds' loss and the intensity gain use only the other measurements;
- every iterate of every round (the start included) is scored by its loss on the held-out ones,
  ``‖a·A x − y/s‖²`` over the held-out entries divided by their number, and the output is the
  iterate with the lowest held-out loss, so later rounds are kept only where they predict
  unseen data better than earlier ones;
- the final data-consistency step uses all measurements, the held-out ones included.

"Columns" are the entries of the last axis of ``y`` (the phase-encoding lines of the Cartesian
operators of :mod:`sgilo.operators.mri`); for the non-Cartesian operator they are single samples,
drawn from all of them. A column counts as measured when its mask has a non-zero entry; the centre
run (:meth:`sgilo.operators.base.LinearOperator.calibration_region`) is never held out: it carries
most of the energy and the phase. At least one column is held out and at least one outer column is
fitted (for a mask with at least two outer columns in every slice; otherwise there is nothing to
hold out, and the solver warns and keeps the measurement-loss rule for that batch). Natural-image
problems have no hold-out.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from pydantic import BaseModel, ConfigDict, Field

from sgilo.pipeline.solvers import heldout_columns as columns
from sgilo.pipeline.solvers.problem import Problem


class HoldoutConfig(BaseModel):
    """The hold-out options of ILO and SGILO (fields of their configs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holdout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="fraction of the measured outer k-space columns held out of the fit and "
        "used to choose the iterate (0: the lowest measurement loss of the last round, the "
        "papers' rule; pipeline/solvers/holdout.py)",
    )
    holdout_seed: int = Field(0, ge=0, description="seed of the held-out columns' draw")


def candidate_columns(problem: Problem) -> torch.Tensor:
    """``(B, L)`` bool: the last-axis entries of ``y`` that may be held out (measured, outside
    the fully sampled centre; every sample for the non-Cartesian operator;
    :func:`sgilo.pipeline.solvers.heldout_columns.candidate_columns`)."""
    return columns.candidate_columns(problem.op, problem.y)


def too_few_columns(problem: Problem) -> str | None:
    """Why no column can be held out of ``problem`` (a slice with fewer than 2 candidate
    columns), or ``None``."""
    return columns.too_few_columns(problem.op, problem.y)


def heldout_columns(problem: Problem, fraction: float, seed: int) -> torch.Tensor:
    """``(B, L)`` bool: per slice, ``max(1, round(fraction · n))`` of its ``n`` candidate columns
    (:func:`candidate_columns`), at most ``n − 1``, drawn without replacement from a generator
    seeded with ``seed`` (slice after slice;
    :func:`sgilo.pipeline.solvers.heldout_columns.draw_columns`)."""
    try:
        return columns.draw_columns(candidate_columns(problem), fraction, seed)
    except ValueError as exc:
        raise ValueError(f"holdout: {exc} (use holdout=0)") from None


def with_holdout(problem: Problem, fraction: float, seed: int) -> Problem:
    """``problem`` with ``fraction`` of its outer columns held out (:func:`heldout_columns`):
    ``heldout`` set, ``m`` the number of fitted measurements and ``m_heldout`` that of the
    held-out ones (entries with a non-zero mask × coils; every entry of ``y`` for the
    non-Cartesian operator). ``fraction = 0`` returns ``problem`` unchanged, and so does a
    problem with too few columns (:func:`too_few_columns`), with a ``UserWarning``."""
    if fraction == 0:
        return problem
    reason = too_few_columns(problem)
    if reason is not None:
        warnings.warn(f"holdout skipped: {reason}", stacklevel=3)
        return problem
    heldout = heldout_columns(problem, fraction, seed)
    counts = _measured_per_column(problem)  # (B, L)
    held = (counts * heldout).sum(dim=1)  # (B,)
    return dataclasses.replace(
        problem,
        heldout=heldout,
        m=(problem.m - held).clamp_min(1),
        m_heldout=held.clamp_min(1),
    )


def _measured_per_column(problem: Problem) -> torch.Tensor:
    """``(B, L)``: measurements per last-axis entry of ``y`` (rows sampled × coils)."""
    return columns.measured_per_column(problem.op, problem.y, problem.m.dtype)
