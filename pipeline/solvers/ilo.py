"""ILO, intermediate layer optimisation, for MRI (docs/ALGORITHMS.md §3, MRI specifics of §5).

Variables, per slice (batched over the ``B`` slices of ``y``):

- ``z`` ``(B, n_latent, D)``: Gaussianized w+ latents, ``w = LeakyReLU_0.2(σ ⊙ z + μ)`` row by row
  (``μ, σ`` = :class:`sgilo.models.stylegan2.LatentStats`; the mapping network is not run);
- the noise maps ``(B, 1, r, r)`` (initialised from the generator's fixed buffers);
- ``h_{k−1}`` = (features, skip image), the output of block ``k − 1`` (rounds ``k ≥ 1``).

Start (``init``, :mod:`sgilo.pipeline.solvers.warm_start`): ``"csgm"`` (default) fits CSGM first and
starts ``z`` from its solution mapped into the Gaussianized space, every row the same, so round 0
starts from CSGM's image; ``"random"``: ``z ~ N(0, I)``, the paper's start.

Round ``k = 0 … len(steps) − 1`` (``len(steps) ≤ num_blocks``):

1. for ``k ≥ 1``, ``h_{k−1}`` is initialised by running block ``k − 1`` on the previous round's
   final iterate (from the constant for ``k = 1``, from the previous ``h_{k−2}`` otherwise; see
   :func:`~sgilo.pipeline.solvers.rounds.init_round_state`), so the round starts from exactly the
   image the previous one ended with; the image is ``x = G_{≥k}(h_{k−1}; w(z), noises)``
   (``synthesize(..., start=k, h=h)``);
2. optimised: all rows of ``z``, the noise maps of blocks ``k … k + noise_blocks_ahead`` and
   ``h_{k−1}``; a fresh Adam (``lr``), learning-rate warm-up over the first ``lr_rampup`` of the
   steps and a cosine ramp-down over the last ``lr_rampdown``;
3. loss per slice ``‖A(c ⊙ x) − y/s‖² / m + geocross_weight · GeoCross(z)``, GeoCross over the
   rows of ``z`` (:func:`~sgilo.pipeline.solvers.rounds.geocross`) in every round;
4. after each Adam step: sphere projection (each row of ``z`` and each optimised noise map back to
   its ℓ2 norm at round start), then ``v ← v₀ + Π_{‖·‖₁ ≤ r}(v − v₀)`` for ``z``, each optimised
   noise map, and the features and the skip image of ``h`` (separate balls), per slice, ``v₀`` the
   round-start value;
5. the output is, per slice, the iterate of the LAST round with the lowest measurement loss
   ``‖A(c ⊙ x) − y/s‖² / m`` (the round start and the final iterate included); with a hold-out
   (``holdout > 0``, :mod:`sgilo.pipeline.solvers.holdout`) the iterate of ANY round, the start
   included, with the lowest loss on the held-out measurements, which the rounds do not fit.

Early stop (``early_stop``, on by default): a slice's round ends once its measurement loss has
not improved on its lowest value of the round by a relative ``1e-3`` for ``patience`` steps; the
iterate it stops at is its final one of the round, and the round ends when every slice's has
(``diagnostics.steps_run`` per round, its last slice's; ended slices are no longer synthesized,
:mod:`sgilo.pipeline.solvers.host_sync`). On training
slices it is 3–5× faster and no worse on average (docs/GENERATIVE_TUNING.md): with a weak prior
the late steps of a round mostly fit noise and aliasing.

Radius rule: ``radii[k]`` (a float) is the absolute ℓ1 radius of every variable in round ``k``;
``None`` (the whole tuple or one entry) means the size-scaled default
``r = ρ_r · n · rms(v₀) = ρ_r · √n · ‖v₀‖₂`` per slice and per variable (``n`` entries), i.e. the
mean absolute change per entry is at most ``ρ_r`` times the variable's root-mean-square size at
round start. ``ρ_r = radius_fraction`` when that is a number; the default ``"auto"`` sets it per
slice from the sampled fraction of k-space, 0.003 at 8× to 0.03 at 4× and beyond
(:mod:`sgilo.pipeline.solvers.radius`). A variable that is 0 at round start (no scale) gets radius 0
under this rule.

Scale ``s``, phase carrier ``c``, the number of measurements ``m``, the generator output
convention (1 channel: magnitude ``(G + 1)/2``; 2 channels: real, imaginary) and the final data
consistency are those of :mod:`sgilo.pipeline.solvers.csgm`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import ConfigDict, Field, model_validator

from sgilo.models.stylegan2.checkpoint import LatentStats
from sgilo.models.stylegan2.generator import Generator
from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers.base import Progress, ReconResult
from sgilo.pipeline.solvers.compiled import synthesis
from sgilo.pipeline.solvers.diagnostics import ILODiagnostics
from sgilo.pipeline.solvers.fit_config import MRIFitConfig
from sgilo.pipeline.solvers.generator_state import frozen
from sgilo.pipeline.solvers.holdout import HoldoutConfig, with_holdout
from sgilo.pipeline.solvers.host_sync import resolve_sync_every
from sgilo.pipeline.solvers.prior_fit_config import PriorFitConfig
from sgilo.pipeline.solvers.problem import (
    ImageProblem,
    Problem,
    check_inputs,
    final_step_lambdas,
    finish_image,
    prepare_problem,
)
from sgilo.pipeline.solvers.projections import (
    check_radius,
    l1_ball_project_around_,
    l1_ball_project_around_nosync_,
)
from sgilo.pipeline.solvers.radius import resolve_radius_fraction
from sgilo.pipeline.solvers.random_source import randn_from
from sgilo.pipeline.solvers.rounds import (
    EarlyStop,
    Round,
    RoundsResult,
    heldout_choice,
    latent_stats_on,
    run_rounds,
)
from sgilo.pipeline.solvers.warm_start import WarmStartConfig, csgm_start


class ILOConfig(MRIFitConfig, WarmStartConfig, HoldoutConfig, PriorFitConfig):
    """ILO parameters (all recorded in ``ReconResult.diagnostics``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: tuple[int, ...] = Field(
        (300, 200, 100, 100),
        min_length=1,
        description="Adam steps per round; the number of rounds is len(steps) (≤ num_blocks)",
    )
    lr: float = Field(0.1, gt=0, description="Adam learning rate")
    lr_rampup: float = Field(0.05, ge=0, le=1, description="fraction of linear lr warm-up")
    lr_rampdown: float = Field(
        0.75, ge=0, le=1, description="fraction of the steps (at the end) of cosine lr decay"
    )
    geocross_weight: float = Field(0.01, ge=0, description="weight of GeoCross(z)")
    radii: tuple[float | None, ...] | None = Field(
        None,
        description="absolute ℓ1 radius per round (None: radius_fraction · √n · ‖v₀‖₂ per "
        "variable)",
    )
    radius_fraction: Annotated[float, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="default radius: allowed mean |change| per entry / rms(v₀); 'auto': from "
        "the sampled fraction of k-space, 0.003 at 8× to 0.03 at 4× (chosen on training "
        "slices, pipeline/solvers/radius.py, docs/GENERATIVE_TUNING.md)",
    )
    noise_blocks_ahead: int = Field(
        2, ge=0, description="noise maps of blocks k … k + this are optimised in round k"
    )
    early_stop: bool = Field(
        True,
        description="end a slice's round once its measurement loss has not improved by a "
        "relative 1e-3 for `patience` steps, the round once every slice's has (docs/SPEED.md, "
        "docs/GENERATIVE_TUNING.md)",
    )
    patience: int = Field(20, ge=1, description="steps without improvement before early stop")
    holdout_refit: bool = Field(
        True,
        description="with holdout > 0: run again on all measurements (same random numbers, "
        "same round lengths) and keep, per slice, the iterate at the round and step the "
        "hold-out run chose (about twice the time)",
    )

    @model_validator(mode="after")
    def _check(self) -> ILOConfig:
        if any(s < 0 for s in self.steps):
            raise ValueError(f"steps must be non-negative, got {self.steps}")
        if self.radii is not None:
            if len(self.radii) != len(self.steps):
                raise ValueError(
                    f"radii needs one entry per round ({len(self.steps)}), got {len(self.radii)}"
                )
            if any(r is not None and not (math.isfinite(r) and r >= 0) for r in self.radii):
                raise ValueError(f"radii must be finite and non-negative, got {self.radii}")
        return self

    @property
    def rounds(self) -> int:
        return len(self.steps)


# ---------------------------------------------------------------------- pure pieces
def round_learning_rate(config: ILOConfig, steps: int, step: int) -> float:
    """Linear warm-up over the first ``lr_rampup``, cosine ramp-down over the last
    ``lr_rampdown`` of the round's steps (PULSE/ILO schedule)."""
    t = step / max(steps, 1)
    ramp = min(1.0, (1.0 - t) / config.lr_rampdown) if config.lr_rampdown > 0 else 1.0
    factor = 0.5 - 0.5 * math.cos(ramp * math.pi)
    warm = math.ceil(config.lr_rampup * steps)
    if warm > 0:
        factor *= min(1.0, (step + 1) / warm)
    return config.lr * factor


def _radius(config: ILOConfig, k: int, v0: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """The ``(B,)`` ℓ1 radius of a variable with round-start value ``v0`` in round ``k``;
    ``fraction`` ``(B,)``: the resolved radius fractions ``ρ_r``
    (:mod:`sgilo.pipeline.solvers.radius`)."""
    given = None if config.radii is None else config.radii[k]
    if given is not None:
        return torch.full((v0.shape[0],), float(given), dtype=v0.dtype, device=v0.device)
    return size_scaled_radius(fraction, v0)


def size_scaled_radius(fraction: float | torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
    """``fraction · √n · ‖v₀‖₂`` per batch element ``(B,)``: a mean absolute change per entry of
    at most ``fraction`` (a float, or one per element ``(B,)``) times the root-mean-square size
    of ``v₀`` (``n`` entries)."""
    flat = v0.detach().reshape(v0.shape[0], -1)
    if isinstance(fraction, torch.Tensor):
        fraction = fraction.to(dtype=flat.dtype, device=flat.device)
    return fraction * math.sqrt(flat.shape[1]) * flat.norm(dim=1)


@torch.no_grad()
def _ball(v: torch.Tensor, v0: torch.Tensor, radius: torch.Tensor) -> None:
    """In place: ``v ← v0 + Π_{‖·‖₁ ≤ radius}(v − v0)`` per batch element (elements inside their
    ball are left as they are)."""
    l1_ball_project_around_(v, v0, radius)


def ball_hook(config: ILOConfig, fraction: torch.Tensor) -> Callable[[Round], Callable[[], None]]:
    """ILO's ``after_step`` for :func:`run_rounds`: per round, a hook doing the sphere
    projections, then the ℓ1 balls of ``config``'s radii around the round start (``fraction``
    ``(B,)``: the resolved radius fractions,
    :func:`sgilo.pipeline.solvers.radius.resolve_radius_fraction`); without host reads when the
    round reads the host only every few steps (``Round.sync_every > 1``)."""

    def balls(rnd: Round) -> Callable[[], None]:
        radii = [_radius(config, rnd.k, v0, fraction) for v0 in rnd.starts]
        ball = _ball
        if rnd.sync_every > 1:  # checked once here, not at every step
            radii = [check_radius(r, v0) for r, v0 in zip(radii, rnd.starts, strict=True)]
            ball = l1_ball_project_around_nosync_

        def project() -> None:
            rnd.sphere_project()
            for v, v0, r in zip(rnd.variables, rnd.starts, radii, strict=True):
                ball(v, v0, r)

        return project

    return balls


# ---------------------------------------------------------------------- the solver
def ilo(
    y: torch.Tensor,
    op: LinearOperator,
    *,
    generator: Generator,
    latent_stats: LatentStats | None,
    config: ILOConfig | None = None,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
) -> ReconResult:
    """ILO reconstruction of the ``B`` slices of ``y`` (see the module docstring).

    ``y``: complex ``(B, *op.oshape)``; ``op``: an MRI operator whose image grid equals the
    generator's resolution; ``latent_stats``: ``μ, σ`` of the Gaussianized latent (required);
    ``rng``: the source of the start (CSGM's restarts, or ``z ~ N(0, I)``);
    ``callback(step, total, message)`` after every Adam step, the start's included (``total =
    init_steps · init_restarts + sum(steps)`` for ``init="csgm"``). Returns the complex
    ``(B, H, W)`` image in the units of ``y``, the per-step mean measurement loss as history, and
    the parameters with per-round losses and the chosen iterate's measurement loss.
    """
    config = ILOConfig() if config is None else config
    start_time = time.perf_counter()
    if latent_stats is None:
        raise ValueError("ilo needs the generator's latent statistics (fit_latent_stats)")
    check_inputs(y, op, generator, "ilo", rounds=config.rounds)
    problem = prepare_problem(
        y,
        op,
        generator,
        phase=config.phase,
        normalize=config.normalize,
        fit_gain=config.fit_gain,
    )
    split = (
        with_holdout(problem, config.holdout, config.holdout_seed)
        if isinstance(problem, Problem)
        else problem
    )
    refit = split is not problem and config.holdout_refit
    if refit and rng is None:  # the second pass replays the first one's random numbers
        rng = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    rng_state = rng.get_state() if refit and rng is not None else None
    dtype, device = problem.dtype, problem.device
    mu, sigma = latent_stats_on(latent_stats, generator, dtype, device)
    one_pass = config.init_steps_total() + sum(config.steps)
    total = one_pass * (2 if refit else 1)
    fraction = resolve_radius_fraction(config.radius_fraction, problem, device)

    def fit(
        target: Problem | ImageProblem,
        done: int,
        stop_at: torch.Tensor | None = None,
        keep_at: torch.Tensor | None = None,
    ) -> tuple[RoundsResult, list[float]]:
        """The start and the rounds on ``target``; ``done`` steps counted before."""
        if config.init == "csgm":
            z, _ = csgm_start(
                target,
                generator,
                mu,
                sigma,
                config,
                rng=rng,
                callback=callback
                and (lambda step, _, message: callback(done + step, total, message)),
                label="ilo start (csgm)",
            )
        else:
            shape = (target.batch, generator.n_latent, generator.style_dim)
            z = randn_from(shape, rng, dtype=dtype, device=device)
        history: list[float] = []
        with frozen(generator):
            result = run_rounds(
                target,
                generator,
                mu,
                sigma,
                z,
                steps=config.steps,
                lr=config.lr,
                geocross_weight=config.geocross_weight,
                noise_blocks_ahead=config.noise_blocks_ahead,
                after_step=ball_hook(config, fraction),
                learning_rate=lambda steps, step: round_learning_rate(config, steps, step),
                history=history,
                early_stop=EarlyStop(config.patience) if config.early_stop else None,
                sync_every=resolve_sync_every(config.host_sync_every, device),
                synthesize=synthesis(generator, config.compile),
                compact=config.compile == "off",
                stop_at=stop_at,
                keep_at=keep_at,
                callback=callback,
                total=total,
                done=done + config.init_steps_total(),
                label="ilo" if keep_at is None else "ilo (all measurements)",
            )
        return result, history

    result, history = fit(split, 0)
    chosen = heldout_choice(result)
    if refit:
        assert rng is not None and rng_state is not None
        assert result.best_round is not None and result.best_step is not None
        rng.set_state(rng_state)
        keep_at = torch.stack([result.best_round, result.best_step], dim=1)
        stop_at = torch.tensor(result.slice_steps_run[: int(result.best_round.max()) + 1])
        result, history = fit(problem, one_pass, stop_at=stop_at, keep_at=keep_at)

    x = finish_image(problem, result.best_x, config)
    best_loss = result.best_loss
    diagnostics = ILODiagnostics(
        config=config,
        phase=problem.phase_model,
        dc_lambdas=final_step_lambdas(problem, config),
        rounds=config.rounds,
        measurement_loss=float(best_loss.mean()),
        measurement_losses=[float(v) for v in best_loss],
        round_losses=result.round_losses,
        round_start_losses=result.round_start_losses,
        steps_run=result.steps_run,
        last_round_losses=result.last_round_losses,
        data_scale=[float(v) for v in problem.scale],
        radius_fractions=[float(v) for v in fraction],
        heldout=chosen,
    )
    return ReconResult(
        image=x,
        history=history,
        seconds=time.perf_counter() - start_time,
        diagnostics=diagnostics,
    )
