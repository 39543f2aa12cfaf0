"""``--method auto``: per slice, the method that best predicts held-out k-space.

No single method wins everywhere: the generative prior wins on data like its training images and
loses, sometimes by several dB, on anatomy, contrasts or orientations it never saw, where a
classical reconstruction is the safer choice. The measurements themselves can tell which case a
slice is, through k-space cross-validation (:mod:`sgilo.pipeline.prior_fit`):

1. hold out a seeded 10 % (``heldout_fraction``) of the measured columns outside the fully
   sampled centre;
2. fit the generative method (``generative``, SGILO by default: its latent fit sees only the
   other samples) and the classical candidates (CG-SENSE for multi-coil, ℓ1-wavelet, TV at
   their defaults, or ``candidates``) on the other samples;
3. keep per slice the generative method unless its mean squared error on the held-out samples
   exceeds ``margin`` (by default the slice's :func:`sgilo.pipeline.prior_fit.prior_margin`,
   which grows with the acceleration) times the lowest classical one (why a margin above 1:
   :mod:`sgilo.pipeline.prior_fit`); else the classical candidate
   with the lowest held-out error summed over ``classical_folds`` folds that together hold out
   every outer column once (the classical fits are cheap, and one fold of 10 % is one or two
   columns at 8×: too few to rank ℓ1-wavelet against TV, which differ by up to 5 dB on data
   their defaults were not tuned for);
4. refit it on every sample: the generative output applies the final data-consistency step with
   all samples to the model image of step 2 (the latent fit is not repeated); a classical choice
   is solved again on all samples.

The cost is one generative fit (as ``--method sgilo``, which measures the same held-out errors for
its prior-fit report) plus the classical fits on the split and the chosen classical refits. The
choice and every error are in the diagnostics (``auto_choice``, ``prior_fit_heldout_errors``).
Nothing to hold out (a slice with fewer than two measured outer columns, non-Cartesian data): the
generative method on every slice, with a note.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.prior_fit import (
    HELDOUT_FRACTION,
    checked_generative,
    score_classical,
)
from sgilo.pipeline.solvers.base import Progress, ReconResult
from sgilo.pipeline.solvers.diagnostics import PriorFit

ClassicalName = Literal["zero-filled", "cg-sense", "l1-wavelet", "tv"]


class AutoConfig(BaseModel):
    """The settings of ``--method auto`` (``--set FIELD=VALUE``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generative: Literal["csgm", "ilo", "sgilo"] = Field(
        "sgilo", description="the generative method among the candidates (at its defaults)"
    )
    candidates: tuple[ClassicalName, ...] | None = Field(
        None,
        min_length=1,
        description="the classical candidates (default: cg-sense for multi-coil data, "
        "l1-wavelet and tv, at their defaults)",
    )
    classical_folds: int = Field(
        4, ge=1, description="folds over the outer columns that rank the classical candidates"
    )
    margin: float | None = Field(
        None,
        gt=0,
        description="keep the generative method on a slice unless its held-out error exceeds "
        "margin × the best classical one (1: the lowest error wins; default: by the slice's "
        "acceleration, 1.0 at 4x and 1.8 at 8x, docs/GENERATIVE.md)",
    )
    heldout_fraction: float = Field(
        HELDOUT_FRACTION,
        gt=0,
        lt=1,
        description="fraction of the measured outer k-space columns held out to score them",
    )
    generative_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="settings of the generative method (its config's fields, e.g. "
        '{"steps": [100, 100]}); checked against that method',
    )

    @model_validator(mode="after")
    def _check_generative(self) -> AutoConfig:
        from sgilo.pipeline.method_settings import check_settings

        if "prior_fit" in self.generative_settings:
            raise ValueError("generative_settings: auto always measures the prior fit")
        check_settings(self.generative, dict(self.generative_settings))
        return self


@dataclass(frozen=True, kw_only=True)
class AutoDiagnostics:
    """What ``auto`` chose and why.

    - ``config``: the :class:`AutoConfig` it ran with;
    - ``auto_choice``: the method kept per slice ``(B,)``;
    - ``prior_fit``: the held-out errors of every candidate per slice and the generative
      method's prior-fit ratio (:class:`sgilo.pipeline.solvers.diagnostics.PriorFit`);
    - ``classical_fold_errors``: per classical candidate the squared held-out error per slice
      ``(B,)`` summed over the folds that rank them (``None`` without a choice);
    - ``generative_run``: the generative run's own record (its config, steps, losses);
    - ``auto_note``: why no choice was made (nothing to hold out), else ``None``.
    """

    config: AutoConfig
    auto_choice: list[str]
    prior_fit: PriorFit | None
    classical_fold_errors: dict[str, list[float]] | None = None
    generative_run: dict[str, Any] = field(default_factory=dict)
    auto_note: str | None = None


@dataclass
class AutoResult(ReconResult):
    """A :class:`ReconResult` plus ``std`` ``(B, H, W)``: SGILO's per-pixel std over its chains
    on the slices where it was kept, 0 on the others (``None`` with one chain)."""

    std: torch.Tensor | None = None


def solve_auto(
    y: torch.Tensor,
    op: LinearOperator,
    *,
    prior: object,
    samples: int = 1,
    seed: int = 0,
    callback: Progress | None = None,
    options: dict | None = None,
) -> AutoResult:
    """Reconstruct ``y`` (``(B, *op.oshape)``) with the method of the module docstring;
    ``samples`` is SGILO's number of chains (when SGILO is the generative candidate)."""
    from sgilo.pipeline.methods import run_method

    start = time.perf_counter()
    config = AutoConfig(**(options or {}))
    generative = config.generative
    result, fits = checked_generative(
        y,
        op,
        generative,
        prior=prior,
        samples=samples if generative == "sgilo" else 1,
        seed=seed,
        callback=callback,
        solver_options={
            **config.generative_settings,
            "prior_fit_fraction": config.heldout_fraction,
        },
    )
    report = result.diagnostics.prior_fit if result.diagnostics is not None else None
    batch = y.shape[0]
    image = result.image.to(y.device).clone()
    std = getattr(result, "std", None)
    std = None if std is None or not std.numel() or samples < 2 else std.to(y.device).clone()
    note, fold_errors = None, None
    if fits is None:
        choice = [generative] * batch
        note = f"{report.note if report else 'nothing held out'}: {generative} on every slice"
    else:
        candidates = config.candidates or tuple(name for name in fits.errors if name != generative)
        missing = tuple(c for c in candidates if c not in fits.errors)
        if missing:
            score_classical(fits, missing, seed=seed)
            report = _with_errors(report, fits.errors)
        classical = torch.stack([fits.errors[n] for n in candidates], dim=1)  # (B, N)
        margin = (
            torch.full((batch,), config.margin, dtype=torch.float64)
            if config.margin is not None
            else torch.tensor(report.margin, dtype=torch.float64)
        )
        keep = fits.errors[generative] <= margin.to(classical) * classical.min(dim=1).values
        ranked = kfold_errors(y, op, candidates, config.classical_folds, seed)  # (B, N)
        if ranked is None:  # one fold: rank on the split above
            ranked = classical
        fold_errors = {n: ranked[:, j].tolist() for j, n in enumerate(candidates)}
        choice = [
            generative if k else candidates[i]
            for k, i in zip(keep.tolist(), ranked.argmin(dim=1).tolist(), strict=True)
        ]
        for name in dict.fromkeys(c for c in choice if c != generative):
            rows = torch.tensor([b for b, c in enumerate(choice) if c == name])
            refit = run_method(y, op, name, seed=seed).image.to(image.dtype)
            image[rows] = refit[rows]
            if std is not None:
                std[rows] = 0
    diagnostics = AutoDiagnostics(
        config=config,
        auto_choice=choice,
        prior_fit=report,
        classical_fold_errors=fold_errors,
        generative_run=result.diagnostics_dict(),
        auto_note=note,
    )
    return AutoResult(
        image=image,
        history=list(result.history),
        seconds=time.perf_counter() - start,
        diagnostics=diagnostics,  # type: ignore[arg-type]
        std=std,
    )


def kfold_errors(
    y: torch.Tensor, op: LinearOperator, methods: tuple[str, ...], folds: int, seed: int
) -> torch.Tensor | None:
    """Float64 ``(B, N)``: per slice and method, the squared held-out error summed over ``folds``
    folds that partition each slice's outer measured columns
    (:func:`sgilo.pipeline.solvers.heldout_columns.partition_columns`; each part held out once,
    the method fitted on the rest at its defaults).
    ``folds`` is capped by the smallest slice's number of candidate columns; ``None`` when that
    leaves fewer than two folds."""
    from sgilo.pipeline.methods import run_method
    from sgilo.pipeline.solvers import heldout_columns as columns
    from sgilo.pipeline.solvers.kspace_split import heldout_error, split_measurements

    candidates = columns.candidate_columns(op, y).cpu()  # (B, L)
    batch = y.shape[0]
    folds = min(folds, int(candidates.sum(dim=1).min()))
    if folds < 2:
        return None
    parts = columns.partition_columns(candidates, folds, seed)
    total = torch.zeros(batch, len(methods), dtype=torch.float64)
    for k in range(folds):
        (part,) = split_measurements(op, y, parts[k].to(y.device))
        count = part.held_op.num_measurements(batch)
        for j, name in enumerate(methods):
            image = run_method(part.fit_y, part.fit_op, name).image
            total[:, j] += heldout_error(part, image)[0] * count
    return total


def _with_errors(report: PriorFit | None, errors: dict[str, torch.Tensor]) -> PriorFit | None:
    """``report`` with the held-out errors of every method scored (candidates added later)."""
    if report is None:
        return None
    from dataclasses import replace

    return replace(report, heldout_errors={k: v.tolist() for k, v in errors.items()})


def choice_summary(choice: list[str]) -> str:
    """``"sgilo on 3 slices, tv on 2"``: how often each method was kept, most frequent first."""
    counts: dict[str, int] = {}
    for name in choice:
        counts[name] = counts.get(name, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} on {k} slice{'s' if k != 1 else ''}" for n, k in ordered)
