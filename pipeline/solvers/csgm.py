"""CSGM for MRI (docs/ALGORITHMS.md §2, with the MRI specifics of §5).

    ẑ = argmin_z  ‖A(c ⊙ x(z)) − y/s‖² / m + λ ‖z‖²,      x̂ = s · c ⊙ x(ẑ)   (then data consistency)

per slice, batched over the ``B`` slices of ``y``:

- ``z`` ``(B, style_dim)`` is the *input* latent: ``w = mapping(z)`` is broadcast to all
  ``n_latent`` rows of w+ and synthesised with the generator's fixed noise buffers;
- generator output convention: 1 channel = a magnitude in ``[−1, 1]``, ``x = (G + 1)/2 ∈ [0, 1]``;
  2 channels = (real, imaginary), ``x = G₀ + i G₁``; 3 channels are refused;
- scale: ``s`` is the robust data scale of :func:`sgilo.pipeline.solvers.classical.data_scale` (99th
  percentile of the zero-filled magnitude), so the generator's ``[0, 1]`` range matches the
  normalised data ``y/s``; the result is multiplied back by ``s``;
- phase (1-channel generators only): ``c = e^{iφ}`` with ``φ`` the phase of the low-resolution
  image reconstructed from the fully sampled centre columns of k-space alone (Cartesian masks),
  or ``c = 1`` (``phase="none"``). Two-channel generators model the phase themselves;
- ``m``: the number of measurements (sampled k-space entries × coils; all of ``y`` for
  non-Cartesian operators); ``λ`` = ``latent_weight``;
- Adam (lr 0.1, cosine ramp-down of the learning rate over the last quarter of the steps), a
  few random restarts ``z₀ ~ N(0, I)``; per slice the iterate with the lowest *measurement* loss
  ``‖A(c ⊙ x) − y/s‖²/m`` over all steps and restarts is kept (never a ground truth);
- early stop (``early_stop``, on by default): a restart ends once no slice's measurement loss has
  improved on its lowest value of the restart by a relative ``1e-3`` for ``patience`` steps, as
  ILO's rounds did before their per-slice stop (``diagnostics.steps_run``: the Adam steps of each
  restart; CSGM keeps the batch-wide rule, :mod:`sgilo.pipeline.solvers.host_sync`). The defaults, 2
  restarts of at most 300 steps stopped early, were chosen on training slices
  (docs/GENERATIVE_TUNING.md): the PSNR of 3 full restarts at 2.2× less time;
- the restarts raced (``race``, 150 steps by default; 0: one after the other): side by side as
  one batch for the first ``race`` steps, a restart whose slices all stalled leaving early, then
  only each slice's leader to the end of the schedule (:mod:`sgilo.pipeline.solvers.raced_restarts`,
  as ILO's and SGILO's CSGM start): on 96 tuning slices +0.02 dB and 1.3–1.5× faster than the
  restarts in turn (docs/SPEED.md §21);
- data consistency (optional, default on), after the fit: by default the sparse deviation
  ``x = argmin ½‖A x − y‖² + λ‖Ψ(x − x̂)‖₁`` (:mod:`sgilo.pipeline.solvers.sparse_deviation`, λ from
  the kind of data and the sampled fraction), on Cartesian column masks from the low band of
  ``x̂`` only, at the classical ℓ1-wavelet's λ (:mod:`sgilo.pipeline.solvers.trusted_band`,
  ``dc_band``); with ``dc_wavelet=0`` exact consistency:
  * single-coil Cartesian: the sampled k-space of the output is replaced by the measured one,
    ``F x_dc = F x̂`` where ``M = 0`` and ``y / M`` where ``M > 0`` (for a 0/1 mask this is
    ``x_dc = x̂ + A^H(y − A x̂)``);
  * SENSE (multi-coil) and non-Cartesian: plain k-space replacement is not an image (coils
    disagree), so ``dc_iterations`` conjugate-gradient steps from ``x̂`` on the normal equations
    of ``‖A x − y‖² + μ ‖x − x̂‖²``, i.e. ``(A^H A + μ I) x = A^H y + μ x̂``, with
    ``μ = dc_weight · ‖A^H A‖`` (the coil maps are normalised, so for Cartesian data
    ``‖A^H A‖ = 1``; for non-Cartesian data, without density compensation, it is the largest
    eigenvalue, so ``dc_weight`` is dimensionless for both).

An image grid ``(H, W)`` other than the generator's ``(R, R)``: the generator's image is Fourier-
resampled to ``min(H, W)`` pixels square and centred on the grid, zero outside
(:class:`sgilo.pipeline.solvers.resample.GridPlacement`); data consistency then fills the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from pydantic import ConfigDict, Field

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers.base import Progress, ReconResult
from sgilo.pipeline.solvers.compiled import CompileConfig, synthesis
from sgilo.pipeline.solvers.diagnostics import CSGMDiagnostics
from sgilo.pipeline.solvers.fit_config import MRIFitConfig
from sgilo.pipeline.solvers.generator_state import frozen
from sgilo.pipeline.solvers.host_sync import DeviceEarlyStop, HostSyncConfig, resolve_sync_every
from sgilo.pipeline.solvers.prior_fit_config import PriorFitConfig
from sgilo.pipeline.solvers.problem import (
    ImageProblem,
    Problem,
    check_inputs,
    final_step_lambdas,
    finish_image,
    prepare_problem,
)
from sgilo.pipeline.solvers.random_source import randn_from


class GeneratorGeometry(Protocol):
    """What csgm reads of a generator's configuration."""

    resolution: int
    image_channels: int


class LatentGenerator(Protocol):
    """Exactly what :func:`csgm` needs of a generator (:class:`sgilo.models.stylegan2.Generator`
    fits).

    ``mapping``: ``z (B, style_dim) → w (B, style_dim)``; ``synthesize``: ``w+ (B, n_latent,
    style_dim) → image (B, image_channels, R, R)`` (``noises=None``: the fixed noise buffers);
    ``config.resolution`` ``R`` and ``config.image_channels``. If the generator is a
    ``torch.nn.Module`` its parameters fix the latent's dtype and device and are frozen during
    the solve (their ``requires_grad`` flags are restored afterwards).
    """

    config: GeneratorGeometry

    @property
    def n_latent(self) -> int: ...

    @property
    def style_dim(self) -> int: ...

    def mapping(self, z: torch.Tensor) -> torch.Tensor: ...

    def synthesize(
        self, ws: torch.Tensor, noises: Sequence[torch.Tensor | None] | None = None
    ) -> torch.Tensor: ...


class CSGMConfig(MRIFitConfig, PriorFitConfig, HostSyncConfig, CompileConfig):
    """CSGM parameters (all recorded in ``ReconResult.diagnostics``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(300, ge=0, description="Adam steps per restart")
    lr: float = Field(0.1, gt=0, description="Adam learning rate")
    lr_rampdown: float = Field(
        0.25, ge=0, le=1, description="fraction of the steps (at the end) of cosine lr decay"
    )
    restarts: int = Field(2, ge=1, description="random restarts; the lowest measurement loss wins")
    latent_weight: float = Field(1e-3, ge=0, description="λ of λ‖z‖²")
    early_stop: bool = Field(
        True,
        description="end a restart once no slice's measurement loss improved on its lowest of "
        "the restart by a relative 1e-3 for `patience` steps (docs/GENERATIVE_TUNING.md)",
    )
    patience: int = Field(20, ge=1, description="steps without improvement before early stop")
    race: int = Field(
        150,
        ge=0,
        description="run the restarts side by side for this many steps, then only each slice's "
        "leading one; a restart whose slices all stalled leaves the race early "
        "(pipeline/solvers/raced_restarts.py, docs/SPEED.md §21); 0 (or ≥ steps): one after "
        "the other",
    )


def csgm(
    y: torch.Tensor,
    op: LinearOperator,
    *,
    generator: LatentGenerator,
    config: CSGMConfig | None = None,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
) -> ReconResult:
    """CSGM reconstruction of the ``B`` slices of ``y`` (see the module docstring).

    ``y``: complex ``(B, *op.oshape)``; ``op``: an MRI operator of :mod:`sgilo.operators.mri` whose
    image grid equals the generator's resolution; ``rng``: the source of the restarts' initial
    latents; ``callback(step, total, message)`` after every Adam step (``total = restarts ·
    steps``; raced: ``restarts · race + steps − race``, a racing step counting ``restarts``).
    Returns the complex ``(B, H, W)`` image in the units of ``y``, the per-step mean measurement
    loss as history, and the resolved parameters plus the chosen measurement loss.
    """
    config = CSGMConfig() if config is None else config
    start_time = time.perf_counter()
    check_inputs(y, op, generator, "csgm")
    problem = prepare_problem(
        y,
        op,
        generator,
        phase=config.phase,
        normalize=config.normalize,
        fit_gain=config.fit_gain,
    )
    from sgilo.pipeline.solvers.raced_restarts import fit_restarts  # it imports this module

    patience = config.patience if config.early_stop else None
    fit = fit_restarts(
        problem, generator, config, config.race, rng=rng, callback=callback, patience=patience
    )
    with frozen(generator), torch.no_grad():
        x = input_latent_image(problem, generator, fit.z)

    x = finish_image(problem, x, config)
    diagnostics = CSGMDiagnostics(
        config=config,
        phase=problem.phase_model,
        dc_lambdas=final_step_lambdas(problem, config),
        measurement_loss=float(fit.loss.mean()),
        measurement_losses=[float(v) for v in fit.loss],
        chosen_restart=[int(v) for v in fit.restart],
        restart_losses=fit.restart_losses,
        steps_run=fit.steps_run,
        data_scale=[float(v) for v in problem.scale],
    )
    return ReconResult(
        image=x,
        history=fit.history,
        seconds=time.perf_counter() - start_time,
        diagnostics=diagnostics,
    )


# -- the input-latent fit (also ILO's and SGILO's warm start) ------------------------------
@dataclass
class InputLatentFit:
    """Of :func:`fit_input_latent`, per slice: the kept latent ``z`` ``(B, style_dim)``, its
    measurement loss ``(B,)`` (float64) and restart ``(B,)``; each restart's lowest loss per
    slice, the per-step mean measurement loss (restart after restart) and the Adam steps each
    restart ran (fewer than ``steps`` when it stopped early). Of the raced restarts
    (:mod:`sgilo.pipeline.solvers.raced_restarts`): the history of the race, then of the
    leaders; each restart's steps its longest run over the slices."""

    z: torch.Tensor
    loss: torch.Tensor
    restart: torch.Tensor
    restart_losses: list[list[float]]
    history: list[float]
    steps_run: list[int]


def input_latent_image(
    problem: Problem | ImageProblem, generator: LatentGenerator, z: torch.Tensor
) -> torch.Tensor:
    """The problem's image of input latents ``z`` ``(B, style_dim)``: ``w = mapping(z)`` on
    every row of w+, the fixed noise buffers."""
    return problem.image(input_latent_output(generator, z))


def input_latent_output(
    generator: LatentGenerator,
    z: torch.Tensor,
    synthesize: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """The generator's output ``(B, C, R, R)`` for input latents ``z`` ``(B, style_dim)``:
    ``w = mapping(z)`` on every row of w+, the fixed noise buffers (``synthesize``: the
    generator's, or a compiled form of it, :mod:`sgilo.pipeline.solvers.compiled`)."""
    w = generator.mapping(z)
    ws = w[:, None, :].expand(-1, generator.n_latent, -1)
    return (synthesize or generator.synthesize)(ws, None)


def fit_input_latent(
    problem: Problem | ImageProblem,
    generator: LatentGenerator,
    config: CSGMConfig,
    *,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
    label: str = "csgm",
    patience: int | None = None,
) -> InputLatentFit:
    """CSGM's optimisation: ``restarts`` Adam runs of ``steps`` from ``z₀ ~ N(0, I)`` (drawn from
    ``rng``) on ``‖A x(z) − y/s‖²/m + λ‖z‖²``; per slice the iterate with the lowest measurement
    loss over all steps and restarts. The generator is frozen for the call. ``patience``: end a
    restart once no slice's measurement loss has improved on its lowest of the restart by a
    relative ``1e-3`` for that many steps (ILO's early stop; ``None``: every step runs)."""
    batch = problem.batch
    dtype, device = problem.dtype, problem.device
    total = config.restarts * config.steps
    history: list[float] = []
    kept = Kept.empty(batch, generator.style_dim, dtype, device)
    restart_losses: list[list[float]] = []
    steps_run: list[int] = []
    every = resolve_sync_every(config.host_sync_every, device)
    synthesize = synthesis(generator, config.compile)
    with frozen(generator):
        for restart in range(config.restarts):
            shape = (batch, generator.style_dim)
            z = randn_from(shape, rng, dtype=dtype, device=device).requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=config.lr)
            step_losses: list[torch.Tensor] = []  # this restart's history, read out at its end
            # batch-wide: a slice ended on its own plateau would miss the learning rate's
            # ramp-down at the end (0.17 / 0.61 dB single-/8-coil 8×, docs/SPEED.md §10)
            stop = DeviceEarlyStop(batch, device, patience, every=every, per_slice=False)

            def on_step(step: int, restart: int = restart) -> None:
                if callback:
                    callback(restart * config.steps + step + 1, total, f"{label} restart {restart}")

            step_losses, ran = descend(
                problem,
                generator,
                z,
                optimizer,
                config,
                first=0,
                kept=kept,
                restart=restart,
                stop=stop,
                synthesize=synthesize,
                on_step=on_step,
            )
            if ran:
                history.extend(torch.stack(step_losses).tolist())
            restart_losses.append([float(v) for v in stop.lowest])
            steps_run.append(ran)
    return InputLatentFit(kept.z, kept.loss, kept.restart, restart_losses, history, steps_run)


def descend(
    problem: LossModel,
    generator: LatentGenerator,
    z: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    config: CSGMConfig,
    *,
    first: int,
    kept: Kept,
    restart: int | torch.Tensor,
    stop: DeviceEarlyStop,
    synthesize: Callable[..., torch.Tensor] | None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[list[torch.Tensor], int]:
    """Steps ``first … config.steps`` of the schedule on the latent ``z`` ``(N, style_dim)``:
    each iterate is evaluated and the lowest measurement loss per row kept in ``kept`` (with
    ``restart``: one, or ``(N,)``); the final iterate is evaluated, not stepped; ``stop`` may end
    the loop earlier (nothing counts past a row's stop; a host read every ``every`` steps).
    ``on_step(step)`` after each Adam step. Returns the per-step mean losses ``(N,)`` → scalar
    tensors of the steps that count, and how many Adam steps counted."""
    step_losses: list[torch.Tensor] = []
    for step in range(first, config.steps + 1):
        data, current = evaluate_latent(problem, generator, z, synthesize)
        wins = (current < kept.loss) & stop.active  # nothing counts past a stop
        stop.observe(current)
        kept.take(wins, current, z, restart)
        if step == config.steps:  # the final iterate is evaluated, not stepped
            break
        stop.advance(step)
        if stop.check(step):  # a host read every `every` steps
            break
        step_losses.append(current.mean())
        adam_step(optimizer, z, data, config, step)
        if on_step:
            on_step(step)
    stopped = stop.stopped_at()
    ran = len(step_losses) if stopped is None else stopped - first
    return step_losses[:ran], ran


@dataclass
class Kept:
    """Per slice (row), the lowest measurement loss ``(N,)`` float64 over the steps seen so
    far, its latent ``z`` ``(N, style_dim)`` and restart ``(N,)``."""

    loss: torch.Tensor
    z: torch.Tensor
    restart: torch.Tensor

    @classmethod
    def empty(cls, rows: int, dim: int, dtype: torch.dtype, device: torch.device) -> Kept:
        return cls(
            torch.full((rows,), math.inf, dtype=torch.float64, device=device),
            torch.zeros(rows, dim, dtype=dtype, device=device),
            torch.zeros(rows, dtype=torch.long, device=device),
        )

    def take(
        self,
        wins: torch.Tensor,
        current: torch.Tensor,
        z: torch.Tensor,
        restart: int | torch.Tensor,
    ) -> None:
        """Keep ``current`` ``(N,)``, ``z`` and ``restart`` (one, or ``(N,)``) where ``wins``."""
        self.loss = torch.where(wins, current, self.loss)
        self.z = torch.where(wins[:, None], z.detach(), self.z)
        self.restart = torch.where(wins, restart, self.restart)  # (an int: no host-to-device copy)

    def rows(self, index: torch.Tensor) -> Kept:
        """The rows ``index``."""
        return Kept(self.loss[index], self.z[index], self.restart[index])


class LossModel(Protocol):
    """What :func:`evaluate_latent` needs of a problem (a :class:`Problem`, an
    :class:`ImageProblem`, or their restarts side by side, ``ChainBatch``)."""

    def image_and_loss(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def evaluate_latent(
    problem: LossModel,
    generator: LatentGenerator,
    z: torch.Tensor,
    synthesize: Callable[..., torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The measurement loss of input latents ``z`` ``(N, style_dim)``: ``(N,)`` with its graph
    (for :func:`adam_step`), and detached in float64."""
    _, data = problem.image_and_loss(input_latent_output(generator, z, synthesize))
    return data, data.detach().to(torch.float64)


def adam_step(
    optimizer: torch.optim.Optimizer,
    z: torch.Tensor,
    data: torch.Tensor,
    config: CSGMConfig,
    step: int,
) -> None:
    """One Adam step of step ``step`` of the schedule on ``Σ (data + λ‖z‖²)`` (``data`` the
    per-row measurement loss of ``z``)."""
    for group in optimizer.param_groups:
        group["lr"] = _learning_rate(config, step)
    loss = (data + config.latent_weight * z.pow(2).sum(dim=1)).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# -- helpers ------------------------------------------------------------------------------
def _learning_rate(config: CSGMConfig, step: int) -> float:
    """Constant, then a cosine ramp-down to 0 over the last ``lr_rampdown`` of the steps."""
    t = step / max(config.steps, 1)
    ramp = min(1.0, (1.0 - t) / config.lr_rampdown) if config.lr_rampdown > 0 else 1.0
    return config.lr * (0.5 - 0.5 * math.cos(ramp * math.pi))
