"""ILO, intermediate layer optimisation, for MRI (docs ALGORITHMS.md §3, MRI specifics of §5).

Variables, per slice (batched over the ``B`` slices of ``y``):

- ``z`` ``(B, n_latent, D)``: Gaussianized w+ latents, ``w = LeakyReLU_0.2(σ ⊙ z + μ)`` row by row
  (``μ, σ`` = :class:`models.stylegan2.LatentStats`; the mapping network is not run);
- the noise maps ``(B, 1, r, r)`` (initialised from the generator's fixed buffers);
- ``h_{k−1}`` = (features, skip image), the output of block ``k − 1`` (rounds ``k ≥ 1``).

Round ``k = 0 … len(steps) − 1`` (``len(steps) ≤ num_blocks``):

1. for ``k ≥ 1``, ``h_{k−1}`` is initialised by running block ``k − 1`` on the previous round's
   final iterate (from the constant for ``k = 1``, from the previous ``h_{k−2}`` otherwise; see
   :func:`init_round_state`), so the round starts from exactly the image the previous one ended
   with; the image is ``x = G_{≥k}(h_{k−1}; w(z), noises)`` (``synthesize(..., start=k, h=h)``);
2. optimised: all rows of ``z``, the noise maps of blocks ``k … k + noise_blocks_ahead`` and
   ``h_{k−1}``; a fresh Adam (``lr``), learning-rate warm-up over the first ``lr_rampup`` of the
   steps and a cosine ramp-down over the last ``lr_rampdown``;
3. loss per slice ``‖A(c ⊙ x) − y/s‖² / m + geocross_weight · GeoCross(z)``, GeoCross over the
   rows of ``z`` (:func:`geocross`) in every round;
4. after each Adam step: sphere projection (each row of ``z`` and each optimised noise map back to
   its ℓ2 norm at round start), then ``v ← v₀ + Π_{‖·‖₁ ≤ r}(v − v₀)`` for ``z``, each optimised
   noise map, and the features and the skip image of ``h`` (separate balls), per slice, ``v₀`` the
   round-start value;
5. the output is, per slice, the iterate of the LAST round with the lowest measurement loss
   ``‖A(c ⊙ x) − y/s‖² / m`` (the round start and the final iterate included).

Radius rule: ``radii[k]`` (a float) is the absolute ℓ1 radius of every variable in round ``k``;
``None`` (the whole tuple or one entry) means the size-scaled default
``r = radius_fraction · n · rms(v₀) = radius_fraction · √n · ‖v₀‖₂`` per slice and per variable
(``n`` entries), i.e. the mean absolute change per entry is at most ``radius_fraction`` times the
variable's root-mean-square size at round start. A variable that is 0 at round start (no scale)
gets radius 0 under this rule.

Scale ``s``, phase carrier ``c``, the number of measurements ``m``, the generator output
convention (1 channel: magnitude ``(G + 1)/2``; 2 channels: real, imaginary) and the final data
consistency are those of :mod:`pipeline.solvers.csgm`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.stylegan2.checkpoint import LatentStats, gaussianized_to_w
from models.stylegan2.generator import Generator, SynthesisState
from operators.base import LinearOperator
from operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI
from pipeline.solvers.base import Progress, ReconResult
from pipeline.solvers.classical import data_scale
from pipeline.solvers.csgm import PhaseModel
from pipeline.solvers.latent_common import (
    calibration_phase,
    data_consistency,
    freeze,
    latent_dtype_device,
    num_measurements,
    unfreeze,
)
from pipeline.solvers.projections import l1_ball_project, sphere_project


class ILOConfig(BaseModel):
    """ILO parameters (all recorded in ``ReconResult.params``)."""

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
    radius_fraction: float = Field(
        0.3, ge=0, description="default radius: allowed mean |change| per entry / rms(v₀)"
    )
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
def geocross(z: torch.Tensor) -> torch.Tensor:
    """PULSE's GeoCross over the rows of ``z`` ``(B, n, D)`` → ``(B,)``: the mean over row pairs
    ``i < j`` of the squared geodesic angle ``(2·atan2(‖z_i − z_j‖, ‖z_i + z_j‖))²``."""
    n = z.shape[1]
    if n < 2:
        return z.new_zeros(z.shape[0])
    i, j = torch.triu_indices(n, n, offset=1, device=z.device)
    a, b = z[:, i], z[:, j]
    angle = 2 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))
    return angle.pow(2).mean(dim=1)


def init_round_state(
    generator: Generator,
    ws: torch.Tensor,
    noises: Sequence[torch.Tensor],
    k: int,
    h_prev: SynthesisState | None = None,
) -> SynthesisState | None:
    """``h_{k−1}`` for round ``k`` from the previous round's solution (``ws``, ``noises`` and, for
    ``k ≥ 2``, its optimised ``h_prev = h_{k−2}``): block ``k − 1`` run on it. ``None`` for
    ``k = 0``. Then ``synthesize(ws, noises, start=k, h=result)`` is the previous round's image."""
    if k == 0:
        return None
    if k == 1:
        return generator.block_output(0, ws, noises)
    if h_prev is None:
        raise ValueError(f"round {k} needs the previous round's h_{k - 2}")
    state = generator.synthesize(ws, noises, start=k - 1, end=k, h=h_prev)
    assert isinstance(state, SynthesisState)
    return state


def _learning_rate(config: ILOConfig, steps: int, step: int) -> float:
    """Linear warm-up over the first ``lr_rampup``, cosine ramp-down over the last
    ``lr_rampdown`` of the round's steps (PULSE/ILO schedule)."""
    t = step / max(steps, 1)
    ramp = min(1.0, (1.0 - t) / config.lr_rampdown) if config.lr_rampdown > 0 else 1.0
    factor = 0.5 - 0.5 * math.cos(ramp * math.pi)
    warm = math.ceil(config.lr_rampup * steps)
    if warm > 0:
        factor *= min(1.0, (step + 1) / warm)
    return config.lr * factor


def _radius(config: ILOConfig, k: int, v0: torch.Tensor) -> torch.Tensor:
    """The ``(B,)`` ℓ1 radius of a variable with round-start value ``v0`` in round ``k``."""
    given = None if config.radii is None else config.radii[k]
    if given is not None:
        return torch.full((v0.shape[0],), float(given), dtype=v0.dtype, device=v0.device)
    flat = v0.detach().reshape(v0.shape[0], -1)
    return config.radius_fraction * math.sqrt(flat.shape[1]) * flat.norm(dim=1)


@torch.no_grad()
def _ball(v: torch.Tensor, v0: torch.Tensor, radius: torch.Tensor) -> None:
    """In place: ``v ← v0 + Π_{‖·‖₁ ≤ radius}(v − v0)`` per batch element."""
    v.copy_(v0 + l1_ball_project(v - v0, radius))


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
    ``rng``: the source of the initial ``z ~ N(0, I)``; ``callback(step, total, message)`` after
    every Adam step (``total = sum(steps)``). Returns the complex ``(B, H, W)`` image in the units
    of ``y``, the per-step mean measurement loss as history, and the parameters with per-round
    losses and the chosen iterate's measurement loss.
    """
    config = ILOConfig() if config is None else config
    start_time = time.perf_counter()
    if latent_stats is None:
        raise ValueError("ilo needs the generator's latent statistics (fit_latent_stats)")
    if not isinstance(op, SingleCoilMRI | MultiCoilMRI | NonCartesianMRI):
        raise ValueError(f"ilo needs an MRI operator, got {type(op).__name__}")
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
            f"ilo needs a 1-channel (magnitude) or 2-channel (real, imaginary) generator, "
            f"got {channels} channels"
        )
    if config.rounds > generator.num_blocks:
        raise ValueError(
            f"{config.rounds} rounds need as many synthesis blocks; the generator has "
            f"{generator.num_blocks}"
        )
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

    z = torch.randn(batch, generator.n_latent, generator.style_dim, generator=rng, dtype=dtype)
    z = z.to(device)
    noises = [
        n.detach().to(dtype).expand(batch, -1, -1, -1).clone() for n in generator.noise_buffers()
    ]
    h: SynthesisState | None = None
    total = sum(config.steps)
    done = 0
    history: list[float] = []
    round_losses: list[float] = []
    round_start_losses: list[float] = []
    last_round_losses: list[list[float]] = []
    best_loss = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
    best_x = torch.zeros(batch, *op.ishape, dtype=y.dtype, device=device)
    frozen = freeze(generator)
    try:
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
            starts = [v.detach().clone() for v in variables]
            radii = [_radius(config, k, v0) for v0 in starts]
            z_norms = starts[0].norm(dim=-1)  # (B, n_latent)
            noise_norms = [starts[1 + j].reshape(batch, -1).norm(dim=1) for j in range(len(active))]
            optimizer = torch.optim.Adam(variables, lr=config.lr)
            iterate_losses: list[torch.Tensor] = []
            for step in range(steps + 1):
                x = image_of(z, noises, k, h)
                data = measurement_loss(x)
                current = data.detach().to(torch.float64)
                if step == 0:
                    round_start_losses.append(float(current.mean()))
                if last:
                    iterate_losses.append(current)
                    wins = current < best_loss
                    best_loss = torch.where(wins, current, best_loss)
                    best_x = torch.where(wins[:, None, None], x.detach(), best_x)
                if step == steps:  # the final iterate is evaluated, not stepped
                    round_losses.append(float(current.mean()))
                    break
                history.append(float(current.mean()))
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(config, steps, step)
                loss = (data + config.geocross_weight * geocross(z).to(data.dtype)).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    z.copy_(sphere_project(z, z_norms))
                    for j, i in enumerate(active):
                        noises[i].copy_(sphere_project(noises[i], noise_norms[j]))
                    for v, v0, r in zip(variables, starts, radii, strict=True):
                        _ball(v, v0, r)
                done += 1
                if callback:
                    callback(done, total, f"ilo round {k}")
            if last:
                stacked = torch.stack(iterate_losses, dim=1)  # (B, steps + 1)
                last_round_losses = [[float(v) for v in row] for row in stacked]
    finally:
        unfreeze(generator, frozen)

    x = best_x * scale.view(-1, 1, 1).to(y.dtype)
    if config.data_consistency:
        x = data_consistency(x, y, op, weight=config.dc_weight, iterations=config.dc_iterations)
    params: dict[str, float | int | str] = {
        **{
            key: (json.dumps(v) if v is None or isinstance(v, tuple) else v)
            for key, v in config.model_dump().items()
            if key != "phase"
        },
        "phase": phase,
        "rounds": config.rounds,
        "measurement_loss": float(best_loss.mean()),
        "measurement_losses": json.dumps([float(v) for v in best_loss]),
        "round_losses": json.dumps(round_losses),
        "round_start_losses": json.dumps(round_start_losses),
        "last_round_losses": json.dumps(last_round_losses),
        "data_scale": json.dumps([float(v) for v in scale]),
    }
    return ReconResult(
        image=x.detach(), history=history, seconds=time.perf_counter() - start_time, params=params
    )
