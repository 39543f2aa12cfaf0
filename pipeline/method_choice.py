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
3. optionally (``second_fit_below`` > 0; off by default) on a batch with a slice accelerated
   less than ``second_fit_below``, fit the generative method a **second time**, with a fraction
   of its steps (``second_fit_steps``) and only the final step that predicts (this fit scores,
   its output is not used), holding out another quarter of the outer columns: part 1 of the
   ``classical_folds``-fold partition below (part 0 contains the draw of step 1, so the two
   held-out sets are disjoint). On those slices the statistic is the squared held-out error
   summed over both held-out sets, the generative one against the lowest classical one on the
   same samples, and its margin :data:`TWO_FIT_MARGIN`. It was the 4× default (below 6×) until
   the output's final step kept only the model image's trusted band; re-measured with the band
   on the 48 4× rows of the tuning set (:mod:`sgilo.pipeline.research.auto_second_fit`), the
   first fit alone at the 4× margin 2.0 lost 0.30 dB to the best single method against 0.41
   for the second fit at τ 1.0 (0.36 at its best τ), without the second fit's time
   (docs/GENERATIVE.md);
4. keep per slice the generative method unless its held-out error exceeds the margin
   (``margin``; by default the slice's :func:`sgilo.pipeline.prior_fit.prior_margin`, which
   grows with the acceleration, per kind of data, or :data:`TWO_FIT_MARGIN` with two fits; why a
   margin above 1: :mod:`sgilo.pipeline.prior_fit`) times the lowest classical one, or, on a
   slice without the second fit, its model image leaves more of the fitted k-space energy
   unexplained than the limit (``unexplained_limit``; by default
   :func:`sgilo.pipeline.prior_fit.unexplained_limit`, 0.09 from 3× on, for one coil 0.10 at
   8×: the held-out columns are a few, the fitted samples all the rest), or the slice is
   single-coil, accelerated less than about 5.7×, and noisier than ``noise_limit`` (σ̂/s,
   :func:`sgilo.pipeline.prior_fit_rule.noise_limit`: there every method's held-out error is the
   noise and the prior's fit lost to TV on the tuning slices); else the classical
   candidates, fitted on
   ``classical_folds`` folds that together hold out every outer column once (the classical fits
   are cheap, and one fold of 10 % is one or two columns at 8×), are **blended** with the convex
   weights that minimise their held-out error summed over the folds
   (:mod:`sgilo.pipeline.classical_blend`: keeping the one with the lowest error, the rule
   before 2026-12-07 and ``classical_blend=False``, picks the wrong one of ℓ1-wavelet and TV
   often, and they differ by up to 5 dB on data their defaults were not tuned for);
5. refit on every sample: the generative output applies the final data-consistency step with
   all samples to the model image of step 2 (the latent fit is not repeated; the second fit only
   scores); each classical candidate with a weight is solved again on all samples and the
   slice's output is their weighted sum.

The cost is one generative fit (as ``--method sgilo``, which measures the same held-out errors for
its prior-fit report), plus the classical fits on the splits,
the folds that rank them (only when some slice goes to a classical method) and the chosen
classical refits. The choice, the statistic and every error are in the diagnostics
(``auto_choice``, where a blend is named by its candidates, heaviest first, as ``tv+l1-wavelet``;
``auto_weights``, ``auto_ratio``, ``auto_margin``, ``auto_unexplained_limit``,
``prior_fit_heldout_errors``, ``prior_fit_unexplained``, ``auto_noise_level``, ``auto_noise_limit``,
``second_fit_errors``).
Nothing to hold out (a slice with fewer than two measured outer columns, non-Cartesian data): the
generative method on every slice, with a note.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.classical_blend import blend_label, fold_gram, simplex_weights
from sgilo.pipeline.prior_fit import (
    HELDOUT_FRACTION,
    HELDOUT_SEED,
    checked_generative,
    predict_on_split,
    score_classical,
    slice_accelerations,
    unexplained_fraction,
)
from sgilo.pipeline.prior_fit_rule import noise_limit
from sgilo.pipeline.solvers.base import Progress, ReconResult
from sgilo.pipeline.solvers.classical import scoring_options
from sgilo.pipeline.solvers.diagnostics import PriorFit
from sgilo.pipeline.solvers.kspace_split import SplitPart, heldout_error, split_measurements

ClassicalName = Literal["zero-filled", "cg-sense", "l1-wavelet", "tv"]

#: batches with a slice accelerated less than this get the second generative fit (step 3): off
#: by default since the trusted band (docs/GENERATIVE.md); it was 6
SECOND_FIT_BELOW = 0.0
#: the margin of the two-fit statistic, chosen on the 4× rows of the tuning set: the smallest τ
#: within 0.05 dB of the lowest mean loss, averaged over the three parts that could be the second
#: fit's (:mod:`sgilo.pipeline.research.auto_second_fit`, docs/GENERATIVE.md)
TWO_FIT_MARGIN = 1.0
#: the part of the outer-column partition that the second generative fit holds out (part 0
#: holds the draw of the first fit)
SECOND_FIT_PART = 1
#: the fraction of the generative method's steps that the second (scoring) fit runs: on the 24
#: 4× rows of the tuning set half the steps made the same choices as the full schedule at
#: τ = :data:`TWO_FIT_MARGIN` (docs/GENERATIVE.md)
SECOND_FIT_STEPS = 0.5


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
    classical_blend: bool = Field(
        True,
        description="on a slice given to the classical candidates, blend them with the convex "
        "weights that minimise their held-out error over the folds (pipeline/classical_blend.py)"
        "; false: keep the one with the lowest",
    )
    margin: float | None = Field(
        None,
        gt=0,
        description="keep the generative method on a slice unless its held-out error exceeds "
        "margin × the best classical one (1: the lowest error wins; default: 1.0 where a "
        "second generative fit scored the slice, else by the slice's acceleration, 2.0 at 4x "
        "and 3.0 at 8x, docs/GENERATIVE.md)",
    )
    unexplained_limit: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="also keep a classical method on a slice that the first split decides "
        "(no second fit) when the generator's model image leaves more than this fraction of the "
        "fitted k-space energy unexplained beyond the best classical fit (default: 0.09 on "
        "slices accelerated 3x or more, for single-coil data rising to 0.10 at 8x; none below "
        "3x; 1e9: off; docs/GENERATIVE.md)",
    )
    noise_limit: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="also keep a classical method on a slice whose estimated noise level "
        "sigma/s (the noise std over the data scale) is above this (default: 0.09 on "
        "single-coil slices accelerated less than 5.7x, none elsewhere; 1e9: off; "
        "docs/GENERATIVE.md)",
    )
    second_fit_below: float = Field(
        SECOND_FIT_BELOW,
        ge=0,
        description="fit the generative method a second time, holding out another quarter of "
        "the outer columns, on batches with a slice accelerated less than this (0, the "
        "default: never; 6 was the default before the trusted band; the unexplained "
        "fraction is not judged on the slices it scores)",
    )
    second_fit_steps: float = Field(
        SECOND_FIT_STEPS,
        gt=0,
        le=1,
        description="the fraction of the generative method's steps (per round) that the second "
        "fit runs (it only scores; 1: the full schedule)",
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
    - ``auto_ratio``, ``auto_margin``: per slice the statistic the choice compared (the
      generative held-out error over the lowest one of the ``candidates``: on both held-out sets
      where the second fit ran, else on the first split, which is the prior-fit ratio with the
      default candidates) and the margin it was compared with (``None`` without a choice);
    - ``auto_unexplained_limit``: per slice the limit the prior-fit report's unexplained
      fraction was compared with (``None`` where it was not: slices the second fit decided, or
      below the acceleration where a limit applies; the whole field ``None`` without a
      choice);
    - ``auto_noise_level``: per slice the estimated noise level ``σ̂/s``
      (:func:`sgilo.pipeline.solvers.classical.noise_level`);
      ``auto_noise_limit``: the limit it was compared with (``None`` where none applies,
      :func:`sgilo.pipeline.prior_fit_rule.noise_limit`); both ``None`` without a choice;
    - ``second_fit_errors``: per method (the generative one and each classical candidate) the
      mean squared held-out error per slice ``(B,)`` on the second fit's held-out columns
      (``None`` where no second fit ran);
    - ``classical_fold_errors``: per classical candidate the squared held-out error per slice
      ``(B,)`` summed over the folds that rank them (``None`` without a choice, and when every
      slice kept the generative method: the folds are then not fitted);
    - ``auto_weights``: per slice the classical candidates' weights in its output (those above
      0; one weight of 1 where one candidate was kept), ``None`` on the slices that kept the
      generative method; the whole field ``None`` when every slice kept it;
    - ``generative_run``: the generative run's own record (its config, steps, losses);
    - ``auto_note``: why no choice was made (nothing to hold out), else ``None``.
    """

    config: AutoConfig
    auto_choice: list[str]
    prior_fit: PriorFit | None
    auto_ratio: list[float] | None = None
    auto_margin: list[float] | None = None
    auto_unexplained_limit: list[float | None] | None = None
    auto_noise_level: list[float] | None = None
    auto_noise_limit: list[float | None] | None = None
    second_fit_errors: dict[str, list[float]] | None = None
    classical_fold_errors: dict[str, list[float]] | None = None
    auto_weights: list[dict[str, float] | None] | None = None
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
    fit_kwargs = {  # the same generative fit for the first split and the second
        "prior": prior,
        "samples": samples if generative == "sgilo" else 1,
        "seed": seed,
        "callback": callback,
        "solver_options": {
            **config.generative_settings,
            "prior_fit_fraction": config.heldout_fraction,
        },
    }
    result, fits = checked_generative(y, op, generative, **fit_kwargs)
    report = result.diagnostics.prior_fit if result.diagnostics is not None else None
    batch = y.shape[0]
    image = result.image.to(y.device).clone()
    std = getattr(result, "std", None)
    std = None if std is None or not std.numel() or samples < 2 else std.to(y.device).clone()
    note, fold_errors, second, ratio, margins, limits = None, None, None, None, None, None
    noise, noise_limits = None, None
    blend = None
    if fits is None:
        choice = [generative] * batch
        note = f"{report.note if report else 'nothing held out'}: {generative} on every slice"
    else:
        candidates = config.candidates or tuple(name for name in fits.errors if name != generative)
        missing = tuple(c for c in candidates if c not in fits.errors)
        if missing:
            score_classical(fits, missing, seed=seed)
            report = _with_errors(report, fits.errors)
        if config.candidates is not None:  # u beyond the best of these candidates
            u = unexplained_fraction(fits, generative, candidates)
            report = replace(report, unexplained=u.tolist())
        parts = outer_partition(y, op, config.classical_folds)
        fitted: dict[int, tuple] = {}  # part -> (errors, G, c), fitted when first needed

        def fold_stats(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if k not in fitted:
                stats = kfold_statistics(y, op, candidates, parts[k : k + 1])
                fitted[k] = tuple(t[0] for t in stats)
            return fitted[k]

        def fold(k: int) -> torch.Tensor:  # (B, N) squared held-out errors of part k
            return fold_stats(k)[0]

        classical = torch.stack([fits.errors[n] for n in candidates], dim=1)  # (B, N)
        ratio = fits.errors[generative] / classical.min(dim=1).values.clamp_min(1e-300)
        margins = torch.tensor(report.margin, dtype=torch.float64)
        accelerations = torch.tensor(slice_accelerations(op, batch), dtype=torch.float64)
        two = accelerations < config.second_fit_below
        if parts is not None and bool(two.any()):
            held = per_fold_part(y, op, parts[SECOND_FIT_PART])
            options = fit_kwargs["solver_options"]
            steps = scaled_steps(generative, options.get("steps"), config.second_fit_steps)
            predicted = predict_on_split(
                y, held, generative, **{**fit_kwargs, "solver_options": {**options, "steps": steps}}
            )
            count0 = fits.part.held_op.num_measurements(batch)
            count1 = held.held_op.num_measurements(batch)
            error1 = heldout_error(held, predicted)[0]  # (B,)
            both = (fits.errors[generative] * count0 + error1 * count1) / (
                classical * count0[:, None] + fold(SECOND_FIT_PART)
            ).min(dim=1).values.clamp_min(1e-300)
            ratio = torch.where(two, both, ratio)
            margins = torch.where(two, torch.full_like(margins, TWO_FIT_MARGIN), margins)
            second = {generative: error1.tolist()}
            for j, name in enumerate(candidates):
                second[name] = (fold(SECOND_FIT_PART)[:, j] / count1).tolist()
        if config.margin is not None:
            margins = torch.full((batch,), config.margin, dtype=torch.float64)
        given = config.unexplained_limit
        limits = [
            None if two_fit else (limit if given is None else given)
            for two_fit, limit in zip(
                (two & (parts is not None)).tolist(), report.unexplained_limit, strict=True
            )
        ]
        unexplained = torch.tensor(report.unexplained, dtype=torch.float64)
        bound = torch.tensor([math.inf if t is None else t for t in limits], dtype=torch.float64)
        noise = torch.tensor(report.noise_level, dtype=torch.float64)  # (B,) σ̂/s
        noise_limits = [
            noise_limit(r, multi_coil=op.num_coils > 1)
            if config.noise_limit is None
            else config.noise_limit
            for r in accelerations.tolist()
        ]
        ceiling = torch.tensor(
            [math.inf if t is None else t for t in noise_limits], dtype=torch.float64
        )
        keep = (ratio <= margins) & (unexplained <= bound) & (noise <= ceiling)
        choice = [generative] * batch
        if not bool(keep.all()):  # rank the classical candidates only when one is needed
            stats = [] if parts is None else [fold_stats(k) for k in range(parts.shape[0])]
            # one fold (the split) ranks alone; else the errors summed over the folds
            ranked = torch.stack([t[0] for t in stats]).sum(dim=0) if stats else classical
            weights = torch.nn.functional.one_hot(ranked.argmin(dim=1), len(candidates))
            weights = weights.to(torch.float64)  # the lowest error, unless blended:
            if stats and config.classical_blend:
                gram = torch.stack([t[1] for t in stats]).sum(dim=0)
                weights = simplex_weights(gram, torch.stack([t[2] for t in stats]).sum(dim=0))
            fold_errors = {n: ranked[:, j].tolist() for j, n in enumerate(candidates)}
            blend = [
                None if k else {n: w for n, w in zip(candidates, row, strict=True) if w > 0}
                for k, row in zip(keep.tolist(), weights.tolist(), strict=True)
            ]
            choice = [
                generative if b is None else blend_label(tuple(b), list(b.values())) for b in blend
            ]
            rows = [b for b, k in enumerate(keep.tolist()) if not k]
            image[rows] = 0
            for j, name in enumerate(candidates):
                if not bool((weights[rows, j] > 0).any()):
                    continue
                refit = run_method(y, op, name, seed=seed).image.to(image.dtype)
                w = weights[rows, j].to(device=image.device, dtype=image.real.dtype)
                image[rows] += w[:, None, None] * refit[rows]
            if std is not None:
                std[rows] = 0
    diagnostics = AutoDiagnostics(
        config=config,
        auto_choice=choice,
        prior_fit=report,
        auto_ratio=None if ratio is None else ratio.tolist(),
        auto_margin=None if margins is None else margins.tolist(),
        auto_unexplained_limit=limits,
        auto_noise_level=None if noise is None else noise.tolist(),
        auto_noise_limit=noise_limits,
        second_fit_errors=second,
        classical_fold_errors=fold_errors,
        auto_weights=blend,
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


def scaled_steps(method: str, steps: object, fraction: float) -> int | list[int]:
    """The generative ``method``'s steps (``steps`` as given in its settings, ``None``: its
    default; an int for CSGM, per round for ILO and SGILO) times ``fraction``, rounded, at least
    1 where the schedule had any."""
    from sgilo.pipeline.method_settings import settings_model

    if steps is None:
        steps = settings_model(method).model_fields["steps"].default

    def scale(n: int) -> int:
        return max(1, round(int(n) * fraction)) if int(n) > 0 else 0

    return scale(steps) if isinstance(steps, int) else [scale(n) for n in steps]


def outer_partition(y: torch.Tensor, op: LinearOperator, folds: int) -> torch.Tensor | None:
    """``(K, B, L)`` bool: ``K`` parts per slice that together hold each of its outer measured
    columns once (:func:`sgilo.pipeline.solvers.heldout_columns.partition_columns` with the
    prior-fit check's seed, so part 0 contains that check's draw). ``K = folds``, capped by the
    smallest slice's number of candidate columns; ``None`` when that leaves fewer than two."""
    from sgilo.pipeline.solvers import heldout_columns as columns

    candidates = columns.candidate_columns(op, y).cpu()  # (B, L)
    folds = min(folds, int(candidates.sum(dim=1).min()))
    if folds < 2:
        return None
    return columns.partition_columns(candidates, folds, HELDOUT_SEED).to(y.device)


def per_fold_part(y: torch.Tensor, op: LinearOperator, held: torch.Tensor) -> SplitPart:
    """The split of ``y`` that holds out the columns ``held`` (``(B, L)`` bool)."""
    (part,) = split_measurements(op, y, held)
    return part


def kfold_errors(
    y: torch.Tensor, op: LinearOperator, methods: tuple[str, ...], parts: torch.Tensor
) -> torch.Tensor:
    """Float64 ``(K, B, N)``: per part of ``parts`` (``(K, B, L)``: :func:`outer_partition`, or
    some of its parts), slice and method, the squared held-out error summed over that part's
    held-out samples, the method fitted at its defaults on the other samples; summed over all the
    parts of :func:`outer_partition`, every outer column has been held out once."""
    return kfold_statistics(y, op, methods, parts)[0]


def kfold_statistics(
    y: torch.Tensor, op: LinearOperator, methods: tuple[str, ...], parts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`kfold_errors` ``(K, B, N)`` and, from the same fits, the blend's ``G``
    ``(K, B, N, N)`` and ``c`` ``(K, B, N)`` per part
    (:func:`sgilo.pipeline.classical_blend.fold_gram`)."""
    from sgilo.pipeline.methods import run_method

    batch, n = y.shape[0], len(methods)
    total = torch.zeros(parts.shape[0], batch, n, dtype=torch.float64)
    gram = torch.zeros(parts.shape[0], batch, n, n, dtype=torch.float64)
    cross = torch.zeros(parts.shape[0], batch, n, dtype=torch.float64)
    for k in range(parts.shape[0]):
        part = per_fold_part(y, op, parts[k])
        count = part.held_op.num_measurements(batch)
        images = []
        for j, name in enumerate(methods):
            options = scoring_options(name)  # scores only: complex64
            images.append(run_method(part.fit_y, part.fit_op, name, solver_options=options).image)
            total[k, :, j] = heldout_error(part, images[-1])[0] * count
        gram[k], cross[k] = fold_gram(part, images)
    return total, gram, cross


def _with_errors(report: PriorFit | None, errors: dict[str, torch.Tensor]) -> PriorFit | None:
    """``report`` with the held-out errors of every method scored (candidates added later)."""
    if report is None:
        return None
    from dataclasses import replace

    return replace(report, heldout_errors={k: v.tolist() for k, v in errors.items()})


def choice_summary(choice: list[str]) -> str:
    """``"sgilo on 3 slices, tv on 2 slices"``: how often each method was kept, most frequent
    first."""
    counts: dict[str, int] = {}
    for name in choice:
        counts[name] = counts.get(name, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} on {k} slice{'s' if k != 1 else ''}" for n, k in ordered)
