"""Training a StyleGAN-2 on magnitude (or RGB) images, with exact resume from the last checkpoint.

One training step (a batch of ``batch_size`` real images):

1. D step: non-saturating logistic loss ``softplus(D(G(z))) + softplus(−D(x))`` (means over the
   batch), reals augmented (:mod:`sgilo.models.stylegan2.augment`), fakes from fresh z and fresh
noise. 2. Lazy R1 (every ``r1_every`` steps, counting from step 0): a separate D update on
   ``γ/2 · E‖∇_x D(x)‖² · r1_every`` at the same reals. As in StyleGAN-2, D's Adam then uses
   ``lr·c`` and ``betas**c`` with c = r1_every/(r1_every + 1). γ defaults to
   ``10 · (R/1024)²`` (StyleGAN-2's γ = 10 at 1024², scaled with the pixel count as in the
   StyleGAN2-ADA heuristic γ ∝ R²; 0.16 at 128², 0.0024 at 16²).
3. G step: ``softplus(−D(G(z)))`` with style mixing (probability ``mixing_prob``, one crossover
   row per batch) and fresh per-sample noise maps. Path-length regularization is skipped: it
   serves latent-space smoothness for editing, costs a double backward through G, and the
   solvers here optimize w+ / intermediate features directly.
4. EMA generator: ``g_ema ← β·g_ema + (1 − β)·g`` with β = 0.5^(batch / N) — a half-life of
   N = ``ema_kimg``·1000 images, ramped up as in StyleGAN2-ADA: N = min(N, images_seen ·
   ``ema_rampup``) (so the first steps copy g).

Speed: a step never reads a value back to the host on an accelerator (random numbers drawn on
the device, style mixing by a device mask, losses kept as device tensors until a log record or a
progress report reads them, a callable sampler's value check read once per log interval), the EMA
and Adam are multi-tensor updates (fused Adam on CUDA), and ``compile_mode`` compiles the networks
(:mod:`~sgilo.models.stylegan2.train_compile`). On the CPU the results are those of the one-tensor,
host-side version, bit for bit.

Pixels (the networks see values in [−1, 1]): 1 channel: ``x = 2m − 1`` for magnitudes m ∈ [0, 1],
so ``m = (G(z) + 1)/2``; 2 channels: ``x = (Re, Im)`` of ``m·exp(iφ)`` unscaled (already in
[−1, 1], background 0, multiplication by a phase commutes with the layout), so the complex image is
``G(z)[:, 0] + i·G(z)[:, 1]``; without phase augmentation the imaginary channel is 0; 3 channels
(RGB natural images, reals (B, 3, R, R) in [0, 1]): ``x = 2·rgb − 1`` per channel, so
``rgb = (G(z) + 1)/2`` (:func:`network_to_image`). The mapping is recorded in ``generator.pt``
(``extra["pixel_mapping"]``).

Randomness: network initialization uses a seed derived from ``seed`` (inside ``fork_rng``);
batches, augmentation and latents/noise each draw from their own ``torch.Generator``: augmentation
and latents/noise on the training device, batches on the training device for images in memory and
on the CPU for a callable sampler (:mod:`~sgilo.models.stylegan2.train_state`). Their states are
saved in every checkpoint together with the global CPU RNG state. The trainer itself
never draws from the global RNG, but it owns it while it runs: a fresh run seeds it from ``seed``
and a resumed run restores it, so even a batch sampler that uses it replays exactly. A run of 2N
steps therefore equals N steps + resume for N more, bit for bit (same device and threads; on a GPU
up to cuDNN's non-deterministic kernels, which ``cudnn.benchmark``, on while training on CUDA,
picks by timing). The sample grids use fixed latents and noise from a separate seed, and the
checkpoint's ``latent_avg`` a separate fixed draw, so writing them never perturbs training.

Data parallel (``parallel``; ``sgilo train-gan`` under torchrun, :mod:`sgilo.models.data_parallel`):
``batch_size`` is the global batch B. Every process draws and augments the whole batch from the
same generators and keeps its B/W rows, the rows of one minibatch-stddev group together (so
the discriminator sees the same groups as in one process); D's, R1's and G's gradients and the
logged losses are averaged over the processes before each Adam step. The run then follows the
single-process run up to float rounding, and resumes exactly with the same number of processes.

The parts: :mod:`~sgilo.models.stylegan2.train_config` (the config and what a resume may change),
:mod:`~sgilo.models.stylegan2.train_state` (networks, optimizers, generators, checkpoint),
:mod:`~sgilo.models.stylegan2.train_step` (one step, the real-image sampler),
:mod:`~sgilo.models.stylegan2.pixels` (network pixels ↔ images); this module runs the loop.

Files in ``out_dir``: ``checkpoint.pt`` (written atomically; keys ``g``, ``d``, ``g_ema``,
``g_optim``, ``d_optim`` as in rosinality's training checkpoints, plus ``step``, ``images_seen``,
``seconds``, ``rng``, ``train_config``, ``latent_avg``), ``generator.pt`` (the EMA generator in the
sgilo release format, :func:`sgilo.models.stylegan2.checkpoint.save_generator`), ``log.jsonl`` and
``samples/step_XXXXXX.png`` (magnitudes of the EMA generator's samples in a grey grid; RGB for
3 channels).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgilo.models.data_parallel import SINGLE, DataParallel
from sgilo.models.stylegan2.discriminator import Discriminator
from sgilo.models.stylegan2.generator import Generator, noise_resolution
from sgilo.models.stylegan2.grid import save_grid
from sgilo.models.stylegan2.pixels import (
    PIXEL_MAPPING,
    network_to_image,
    network_to_magnitude,
    to_network,
)
from sgilo.models.stylegan2.train_compile import autotuned, compiled_nets
from sgilo.models.stylegan2.train_config import (
    BOOKKEEPING_FIELDS,
    TrainConfig,
    config_differences,
)
from sgilo.models.stylegan2.train_state import (
    CHECKPOINT_FORMAT,
    TrainRun,
    load_checkpoint,
    new_run,
    restore,
    seeds,
    set_latent_avg,
    write_checkpoint,
)
from sgilo.models.stylegan2.train_step import (
    BatchSampler,
    CheckedSampler,
    TensorSampler,
    as_sampler,
    stddev_group,
    train_step,
)

__all__ = [
    "BOOKKEEPING_FIELDS",
    "CHECKPOINT_FORMAT",
    "PIXEL_MAPPING",
    "BatchSampler",
    "TrainConfig",
    "TrainResult",
    "config_differences",
    "network_to_image",
    "network_to_magnitude",
    "to_network",
    "train_gan",
    "write_sample_grid",
]


@dataclass
class TrainResult:
    """The networks after training (on the training device) and where the outputs are."""

    g: Generator
    d: Discriminator
    g_ema: Generator
    step: int
    images_seen: int
    checkpoint: Path
    generator_file: Path
    log: Path
    stopped: bool = False  # ended by ``stop`` (in any process), not by its steps or time budget


# ---------------------------------------------------------------------- outputs
def _fixed_samples(config: TrainConfig, g: Generator) -> tuple[Tensor, list[Tensor]]:
    rng = torch.Generator().manual_seed(seeds(config.seed)["samples"])
    n = config.sample_count
    z = torch.randn(n, g.style_dim, generator=rng)
    sides = [noise_resolution(i) for i in range(g.num_noises)]
    return z, [torch.randn(n, 1, r, r, generator=rng) for r in sides]


@torch.no_grad()
def write_sample_grid(
    path: Path, g_ema: Generator, z: Tensor, noises: list[Tensor], pad: int = 2
) -> Path:
    """PNG grid (8-bit grey, white gaps) of the magnitudes of g_ema(z) clipped to [0, 1]; an RGB
    grid of the images for a 3-channel generator.

    z: (n, D); noises: [(n, 1, r_i, r_i)]; the grid is ⌈√n⌉ columns wide.
    """
    dev = g_ema.w_avg.device
    ws = g_ema.mapping(z.to(dev))
    image = network_to_image(g_ema.synthesize(ws, [t.to(dev) for t in noises]))
    tiles = (image if image.shape[1] == 3 else image[:, 0]).clamp(0, 1).cpu().numpy()
    return save_grid(path, tiles, cols=math.ceil(math.sqrt(len(tiles))), pad=pad)


def _prepare_log(path: Path, keep_until: int | None) -> None:
    """Fresh run: empty the log. Resume: drop records written after the checkpoint's step."""
    lines: list[str] = []
    if keep_until is not None and path.exists():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= keep_until:
                    lines.append(line)
            except (ValueError, KeyError, TypeError):
                continue
    path.write_text("".join(f"{line}\n" for line in lines))


#: the losses a log record holds (means over its steps; r1 over the R1 steps among them)
LOGGED = ("loss_d", "loss_g", "r1", "d_real", "d_fake")


def _mean(values: list[Tensor]) -> float | None:
    """Mean of 0-dim device tensors, read back in one transfer (the values as ``.item()`` gives
    them, summed in Python floats)."""
    if not values:
        return None
    floats = torch.stack(values).tolist()
    return sum(floats) / len(floats)


# ---------------------------------------------------------------------- the loop
def train_gan(
    config: TrainConfig,
    images: Tensor | np.ndarray | BatchSampler,
    out_dir: str | Path,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    device: str | torch.device = "cpu",
    max_seconds: float | None = None,
    parallel: DataParallel = SINGLE,
    compile_mode: str | None = None,
    new_batch: bool = False,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train G and D for ``config.total_steps`` steps, writing checkpoints, logs and samples.

    Args:
        config: the run; with ``resume`` it must equal the checkpoint's config except that
            ``total_steps`` may grow and the ``*_every`` intervals may change (else ValueError
            naming the differing fields).
        images: real magnitudes in [0, 1], (N, 1, R, R) or (N, R, R) (sampled uniformly with
            replacement), or a :data:`BatchSampler`; RGB (N, 3, R, R) in [0, 1] for a
            3-channel generator.
        out_dir: output folder (created). Without ``resume`` an existing ``checkpoint.pt`` there
            is refused (FileExistsError); with ``resume`` and none there, training starts afresh.
        progress: called every ``progress_every`` steps and at the end with ``{"step", "total",
            "kimg", "losses": {"d", "g", "r1"}, "images_per_s"}`` (r1: last value computed).
        device: where the networks run and (but for a callable sampler's) the random numbers
            are drawn.
        max_seconds: stop after the first step that ends this many seconds after the call began
            (a time budget); the run then ends as at ``total_steps`` (log record, samples,
            checkpoint), and ``resume`` continues it exactly.
        parallel: this process's place among data-parallel processes
            (:mod:`sgilo.models.data_parallel`): each computes its share of the global batch
            ``config.batch_size`` (which W × the minibatch-stddev group must divide, else
            ValueError), and only rank 0 writes files and calls ``progress``. Every process
            returns the same networks.
        compile_mode: None (default) or a ``torch.compile`` mode for the networks
            (:mod:`~sgilo.models.stylegan2.train_compile`): equal results up to float rounding,
            not part of the config (a resume may switch it).
        new_batch: with ``resume``, continue at ``config.batch_size`` although the checkpoint
            trained at another (a GPU continuing a CPU run at a batch that fills it): a valid
            continuation, not the one an uninterrupted run at either batch would give. The
            learning rate, the R1 interval (in steps) and the EMA half-life (in images) stay;
            the checkpoint then records the new batch.
        stop: polled after every step (a signal handler's flag: the CLI's SIGTERM/Ctrl-C);
            when it returns True the run ends after that step as at ``max_seconds`` (log
            record, samples, checkpoint; ``stopped`` in the result), so nothing trained is lost
            and ``resume`` continues it exactly. Data-parallel processes agree on it by a
            collective every ``progress_every`` steps (every step with ``max_seconds``, whose
            collective it shares), so that no other step waits for the device: every process
            stops at the same step, ``stopped`` in all of them.

    Returns:
        :class:`TrainResult`. Checkpoints are written every ``checkpoint_every`` steps and at the
        end, sample grids every ``sample_every`` steps and at the end, log records every
        ``log_every`` steps and at the end.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out_dir / "checkpoint.pt", out_dir / "log.jsonl"
    if ckpt_path.exists() and not resume:
        raise FileExistsError(f"{ckpt_path} exists: pass resume=True or use another folder")
    parallel.check_batch(config.batch_size, stddev_group(config), "batch (--batch)")
    writes = parallel.writes
    sampler = as_sampler(images, config.generator.resolution, config.image_channels, device)
    run = new_run(config, device, parallel, data_device=sampler.rng_device)
    if compile_mode is not None:  # lazy: compiles at the first step
        run.nets = compiled_nets(run.g, run.d, compile_mode)
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        bad = config_differences(ckpt.get("train_config") or {}, config, new_batch)
        if bad:
            allowed = "total_steps may grow, the *_every intervals change"
            if "batch_size" in bad:
                allowed += ", and the batch size with new_batch (--new-batch)"
            raise ValueError(
                f"{ckpt_path}: cannot resume, the config differs from the checkpoint's in "
                f"{', '.join(bad)} (only {allowed})"
            )
        restore(run, ckpt)
        if writes:
            _prepare_log(log_path, keep_until=run.step)
    else:
        torch.manual_seed(seeds(config.seed)["global"])
        if writes:
            _prepare_log(log_path, keep_until=None)
    sample_z, sample_noises = _fixed_samples(config, run.g)
    result = TrainResult(
        run.g,
        run.d,
        run.g_ema,
        run.step,
        run.images_seen,
        ckpt_path,
        out_dir / "generator.pt",
        log_path,
    )
    if run.step >= config.total_steps:
        set_latent_avg(run.g_ema, seeds(config.seed)["latent_avg"])
        return result
    with autotuned(device):
        stopped = _loop(
            run, sampler, device, out_dir, progress, max_seconds, stop, sample_z, sample_noises
        )
    if not writes:  # w_avg as rank 0 stores it with its checkpoint
        set_latent_avg(run.g_ema, seeds(config.seed)["latent_avg"])
    result.step, result.images_seen, result.stopped = run.step, run.images_seen, stopped
    return result


def _loop(
    run: TrainRun,
    sampler: TensorSampler | CheckedSampler,
    device: torch.device,
    out_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None,
    max_seconds: float | None,
    stop: Callable[[], bool] | None,
    sample_z: Tensor,
    sample_noises: list[Tensor],
) -> bool:
    """Steps until ``total_steps``, the time budget or ``stop()``, with logs, samples and
    checkpoints; returns whether ``stop()`` ended it."""
    config, parallel, writes = run.config, run.parallel, run.parallel.writes
    log_path = out_dir / "log.jsonl"
    history: dict[str, list[Tensor]] = {}
    last: dict[str, Tensor] = {}
    log_t0 = prog_t0 = call_t0 = time.perf_counter()
    log_n = prog_n = 0
    stopping = False
    while run.step < config.total_steps:
        t = time.perf_counter()
        stats = train_step(run, sampler, device)
        run.seconds += time.perf_counter() - t
        last |= stats
        for k, v in stats.items():
            history.setdefault(k, []).append(v)
        log_n += config.batch_size
        prog_n += config.batch_size
        out_of_time = max_seconds is not None and time.perf_counter() - call_t0 >= max_seconds
        stopping = stop is not None and stop()
        if parallel.active and (
            max_seconds is not None or (stop is not None and run.step % config.progress_every == 0)
        ):  # every process stops at the same step: [out of time, stop] agreed in one collective
            agreed = parallel.any_of([out_of_time, stopping], device)
            out_of_time, stopping = agreed
        elif parallel.active:
            stopping = False  # until the next agreement
        out_of_time |= stopping
        step, done = run.step, run.step == config.total_steps or out_of_time
        kimg = run.images_seen / 1000
        logs = step % config.log_every == 0 or done
        if logs or step % config.checkpoint_every == 0:
            sampler.verify()  # before anything is written from these batches
        if logs:  # every process: the losses (device tensors) are read back and dropped here
            means = {k: _mean(history.get(k, [])) for k in LOGGED}
            now = time.perf_counter()
            if writes:
                record = {
                    "step": step,
                    "kimg": kimg,
                    "seconds": round(run.seconds, 3),
                    "images_per_s": log_n / max(now - log_t0, 1e-9),
                } | means
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            history, log_t0, log_n = {}, now, 0
        if writes and progress is not None and (step % config.progress_every == 0 or done):
            now = time.perf_counter()
            r1 = last.get("r1")
            losses = {
                "d": last["loss_d"].item(),
                "g": last["loss_g"].item(),
                "r1": None if r1 is None else r1.item(),
            }
            progress(
                {
                    "step": step,
                    "total": config.total_steps,
                    "kimg": kimg,
                    "losses": losses,
                    "images_per_s": prog_n / max(now - prog_t0, 1e-9),
                }
            )
            prog_t0, prog_n = now, 0
        if writes and (step % config.sample_every == 0 or done):
            write_sample_grid(
                out_dir / "samples" / f"step_{step:06d}.png", run.g_ema, sample_z, sample_noises
            )
        if writes and (step % config.checkpoint_every == 0 or done):
            write_checkpoint(run, out_dir)
        if out_of_time:
            break
    return stopping
