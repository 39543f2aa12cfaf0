"""SGILO, score-guided intermediate layer optimisation, for MRI (docs ALGORITHMS.md §4).

ILO's rounds (:mod:`pipeline.solvers.ilo`: the same variables ``z``, noise maps of blocks
``k … k + noise_blocks_ahead`` and ``h_{k−1}``, the same round hand-over
:func:`~pipeline.solvers.ilo.init_round_state`, the same loss with
:func:`~pipeline.solvers.ilo.geocross`, the same scale/phase/data-consistency conventions) with
ILO's hand-made ℓ1 ball replaced by a learned prior:

- Adam with a constant learning rate (``lr`` 0.05), a fresh optimiser per round;
- after each Adam step, for ``z`` and for the current block output ``h_{k−1}`` (when a score
  model covers that space), the prior step :func:`prior_step`

      v ← v + λ·(D(v) − v) + τ·scale ⊙ ξ,   ξ ~ N(0, I),

  ``D`` one Tweedie denoising step of the score model at time ``t`` (computed in the model's
  standardized space, see :meth:`models.score.model.ScoreModel.sgilo_step`); then the sphere
  projection of ``z`` and of the optimised noise maps (as in ILO); no ℓ1 projection. The noise
  maps and the skip image get no prior step (unless the block model was trained with the skip
  image appended as extra channels, ``data_shape = (C_k + C_img, r, r)``);
- a space without a score model gets no prior step, and ``lam = tau = 0`` leaves every variable
  untouched, bit for bit: SGILO is then ILO with infinite radii and a constant learning rate
  (``ILOConfig(lr_rampup=0, lr_rampdown=0, radii=(huge, …))``, same seed, same steps; equal up to
  the rounding of ILO's ``v₀ + (v − v₀)``);
- the output of a chain is, per slice, as in ILO the iterate of the last round with the lowest
  measurement loss (``keep="best"``), or the final iterate (``keep="last"``, the Langevin sample).

Score models: ``score_models`` maps a space to a model with ``data_shape`` and
``sgilo_step(v, lam, tau, t, generator)`` (a :class:`models.score.model.ScoreModel`). Keys:
``"z"`` (data shape ``(n_latent, style_dim)``) or a block index ``k`` (int, or the string
``"block<k>"``), the output ``h_k`` of block ``k`` (data shape ``(C_k, r_k, r_k)``, features only,
or ``(C_k + C_img, r_k, r_k)``, features and skip image), used in round ``k + 1``.

Chains: ``chains = K`` independent runs, posterior samples. They run one after the other (a loop,
not a batch of ``B·K``: repeating an operator's per-slice mask/maps/trajectory is operator
specific), all drawing from the one ``rng``: chain ``c`` first draws its initial ``z`` (unless
``shared_init``: one ``z`` drawn before the first chain, used by every chain), then the prior
noise ``ξ`` of its steps. So with ``shared_init`` and ``tau = 0`` every chain is the same
computation and the chains are identical. The result is a :class:`SGILOResult`: ``image`` the mean
of the ``K`` samples (after data consistency, which is applied per sample), ``samples``
``(K, B, H, W)`` complex, ``std`` ``(B, H, W)`` the per-pixel standard deviation of the samples'
magnitudes over the chains (population std, 0 for ``K = 1``), in the units of ``y``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.stylegan2.checkpoint import LatentStats, gaussianized_to_w
from models.stylegan2.generator import Generator, SynthesisState
from operators.base import LinearOperator
from operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI
from pipeline.solvers.base import Progress, ReconResult
from pipeline.solvers.classical import data_scale
from pipeline.solvers.csgm import PhaseModel
from pipeline.solvers.ilo import geocross, init_round_state
from pipeline.solvers.latent_common import (
    calibration_phase,
    data_consistency,
    freeze,
    latent_dtype_device,
    num_measurements,
    unfreeze,
)
from pipeline.solvers.projections import sphere_project


class PriorModel(Protocol):
    """What SGILO needs of a score model (:class:`models.score.model.ScoreModel` fits)."""

    @property
    def data_shape(self) -> tuple[int, ...]: ...

    def sgilo_step(
        self,
        v: torch.Tensor,
        lam: float,
        tau: float,
        t: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


class SGILOConfig(BaseModel):
    """SGILO parameters (all recorded in ``ReconResult.params``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: tuple[int, ...] = Field(
        (300, 300),
        min_length=1,
        description="Adam steps per round; the number of rounds is len(steps) (≤ num_blocks)",
    )
    lr: float = Field(0.05, gt=0, description="Adam learning rate (constant)")
    lam: float = Field(0.1, ge=0, description="λ: weight of the denoiser pull D(v) − v")
    tau: float = Field(0.025, ge=0, description="τ: std of the Langevin noise (data-std units)")
    t: float = Field(0.01, gt=0, le=1, description="diffusion time of the denoising step")
    chains: int = Field(1, ge=1, description="K: independent chains (posterior samples)")
    shared_init: bool = Field(False, description="every chain starts from the same initial z")
    keep: Literal["best", "last"] = Field(
        "best",
        description="per chain: the last round's iterate with the lowest measurement loss "
        "('best', ILO's rule) or the final iterate ('last')",
    )
    geocross_weight: float = Field(0.01, ge=0, description="weight of GeoCross(z)")
    noise_blocks_ahead: int = Field(
        2, ge=0, description="noise maps of blocks k … k + this are optimised in round k"
    )
    phase: PhaseModel = Field(
        "auto",
        description="phase of a 1-channel (magnitude) generator: 'from-calibration' or 'none'; "
        "'auto' = from-calibration for 1-channel and none for 2-channel generators",
    )
    normalize: bool = Field(True, description="divide y by the data scale s, multiply back")
    data_consistency: bool = Field(True, description="final data-consistency step")
    dc_iterations: int = Field(10, ge=1, description="CG steps of multi-coil data consistency")
    dc_weight: float = Field(1e-2, gt=0, description="μ of the multi-coil data consistency")

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
    ``rng``. Returns a new detached tensor; ``λ = τ = 0`` returns ``v`` unchanged."""
    if lam == 0 and tau == 0:
        return v.detach().clone()
    return model.sgilo_step(v.detach(), lam, tau, t, generator=rng)


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
    initial ``z`` and of the Langevin noise; ``callback(step, total, message)`` after every Adam
    step (``total = chains · sum(steps)``). Returns an :class:`SGILOResult`; ``history`` is the
    per-step mean measurement loss, chain after chain.
    """
    config = SGILOConfig() if config is None else config
    start_time = time.perf_counter()
    if latent_stats is None:
        raise ValueError("sgilo needs the generator's latent statistics (fit_latent_stats)")
    if not isinstance(op, SingleCoilMRI | MultiCoilMRI | NonCartesianMRI):
        raise ValueError(f"sgilo needs an MRI operator, got {type(op).__name__}")
    if not torch.is_complex(y) or y.ndim < 2 or tuple(y.shape[1:]) != op.oshape:
        raise ValueError(
            f"y must be complex (B, {', '.join(map(str, op.oshape))}) for {type(op).__name__}, "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    resolution = int(generator.config.resolution)
    channels = int(generator.config.image_channels)
    if tuple(op.ishape) != (resolution, resolution):
        raise ValueError(
            f"the operator's image grid {tuple(op.ishape)} differs from the generator resolution "
            f"({resolution}, {resolution}); resampling is not implemented"
        )
    if channels not in (1, 2):
        raise ValueError(
            f"sgilo needs a 1-channel (magnitude) or 2-channel (real, imaginary) generator, "
            f"got {channels} channels"
        )
    if config.rounds > generator.num_blocks:
        raise ValueError(
            f"{config.rounds} rounds need as many synthesis blocks; the generator has "
            f"{generator.num_blocks}"
        )
    models = check_score_models(score_models, generator)
    phase = config.phase
    if phase == "auto":
        phase = "from-calibration" if channels == 1 else "none"
    if phase == "from-calibration" and channels == 2:
        raise ValueError("phase='from-calibration' is for 1-channel generators only")

    batch = y.shape[0]
    scale = data_scale(y, op) if config.normalize else torch.ones(batch, dtype=y.real.dtype)
    scale = scale.to(device=y.device, dtype=y.real.dtype)
    y_n = y / scale.view(-1, *([1] * (y.ndim - 1)))
    carrier = (
        calibration_phase(y_n, op)
        if phase == "from-calibration"
        else torch.ones(batch, *op.ishape, dtype=y.dtype, device=y.device)
    )
    m = num_measurements(op, y)
    dtype, device = latent_dtype_device(generator, y)
    mu = latent_stats.mu.to(device=device, dtype=dtype)
    sigma = latent_stats.sigma.to(device=device, dtype=dtype)
    if mu.shape != (generator.style_dim,) or sigma.shape != (generator.style_dim,):
        raise ValueError(
            f"latent_stats must be ({generator.style_dim},) vectors, got "
            f"{tuple(mu.shape)} and {tuple(sigma.shape)}"
        )

    def image_of(z: torch.Tensor, noises: list[torch.Tensor], k: int, h) -> torch.Tensor:
        g = generator.synthesize(gaussianized_to_w(z, mu, sigma), noises, start=k, h=h)
        assert isinstance(g, torch.Tensor)
        if channels == 1:
            x = ((g[:, 0] + 1) / 2).to(y.dtype)
        else:
            x = torch.complex(g[:, 0], g[:, 1]).to(y.dtype)
        return carrier * x

    def measurement_loss(x: torch.Tensor) -> torch.Tensor:
        r = op.A(x) - y_n
        return r.abs().pow(2).reshape(batch, -1).sum(dim=1) / m

    def draw_z() -> torch.Tensor:
        shape = (batch, generator.n_latent, generator.style_dim)
        return torch.randn(*shape, generator=rng, dtype=dtype).to(device)

    def prior_on_h(h: SynthesisState, model: PriorModel) -> None:
        """In place: the prior step on h's features (and skip image, when the model covers it)."""
        with_skip = tuple(model.data_shape)[0] != h.features.shape[1]
        v = torch.cat([h.features, h.skip], dim=1) if with_skip else h.features
        new = prior_step(v, model, config.lam, config.tau, config.t, rng)
        c = h.features.shape[1]
        h.features.copy_(new[:, :c])
        if with_skip:
            h.skip.copy_(new[:, c:])

    total = config.chains * sum(config.steps)
    done = 0
    history: list[float] = []
    shared_z = draw_z() if config.shared_init else None

    def run_chain(chain: int) -> tuple[torch.Tensor, torch.Tensor, list[float], list[float]]:
        """One chain: its kept image (normalized units), its loss (B,), round start/end losses."""
        nonlocal done
        z = shared_z.clone() if shared_z is not None else draw_z()
        noises = [
            n.detach().to(dtype).expand(batch, -1, -1, -1).clone()
            for n in generator.noise_buffers()
        ]
        h: SynthesisState | None = None
        round_losses: list[float] = []
        round_start_losses: list[float] = []
        best_loss = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
        best_x = torch.zeros(batch, *op.ishape, dtype=y.dtype, device=device)
        for k, steps in enumerate(config.steps):
            last = k == config.rounds - 1
            with torch.no_grad():
                h = init_round_state(generator, gaussianized_to_w(z, mu, sigma), noises, k, h)
            active = sorted(
                {
                    i
                    for b in range(k, min(k + config.noise_blocks_ahead + 1, generator.num_blocks))
                    for i in generator.block_noise_indices(b)
                }
            )
            z = z.detach().clone().requires_grad_(True)
            noises = [n.detach().clone() for n in noises]
            for i in active:
                noises[i].requires_grad_(True)
            variables: list[torch.Tensor] = [z, *(noises[i] for i in active)]
            if h is not None:
                h = SynthesisState(
                    h.features.detach().clone().requires_grad_(True),
                    h.skip.detach().clone().requires_grad_(True),
                )
                variables += [h.features, h.skip]
            z_norms = z.detach().norm(dim=-1)  # (B, n_latent)
            noise_norms = [noises[i].detach().reshape(batch, -1).norm(dim=1) for i in active]
            h_model = models.get(k - 1) if h is not None else None
            optimizer = torch.optim.Adam(variables, lr=config.lr)
            for step in range(steps + 1):
                x = image_of(z, noises, k, h)
                data = measurement_loss(x)
                current = data.detach().to(torch.float64)
                if step == 0:
                    round_start_losses.append(float(current.mean()))
                if last:
                    keep = current < best_loss if config.keep == "best" else step == steps
                    keep = torch.as_tensor(keep, device=device).expand(batch)
                    best_loss = torch.where(keep, current, best_loss)
                    best_x = torch.where(keep[:, None, None], x.detach(), best_x)
                if step == steps:  # the final iterate is evaluated, not stepped
                    round_losses.append(float(current.mean()))
                    break
                history.append(float(current.mean()))
                loss = (data + config.geocross_weight * geocross(z).to(data.dtype)).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    if "z" in models:
                        z.copy_(prior_step(z, models["z"], config.lam, config.tau, config.t, rng))
                    if h is not None and h_model is not None:
                        prior_on_h(h, h_model)
                    z.copy_(sphere_project(z, z_norms))
                    for j, i in enumerate(active):
                        noises[i].copy_(sphere_project(noises[i], noise_norms[j]))
                done += 1
                if callback:
                    callback(done, total, f"sgilo chain {chain} round {k}")
        return best_x, best_loss, round_losses, round_start_losses

    samples: list[torch.Tensor] = []
    chain_losses: list[list[float]] = []
    chain_round_losses: list[list[float]] = []
    chain_round_start_losses: list[list[float]] = []
    frozen = freeze(generator)
    try:
        for chain in range(config.chains):
            best_x, best_loss, ends, starts = run_chain(chain)
            x = best_x * scale.view(-1, 1, 1).to(y.dtype)
            if config.data_consistency:
                x = data_consistency(
                    x, y, op, weight=config.dc_weight, iterations=config.dc_iterations
                )
            samples.append(x.detach())
            chain_losses.append([float(v) for v in best_loss])
            chain_round_losses.append(ends)
            chain_round_start_losses.append(starts)
    finally:
        unfreeze(generator, frozen)

    stacked = torch.stack(samples)  # (K, B, H, W)
    std = stacked.abs().std(dim=0, correction=0)
    params: dict[str, float | int | str] = {
        **{
            key: (json.dumps(v) if v is None or isinstance(v, tuple) else v)
            for key, v in config.model_dump().items()
            if key != "phase"
        },
        "phase": phase,
        "rounds": config.rounds,
        "prior_spaces": json.dumps(sorted(models, key=str)),
        "measurement_loss": float(torch.tensor(chain_losses).mean()),
        "measurement_losses": json.dumps(chain_losses),
        "round_losses": json.dumps(chain_round_losses),
        "round_start_losses": json.dumps(chain_round_start_losses),
        "data_scale": json.dumps([float(v) for v in scale]),
    }
    return SGILOResult(
        image=stacked.mean(dim=0),
        history=history,
        seconds=time.perf_counter() - start_time,
        params=params,
        samples=stacked,
        std=std,
    )
