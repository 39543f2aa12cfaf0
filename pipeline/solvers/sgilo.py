"""SGILO, score-guided intermediate layer optimisation, for MRI (docs/ALGORITHMS.md §4).

ILO's rounds (:mod:`sgilo.pipeline.solvers.ilo`: the same variables ``z``, noise maps of blocks
``k … k + noise_blocks_ahead`` and ``h_{k−1}``, the same round hand-over
:func:`~sgilo.pipeline.solvers.rounds.init_round_state`, the same loss with
:func:`~sgilo.pipeline.solvers.rounds.geocross`, the same scale/phase/data-consistency conventions)
with ILO's hand-made ℓ1 ball replaced by a learned prior:

- Adam with a constant learning rate (``lr`` 0.05), a fresh optimiser per round;
- after each Adam step, for ``z`` and for the current block output ``h_{k−1}`` (when a score
  model covers that space), the prior step :func:`prior_step`

      v ← v + λ·(D(v) − v) + τ·scale ⊙ ξ,   ξ ~ N(0, I),

  ``D`` one Tweedie denoising step of the score model at time ``t`` (computed in the model's
  standardized space, see :meth:`sgilo.models.score.model.ScoreModel.sgilo_step`); then the sphere
  projection of ``z`` and of the optimised noise maps (as in ILO); then, unless
  ``radius_fraction`` is None (the paper's form), ILO's ℓ1-ball projection around the round start
  as a safeguard (with a weak score model the free block outputs otherwise fit noise and
  aliasing; docs/GENERATIVE_TUNING.md). The noise
  maps and the skip image get no prior step (unless the block model was trained with the skip
  image appended as extra channels, ``data_shape = (C_k + C_img, r, r)``);
- a space without a score model gets no prior step, and ``lam = tau = 0`` with
  ``radius_fraction=None`` leaves every variable untouched, bit for bit: SGILO is then ILO with
  infinite radii and a constant learning rate
  (``ILOConfig(lr_rampup=0, lr_rampdown=0, radii=(huge, …))``, same seed, same steps; equal up to
  the rounding of ILO's ``v₀ + (v − v₀)``);
- the output of a chain is, per slice, as in ILO the iterate of the last round with the lowest
  measurement loss (``keep="best"``; with ``holdout > 0`` the iterate of any round with the lowest
  loss on the held-out measurements, :mod:`sgilo.pipeline.solvers.holdout`), or the final iterate
  (``keep="last"``, the Langevin sample).

Score models: ``score_models`` maps a space to a model with ``data_shape`` and
``sgilo_step(v, lam, tau, t, generator)`` (a :class:`sgilo.models.score.model.ScoreModel`). Keys:
``"z"`` (data shape ``(n_latent, style_dim)``) or a block index ``k`` (int, or the string
``"block<k>"``), the output ``h_k`` of block ``k`` (data shape ``(C_k, r_k, r_k)``, features only,
or ``(C_k + C_img, r_k, r_k)``, features and skip image), used in round ``k + 1``, so only a
schedule of at least ``k + 2`` rounds reaches it (the default, ILO's four rounds, reaches blocks
0–2). ``diagnostics.prior_spaces`` lists the models given, ``diagnostics.prior_spaces_used`` those
the schedule reaches (:func:`used_spaces`); a run with models, a non-zero ``λ`` or ``τ`` and none
reached warns (it would be ILO's fit with no prior step).

Chains: ``chains = K`` independent runs, posterior samples. They run as ONE batch of ``K·B``
(:class:`ChainBatch`, chain-major: row ``c·B + b`` is chain ``c``, slice ``b``): the generator,
Adam and the prior steps see ``K·B`` rows, the image and the measurement loss are computed chain
by chain with the problem's own per-slice tensors (no operator is repeated), so ``K`` chains cost
about one run at batch ``K·B``. Randomness, all from the one ``rng``: first the start, either
(``init="csgm"``, the default, :mod:`sgilo.pipeline.solvers.warm_start`) CSGM's restarts for the
``B`` slices, whose fit is the start of every chain, or (``init="random"``) the initial ``z`` of
every chain in one draw of shape ``(K, B, n_latent, D)`` (``shared_init``: one ``(1, B, …)`` draw,
used by every chain); then at every step the prior noise ``ξ`` of all chains in one draw per space
of shape ``(K·B, …)``. ``K = 1`` draws exactly what a single run draws. Chains differ only through
their rows of ``z`` and ``ξ``, so with a shared start (the CSGM start, or ``shared_init``) and
``tau = 0`` the chains are identical, and otherwise they differ. The result is a
:class:`SGILOResult`: ``image`` the mean of the ``K`` samples (after data consistency, which is
applied per sample), ``samples`` ``(K, B, H, W)`` complex, ``std`` ``(B, H, W)`` the per-pixel
standard deviation of the samples' magnitudes over the chains (population std, 0 for ``K = 1``),
in the units of ``y``.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol

import torch
from pydantic import ConfigDict, Field, model_validator

from sgilo.models.stylegan2.checkpoint import LatentStats
from sgilo.models.stylegan2.generator import Generator, SynthesisState
from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers.base import Progress, ReconResult
from sgilo.pipeline.solvers.chains import ChainBatch
from sgilo.pipeline.solvers.compiled import synthesis
from sgilo.pipeline.solvers.diagnostics import SGILODiagnostics
from sgilo.pipeline.solvers.fit_config import MRIFitConfig
from sgilo.pipeline.solvers.generator_state import frozen
from sgilo.pipeline.solvers.holdout import HoldoutConfig, with_holdout
from sgilo.pipeline.solvers.host_sync import resolve_sync_every
from sgilo.pipeline.solvers.ilo import size_scaled_radius
from sgilo.pipeline.solvers.prior_fit_config import PriorFitConfig
from sgilo.pipeline.solvers.problem import (
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
    heldout_choice,
    latent_stats_on,
    run_rounds,
)
from sgilo.pipeline.solvers.warm_start import WarmStartConfig, csgm_start


class PriorModel(Protocol):
    """What SGILO needs of a score model (:class:`sgilo.models.score.model.ScoreModel` fits)."""

    @property
    def data_shape(self) -> tuple[int, ...]: ...

    def sgilo_step(
        self,
        v: torch.Tensor,
        lam: float,
        tau: float,
        t: float | torch.Tensor = 0.01,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


class SGILOConfig(MRIFitConfig, WarmStartConfig, HoldoutConfig, PriorFitConfig):
    """SGILO parameters (all recorded in ``ReconResult.diagnostics``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: tuple[int, ...] = Field(
        (300, 200, 100, 100),
        min_length=1,
        description="Adam steps per round; the number of rounds is len(steps) (≤ num_blocks); "
        "round k ≥ 1 optimises h_{k−1}, so a block-k score model acts only when there are at "
        "least k + 2 rounds (ILO's schedule: z, h₀, h₁, h₂)",
    )
    lr: float = Field(0.05, gt=0, description="Adam learning rate (constant)")
    lam: float = Field(0.1, ge=0, description="λ: weight of the denoiser pull D(v) − v")
    tau: float = Field(0.025, ge=0, description="τ: std of the Langevin noise (data-std units)")
    t: float = Field(0.01, gt=0, le=1, description="diffusion time of the denoising step")
    chains: int = Field(1, ge=1, description="K: independent chains (posterior samples)")
    shared_init: bool = Field(
        False,
        description="init='random': every chain starts from the same initial z (the CSGM start "
        "is always shared)",
    )
    keep: Literal["best", "last"] = Field(
        "best",
        description="per chain: the last round's iterate with the lowest measurement loss "
        "('best', ILO's rule) or the final iterate ('last')",
    )
    geocross_weight: float = Field(0.01, ge=0, description="weight of GeoCross(z)")
    radius_fraction: Annotated[float, Field(ge=0)] | Literal["auto"] | None = Field(
        "auto",
        description="safeguard: ILO's ℓ1 ball (this fraction, as ILO's radius_fraction; 'auto': "
        "from the sampled fraction of k-space, pipeline/solvers/radius.py) around each round's "
        "start, applied after the prior step (chosen on training slices, "
        "docs/GENERATIVE_TUNING.md); None: the paper's pure score-guided update",
    )
    noise_blocks_ahead: int = Field(
        2, ge=0, description="noise maps of blocks k … k + this are optimised in round k"
    )
    early_stop: bool = Field(
        True,
        description="end a chain's slice's round once its measurement loss has not improved by "
        "a relative 1e-3 for `patience` steps, the round once every one has (as ILO's "
        "early_stop)",
    )
    patience: int = Field(
        10,
        ge=1,
        description="steps without improvement before a slice's round ends (chosen on "
        "training slices with the per-slice stop, docs/GENERATIVE_TUNING.md)",
    )

    @model_validator(mode="after")
    def _check(self) -> SGILOConfig:
        if any(s < 0 for s in self.steps):
            raise ValueError(f"steps must be non-negative, got {self.steps}")
        if not all(math.isfinite(v) for v in (self.lr, self.lam, self.tau, self.t)):
            raise ValueError("lr, lam, tau and t must be finite")
        return self

    @property
    def rounds(self) -> int:
        return len(self.steps)


@dataclass
class SGILOResult(ReconResult):
    """A :class:`ReconResult` (``image`` = the mean of the chains' samples) plus
    ``samples``: complex ``(K, B, H, W)``, one image per chain, and ``std``: float ``(B, H, W)``,
    the per-pixel std of ``|samples|`` over the chains (population std, 0 when ``K = 1``)."""

    samples: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    std: torch.Tensor = field(default_factory=lambda: torch.empty(0))


# ---------------------------------------------------------------------- pure pieces
@torch.no_grad()
def prior_step(
    v: torch.Tensor,
    model: PriorModel,
    lam: float,
    tau: float,
    t: float,
    rng: torch.Generator | None = None,
) -> torch.Tensor:
    """SGILO's prior step on ``v`` ``(B, *model.data_shape)`` (the solver's only use of a score
    model): ``v + λ·(D(v) − v) + τ·scale ⊙ ξ`` (:meth:`ScoreModel.sgilo_step`), ``ξ`` drawn from
    ``rng``. Returns a new detached tensor; ``λ = τ = 0`` returns ``v`` unchanged. ``t`` reaches
    the model as a 0-d tensor on ``v``'s device (filled there: a Python number would be copied
    from the host, which waits for a GPU's queue)."""
    if lam == 0 and tau == 0:
        return v.detach().clone()
    tt = torch.full((), t, dtype=v.dtype, device=v.device)
    return model.sgilo_step(v.detach(), lam, tau, tt, generator=rng)


def space_key(key: str | int, num_blocks: int) -> str | int:
    """``"z"``, or the block index ``k`` of ``k`` / ``"block<k>"`` (``0 ≤ k < num_blocks − 1``:
    the block outputs that rounds optimise)."""
    if key == "z":
        return "z"
    k: int | None = None
    if isinstance(key, int) and not isinstance(key, bool):
        k = key
    elif isinstance(key, str):
        found = re.fullmatch(r"(?:block)?(\d+)", key)
        k = int(found.group(1)) if found else None
    if k is None or not 0 <= k < num_blocks - 1:
        raise ValueError(
            f"score model key {key!r}: expected 'z' or a block index 0 … {num_blocks - 2} "
            f"(int or 'block<k>')"
        )
    return k


def used_spaces(spaces: Iterable[str | int], steps: Sequence[int]) -> list[str | int]:
    """The spaces (normalized keys, :func:`space_key`) whose score model a schedule ``steps``
    actually uses: ``"z"`` when any round runs a step, block ``k`` when round ``k + 1`` exists
    and runs a step (round ``k + 1`` optimises ``h_k``). Sorted as ``sorted(..., key=str)``."""
    out: set[str | int] = set()
    for key in spaces:
        if key == "z":
            if any(s > 0 for s in steps):
                out.add(key)
        elif isinstance(key, int) and key + 1 < len(steps) and steps[key + 1] > 0:
            out.add(key)
    return sorted(out, key=str)


def check_score_models(
    score_models: Mapping[str | int, PriorModel] | None, generator: Generator
) -> dict[str | int, PriorModel]:
    """Normalized keys (:func:`space_key`); ``ValueError`` naming both shapes when a model's
    ``data_shape`` does not fit its space."""
    out: dict[str | int, PriorModel] = {}
    channels = int(generator.config.image_channels)
    for key, model in (score_models or {}).items():
        k = space_key(key, generator.num_blocks)
        if k in out:
            raise ValueError(f"two score models for the space {k!r}")
        shape = tuple(int(s) for s in model.data_shape)
        if k == "z":
            want = [(generator.n_latent, generator.style_dim)]
            what = "the latent z is"
        else:
            assert isinstance(k, int)
            r, c = generator.block_resolution(k), generator.block_channels(k)
            want = [(c, r, r), (c + channels, r, r)]
            what = f"block {k}'s features are"
        if shape not in want:
            alt = f" (or {want[1]} with the skip image)" if len(want) > 1 else ""
            raise ValueError(
                f"score model for space {key!r} has data_shape {shape}, but {what} {want[0]}{alt}"
            )
        out[k] = model
    return out


# ---------------------------------------------------------------------- the solver
def sgilo(
    y: torch.Tensor,
    op: LinearOperator,
    *,
    generator: Generator,
    latent_stats: LatentStats | None,
    score_models: Mapping[str | int, PriorModel] | None = None,
    config: SGILOConfig | None = None,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
) -> SGILOResult:
    """SGILO reconstruction of the ``B`` slices of ``y`` (see the module docstring).

    ``y``: complex ``(B, *op.oshape)``; ``op``: an MRI operator on the generator's grid;
    ``latent_stats``: ``μ, σ`` of the Gaussianized latent (required); ``score_models``: the
    priors per space (none: SGILO without prior = ILO without ball); ``rng``: the source of the
    start and of the Langevin noise; ``callback(step, total, message)`` after every Adam step of
    the start and of the batched chains (a chain step counted as ``K`` steps: ``total =
    init_steps · init_restarts + chains · sum(steps)`` for ``init="csgm"``).
    Returns an :class:`SGILOResult`; ``history`` is the per-step mean measurement loss (over a
    chain's slices), chain after chain.
    """
    config = SGILOConfig() if config is None else config
    start_time = time.perf_counter()
    if latent_stats is None:
        raise ValueError("sgilo needs the generator's latent statistics (fit_latent_stats)")
    check_inputs(y, op, generator, "sgilo", rounds=config.rounds)
    models = check_score_models(score_models, generator)
    acting = used_spaces(models, config.steps)
    if models and not acting and (config.lam > 0 or config.tau > 0):
        blocks = [k for k in models if k != "z"]
        warnings.warn(
            f"sgilo: none of the score models ({', '.join(map(str, sorted(models, key=str)))}) "
            f"acts in a schedule of {config.rounds} round(s): a block-k model needs at least "
            f"k + 2 rounds (here {min(blocks) + 2 if blocks else 1}); no prior step runs, so "
            "this is ILO's fit without its score step (give more rounds in steps)",
            UserWarning,
            stacklevel=2,
        )
    problem = prepare_problem(
        y,
        op,
        generator,
        phase=config.phase,
        normalize=config.normalize,
        fit_gain=config.fit_gain,
    )
    if isinstance(problem, Problem):
        problem = with_holdout(problem, config.holdout, config.holdout_seed)
    dtype, device = problem.dtype, problem.device
    mu, sigma = latent_stats_on(latent_stats, generator, dtype, device)
    batch = problem.batch
    fraction = (
        None
        if config.radius_fraction is None
        else resolve_radius_fraction(config.radius_fraction, problem, device).repeat(
            config.chains
        )  # chain-major, as the K·B batch of the rounds
    )

    def draw_z(count: int) -> torch.Tensor:
        shape = (count, batch, generator.n_latent, generator.style_dim)
        return randn_from(shape, rng, dtype=dtype, device=device)

    def prior_on_h(h: SynthesisState, model: PriorModel) -> None:
        """In place: the prior step on h's features (and skip image, when the model covers it)."""
        with_skip = tuple(model.data_shape)[0] != h.features.shape[1]
        v = torch.cat([h.features, h.skip], dim=1) if with_skip else h.features
        new = prior_step(v, model, config.lam, config.tau, config.t, rng)
        c = h.features.shape[1]
        h.features.copy_(new[:, :c])
        if with_skip:
            h.skip.copy_(new[:, c:])

    def priors(rnd: Round) -> Callable[[], None]:
        """SGILO's after-step hook: the prior steps on z and h_{k−1}, then the sphere
        projections."""
        h_model = models.get(rnd.k - 1) if rnd.h is not None else None
        radii = [] if fraction is None else [size_scaled_radius(fraction, v0) for v0 in rnd.starts]
        ball = l1_ball_project_around_
        if radii and rnd.sync_every > 1:  # no host reads in the step; radii checked here
            radii = [check_radius(r, v0) for r, v0 in zip(radii, rnd.starts, strict=True)]
            ball = l1_ball_project_around_nosync_

        def step() -> None:
            if "z" in models:
                rnd.z.copy_(prior_step(rnd.z, models["z"], config.lam, config.tau, config.t, rng))
            if rnd.h is not None and h_model is not None:
                prior_on_h(rnd.h, h_model)
            rnd.sphere_project()
            if radii:
                for v, v0, r in zip(rnd.variables, rnd.starts, radii, strict=True):
                    ball(v, v0, r)

        return step

    chains = config.chains
    start_steps = config.init_steps_total()
    # all chains run as one batch of K·B (chain-major: row c·B + b is chain c, slice b)
    if config.init == "csgm":  # one CSGM fit per slice, the start of every chain
        z, _ = csgm_start(
            problem,
            generator,
            mu,
            sigma,
            config,
            rng=rng,
            callback=callback
            and (
                lambda done, _, message: callback(
                    done, start_steps + chains * sum(config.steps), message
                )
            ),
            label="sgilo start (csgm)",
        )
        z = z[None]
    else:
        z = draw_z(1 if config.shared_init else chains)
    chained = ChainBatch(problem, chains)
    step_losses: list[torch.Tensor] = []  # (K·B,) per step
    progress = None
    if callback is not None:
        cb = callback

        def progress(done: int, total: int, message: str) -> None:
            cb(start_steps + chains * done, start_steps + chains * total, message)

    with frozen(generator):
        result = run_rounds(
            chained,  # type: ignore[arg-type]
            generator,
            mu,
            sigma,
            z.expand(chains, -1, -1, -1).reshape(chains * batch, *z.shape[2:]),
            steps=config.steps,
            lr=config.lr,
            geocross_weight=config.geocross_weight,
            noise_blocks_ahead=config.noise_blocks_ahead,
            after_step=priors,
            keep_last=config.keep == "last",
            history=[],
            slice_history=step_losses,
            early_stop=EarlyStop(config.patience) if config.early_stop else None,
            sync_every=resolve_sync_every(config.host_sync_every, device),
            synthesize=synthesis(generator, config.compile),
            compact=config.compile == "off",
            rng=rng,
            callback=progress,
            total=sum(config.steps),
            label="sgilo",
        )
    samples = [finish_image(problem, x, config) for x in result.best_x.split(batch)]

    def per_chain(values: list[torch.Tensor]) -> torch.Tensor:
        """``(K·B,)`` per entry → ``(K, len(values))`` means over each chain's slices."""
        if not values:
            return torch.zeros(chains, 0, dtype=torch.float64)
        return torch.stack(values, dim=1).reshape(chains, batch, -1).mean(dim=1)

    history = per_chain(step_losses).reshape(-1).tolist()  # chain after chain
    chain_losses = result.best_loss.reshape(chains, batch).tolist()
    chain_round_losses = per_chain(result.round_slice_losses).tolist()
    chain_round_start_losses = per_chain(result.round_start_slice_losses).tolist()

    stacked = torch.stack(samples)  # (K, B, H, W)
    std = (stacked.abs() if stacked.is_complex() else stacked).std(dim=0, correction=0)
    diagnostics = SGILODiagnostics(
        config=config,
        phase=problem.phase_model,
        dc_lambdas=final_step_lambdas(problem, config),
        rounds=config.rounds,
        prior_spaces=sorted(models, key=str),
        prior_spaces_used=acting,
        measurement_loss=float(torch.tensor(chain_losses).mean()),
        measurement_losses=chain_losses,
        round_losses=chain_round_losses,
        round_start_losses=chain_round_start_losses,
        steps_run=result.steps_run,
        data_scale=[float(v) for v in problem.scale],
        radius_fractions=[] if fraction is None else [float(v) for v in fraction[:batch]],
        heldout=heldout_choice(result),
    )
    return SGILOResult(
        image=stacked.mean(dim=0),
        history=history,
        seconds=time.perf_counter() - start_time,
        diagnostics=diagnostics,
        samples=stacked,
        std=std,
    )
