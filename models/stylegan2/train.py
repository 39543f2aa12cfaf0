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

Pixels (the networks see values in [−1, 1]): 1 channel: ``x = 2m − 1`` for magnitudes m ∈ [0, 1],
so ``m = (G(z) + 1)/2``; 2 channels: ``x = (Re, Im)`` of ``m·exp(iφ)`` unscaled (already in
[−1, 1], background 0, multiplication by a phase commutes with the layout), so the complex image is
``G(z)[:, 0] + i·G(z)[:, 1]``; without phase augmentation the imaginary channel is 0; 3 channels
(RGB natural images, reals (B, 3, R, R) in [0, 1]): ``x = 2·rgb − 1`` per channel, so
``rgb = (G(z) + 1)/2`` (:func:`network_to_image`). The mapping is recorded in ``generator.pt``
(``extra["pixel_mapping"]``).

Randomness: network initialization uses a seed derived from ``seed`` (inside ``fork_rng``);
batches, augmentation and latents/noise each draw from their own CPU ``torch.Generator``, whose
states are saved in every checkpoint together with the global CPU RNG state. The trainer itself
never draws from the global RNG, but it owns it while it runs: a fresh run seeds it from ``seed``
and a resumed run restores it, so even a batch sampler that uses it replays exactly. A run of 2N
steps therefore equals N steps + resume for N more, bit for bit (same device and threads). The
sample grids use fixed latents and noise from a separate seed, and the checkpoint's
``latent_avg`` a separate fixed draw, so writing them never perturbs training.

Files in ``out_dir``: ``checkpoint.pt`` (written atomically; keys ``g``, ``d``, ``g_ema``,
``g_optim``, ``d_optim`` as in rosinality's training checkpoints, plus ``step``, ``images_seen``,
``seconds``, ``rng``, ``train_config``, ``latent_avg``), ``generator.pt`` (the EMA generator in the
sgilo release format, :func:`sgilo.models.stylegan2.checkpoint.save_generator`), ``log.jsonl`` and
``samples/step_XXXXXX.png`` (magnitudes of the EMA generator's samples in a grey grid; RGB for
3 channels).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import Tensor

from sgilo.models.stylegan2.augment import AugmentConfig, augment_batch
from sgilo.models.stylegan2.checkpoint import save_generator
from sgilo.models.stylegan2.discriminator import Discriminator, DiscriminatorConfig
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig, noise_resolution
from sgilo.models.stylegan2.grid import save_grid
from sgilo.models.torch_io import atomic_torch_save

#: (batch size, torch.Generator) → real magnitudes, float32 (B, 1, R, R) in [0, 1] (RGB
#: (B, 3, R, R) for a 3-channel generator); must draw all its randomness from the generator given
#: (for exact resume)
BatchSampler = Callable[[int, torch.Generator], Tensor]
CHECKPOINT_FORMAT = "sgilo-stylegan2-training"
#: config fields that may change on resume: they do not change the training trajectory
BOOKKEEPING_FIELDS = ("checkpoint_every", "sample_every", "log_every", "progress_every")
PIXEL_MAPPING = {
    1: "magnitude = (x + 1) / 2",
    2: "complex = x[:, 0] + 1j * x[:, 1]",
    3: "rgb = (x + 1) / 2",
}
_RNG_NAMES = ("data", "augment", "latent")


class TrainConfig(BaseModel):
    """Everything that determines a training run (JSON-able via ``model_dump()``).

    ``discriminator`` defaults to ``DiscriminatorConfig.matching(generator)``. The generator's
    ``image_channels`` is 1 (magnitude), 2 (real, imaginary) or 3 (RGB); ``phase_augmentation``
    requires 2.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator: GeneratorConfig
    discriminator: DiscriminatorConfig
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.002, gt=0)
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float | None = Field(None, ge=0, description="None: 10·(R/1024)²")
    r1_every: int = Field(16, ge=1)
    mixing_prob: float = Field(0.9, ge=0, le=1)
    ema_kimg: float = Field(10.0, ge=0, description="EMA half-life in thousands of images")
    ema_rampup: float | None = Field(0.05, gt=0)
    total_steps: int = Field(10_000, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    progress_every: int = Field(10, ge=1)
    sample_count: int = Field(16, ge=1)
    seed: int = Field(0, ge=0)
    phase_augmentation: bool = False
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="before")
    @classmethod
    def _derive_discriminator(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("discriminator") is None and "generator" in data:
            try:
                g = GeneratorConfig.model_validate(data["generator"])
            except ValidationError:
                return data  # reported by the field validation
            data = {**data, "discriminator": DiscriminatorConfig.matching(g)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        g, d = self.generator, self.discriminator
        if g.image_channels not in (1, 2, 3):
            raise ValueError(
                "generator.image_channels must be 1 (magnitude), 2 (real, imag) or 3 (RGB)"
            )
        if (d.resolution, d.image_channels) != (g.resolution, g.image_channels):
            raise ValueError("discriminator resolution/image_channels differ from the generator's")
        if self.phase_augmentation and g.image_channels != 2:
            raise ValueError("phase_augmentation needs generator.image_channels == 2")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        return self

    @property
    def image_channels(self) -> int:
        return self.generator.image_channels

    @property
    def effective_r1_gamma(self) -> float:
        """γ of the R1 penalty: ``r1_gamma`` or 10·(R/1024)²."""
        if self.r1_gamma is not None:
            return self.r1_gamma
        return 10.0 * (self.generator.resolution / 1024) ** 2

    @property
    def total_kimg(self) -> float:
        return self.total_steps * self.batch_size / 1000


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


@dataclass
class _Run:
    config: TrainConfig
    g: Generator
    d: Discriminator
    g_ema: Generator
    g_opt: torch.optim.Adam
    d_opt: torch.optim.Adam
    rngs: dict[str, torch.Generator]
    step: int = 0
    images_seen: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------- pixels and data
def to_network(x: Tensor, image_channels: int) -> Tensor:
    """Augmented reals → network pixels. (B, 1, R, R) magnitudes in [0, 1] → 2m − 1 (1 channel)
    or (m, 0) (2 channels); (B, 2, R, R) (real, imag) → unchanged; (B, 3, R, R) RGB in [0, 1]
    → 2·rgb − 1 (3 channels)."""
    if x.shape[1] == 2:
        return x
    if image_channels == 1 or (image_channels == 3 and x.shape[1] == 3):
        return x * 2.0 - 1.0
    return torch.cat((x, torch.zeros_like(x)), dim=1)


def network_to_magnitude(y: Tensor) -> Tensor:
    """Generator output (B, C, R, R) → magnitude (B, 1, R, R): (y + 1)/2 or |y₀ + i·y₁|.

    MRI generators only (C = 1 or 2); an RGB output (C = 3) raises ValueError (use
    :func:`network_to_image`).
    """
    if y.shape[1] == 3:
        raise ValueError("an RGB generator output has no magnitude: use network_to_image")
    if y.shape[1] == 1:
        return (y + 1.0) / 2.0
    return torch.hypot(y[:, :1], y[:, 1:2])


def network_to_image(y: Tensor) -> Tensor:
    """Generator output (B, C, R, R) → displayable image: RGB (B, 3, R, R) = (y + 1)/2 for
    C = 3, else the magnitude (B, 1, R, R) (:func:`network_to_magnitude`). Not clipped."""
    if y.shape[1] == 3:
        return (y + 1.0) / 2.0
    return network_to_magnitude(y)


def _check_reals(x: Tensor, batch: int | None, resolution: int, channels: int = 1) -> Tensor:
    want = (channels, resolution, resolution)
    if x.dim() != 4 or tuple(x.shape[1:]) != want or (batch is not None and len(x) != batch):
        n = "N" if batch is None else batch
        raise ValueError(
            f"expected real images ({n}, {channels}, {resolution}, {resolution}), "
            f"got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        what = "RGB values" if channels == 3 else "magnitudes"
        raise ValueError(f"real images must be finite {what} in [0, 1]")
    return x


def _real_channels(image_channels: int) -> int:
    """Channels of the real images a generator with ``image_channels`` trains on: 3 for RGB, else
    1 (magnitudes; the 2-channel layout is made by phase augmentation)."""
    return 3 if image_channels == 3 else 1


def _as_sampler(
    images: Tensor | np.ndarray | BatchSampler, resolution: int, image_channels: int = 1
) -> BatchSampler:
    channels = _real_channels(image_channels)
    if callable(images):
        source = images

        def checked(batch: int, generator: torch.Generator) -> Tensor:
            x = torch.as_tensor(source(batch, generator), dtype=torch.float32)
            return _check_reals(x, batch, resolution, channels)

        return checked
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.dim() == 3:
        x = x[:, None]
    x = _check_reals(x, None, resolution, channels)
    if len(x) == 0:
        raise ValueError("no training images")

    def sample(batch: int, generator: torch.Generator) -> Tensor:
        return x[torch.randint(len(x), (batch,), generator=generator)]

    return sample


# ---------------------------------------------------------------------- set-up and state
def _seeds(seed: int) -> dict[str, int]:
    names = ("init", *_RNG_NAMES, "samples", "latent_avg", "global")
    states = np.random.SeedSequence(seed).generate_state(len(names), dtype=np.uint64)
    return {n: int(s) & (2**63 - 1) for n, s in zip(names, states, strict=True)}


def _new_run(config: TrainConfig, device: torch.device) -> _Run:
    seeds = _seeds(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds["init"])
        g = Generator(config.generator)
        d = Discriminator(config.discriminator)
    g, d = g.to(device), d.to(device)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    gamma = config.effective_r1_gamma
    c = config.r1_every / (config.r1_every + 1) if gamma > 0 else 1.0
    b0, b1 = config.betas
    g_opt = torch.optim.Adam(g.parameters(), lr=config.lr, betas=(b0, b1), eps=1e-8)
    d_opt = torch.optim.Adam(d.parameters(), lr=config.lr * c, betas=(b0**c, b1**c), eps=1e-8)
    rngs = {n: torch.Generator().manual_seed(seeds[n]) for n in _RNG_NAMES}
    return _Run(config, g, d, g_ema, g_opt, d_opt, rngs)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def config_differences(saved: dict[str, Any], wanted: TrainConfig) -> list[str]:
    """Dotted names of the fields whose change forbids resuming (see :func:`train_gan`)."""
    old, new = _flatten(saved), _flatten(wanted.model_dump())
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k, None) != new.get(k, None))
    allowed = set(BOOKKEEPING_FIELDS)
    if isinstance(old.get("total_steps"), int) and new["total_steps"] >= old["total_steps"]:
        allowed.add("total_steps")
    return [k for k in differing if k not in allowed]


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, not a torch file, or needs arbitrary code
        reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        reason = reason[:160] or type(exc).__name__
        raise ValueError(f"{path}: cannot read the training checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a sgilo StyleGAN-2 training checkpoint")
    return ckpt


def _restore(run: _Run, ckpt: dict[str, Any]) -> None:
    run.g.load_state_dict(ckpt["g"])
    run.d.load_state_dict(ckpt["d"])
    run.g_ema.load_state_dict(ckpt["g_ema"])
    run.g_opt.load_state_dict(ckpt["g_optim"])
    run.d_opt.load_state_dict(ckpt["d_optim"])
    for name in _RNG_NAMES:
        run.rngs[name].set_state(ckpt["rng"][name])
    torch.set_rng_state(ckpt["rng"]["torch_cpu"])
    run.step, run.images_seen = int(ckpt["step"]), int(ckpt["images_seen"])
    run.seconds = float(ckpt["seconds"])


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


@torch.no_grad()
def _set_latent_avg(g_ema: Generator, seed: int, n: int = 4096) -> None:
    """g_ema.w_avg ← mean of mapping(z) over a fixed draw of n z (never the training RNGs)."""
    z = torch.randn(n, g_ema.style_dim, generator=torch.Generator().manual_seed(seed))
    g_ema.w_avg.copy_(g_ema.mapping(z.to(g_ema.w_avg.device)).mean(dim=0))


def _write_checkpoint(run: _Run, out_dir: Path) -> None:
    cfg = run.config
    _set_latent_avg(run.g_ema, _seeds(cfg.seed)["latent_avg"])
    dump = cfg.model_dump()
    extra = {
        "trainer": "sgilo.models.stylegan2.train",
        "step": run.step,
        "images_seen": run.images_seen,
        "pixel_mapping": PIXEL_MAPPING[cfg.image_channels],
        "train_config": dump,
    }
    tmp = out_dir / ".generator.pt.tmp"
    save_generator(tmp, run.g_ema, extra=extra)
    os.replace(tmp, out_dir / "generator.pt")
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "g": _cpu(run.g.state_dict()),
        "d": _cpu(run.d.state_dict()),
        "g_ema": _cpu(run.g_ema.state_dict()),
        "g_optim": run.g_opt.state_dict(),
        "d_optim": run.d_opt.state_dict(),
        "step": run.step,
        "images_seen": run.images_seen,
        "seconds": run.seconds,
        "rng": {n: run.rngs[n].get_state() for n in _RNG_NAMES}
        | {"torch_cpu": torch.get_rng_state()},
        "train_config": dump,
        "latent_avg": run.g_ema.w_avg.detach().cpu(),
    }
    atomic_torch_save(ckpt, out_dir / "checkpoint.pt")


# ---------------------------------------------------------------------- one step
def _sample_ws(
    g: Generator, batch: int, rng: torch.Generator, mixing_prob: float, device: torch.device
) -> tuple[Tensor, list[Tensor]]:
    """w+ (B, n_latent, D) with style mixing, and fresh noise maps; drawn on the CPU from rng."""
    d, n = g.style_dim, g.n_latent
    z = torch.randn(2 * batch, d, generator=rng)
    mix = float(torch.rand((), generator=rng)) < mixing_prob
    cut = int(torch.randint(1, n, (), generator=rng))
    sides = [noise_resolution(i) for i in range(g.num_noises)]
    noises = [torch.randn(batch, 1, r, r, generator=rng).to(device) for r in sides]
    w = g.mapping(z.to(device)).view(2, batch, 1, d)
    if mix:
        ws = torch.cat((w[0].expand(-1, cut, -1), w[1].expand(-1, n - cut, -1)), dim=1)
    else:
        ws = w[0].expand(-1, n, -1)
    return ws, noises


def _ema_beta(config: TrainConfig, images_seen: int) -> float:
    n = config.ema_kimg * 1000
    if config.ema_rampup is not None:
        n = min(n, images_seen * config.ema_rampup)
    return 0.5 ** (config.batch_size / n) if n > 0 else 0.0


def _train_step(run: _Run, sampler: BatchSampler, device: torch.device) -> dict[str, float]:
    cfg, g, d = run.config, run.g, run.d
    b = cfg.batch_size
    # augmented where the networks run (its random numbers still come from the CPU generator):
    # on a GPU the warp of a batch on the host would cost more than the step's networks
    real = sampler(b, run.rngs["data"]).to(device)
    real = augment_batch(real, run.rngs["augment"], cfg.augment, cfg.phase_augmentation)
    real = to_network(real, cfg.image_channels)

    with torch.no_grad():
        fake = g.synthesize(*_sample_ws(g, b, run.rngs["latent"], cfg.mixing_prob, device))
    real_logit, fake_logit = d(real), d(fake)
    d_loss = F.softplus(fake_logit).mean() + F.softplus(-real_logit).mean()
    run.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    run.d_opt.step()
    stats = {
        "loss_d": d_loss.item(),
        "d_real": real_logit.mean().item(),
        "d_fake": fake_logit.mean().item(),
    }

    gamma = cfg.effective_r1_gamma
    if gamma > 0 and run.step % cfg.r1_every == 0:
        x = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        run.d_opt.zero_grad(set_to_none=True)
        (r1 * (gamma / 2 * cfg.r1_every)).backward()
        run.d_opt.step()
        stats["r1"] = r1.item()

    d.requires_grad_(False)
    fake = g.synthesize(*_sample_ws(g, b, run.rngs["latent"], cfg.mixing_prob, device))
    g_loss = F.softplus(-d(fake)).mean()
    run.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    run.g_opt.step()
    d.requires_grad_(True)
    stats["loss_g"] = g_loss.item()

    beta = _ema_beta(cfg, run.images_seen)
    with torch.no_grad():
        for p_ema, p in zip(run.g_ema.parameters(), g.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
    run.step += 1
    run.images_seen += b
    return stats


# ---------------------------------------------------------------------- outputs
def _fixed_samples(config: TrainConfig, g: Generator) -> tuple[Tensor, list[Tensor]]:
    rng = torch.Generator().manual_seed(_seeds(config.seed)["samples"])
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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------------- the loop
def train_gan(
    config: TrainConfig,
    images: Tensor | np.ndarray | BatchSampler,
    out_dir: str | Path,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    device: str | torch.device = "cpu",
    max_seconds: float | None = None,
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
        device: where the networks run; random numbers are always drawn on the CPU.
        max_seconds: stop after the first step that ends this many seconds after the call began
            (a time budget); the run then ends as at ``total_steps`` (log record, samples,
            checkpoint), and ``resume`` continues it exactly.

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
    sampler = _as_sampler(images, config.generator.resolution, config.image_channels)
    run = _new_run(config, device)
    if resume and ckpt_path.exists():
        ckpt = _load_checkpoint(ckpt_path)
        bad = config_differences(ckpt.get("train_config") or {}, config)
        if bad:
            raise ValueError(
                f"{ckpt_path}: cannot resume, the config differs from the checkpoint's in "
                f"{', '.join(bad)} (only total_steps may grow and the *_every intervals change)"
            )
        _restore(run, ckpt)
        _prepare_log(log_path, keep_until=run.step)
    else:
        torch.manual_seed(_seeds(config.seed)["global"])
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
        _set_latent_avg(run.g_ema, _seeds(config.seed)["latent_avg"])
        return result

    history: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    log_t0 = prog_t0 = call_t0 = time.perf_counter()
    log_n = prog_n = 0
    while run.step < config.total_steps:
        t = time.perf_counter()
        stats = _train_step(run, sampler, device)
        run.seconds += time.perf_counter() - t
        last |= stats
        for k, v in stats.items():
            history.setdefault(k, []).append(v)
        log_n += config.batch_size
        prog_n += config.batch_size
        out_of_time = max_seconds is not None and time.perf_counter() - call_t0 >= max_seconds
        step, done = run.step, run.step == config.total_steps or out_of_time
        kimg = run.images_seen / 1000
        if step % config.log_every == 0 or done:
            now = time.perf_counter()
            record = {
                "step": step,
                "kimg": kimg,
                "seconds": round(run.seconds, 3),
                "images_per_s": log_n / max(now - log_t0, 1e-9),
            }
            for k in ("loss_d", "loss_g", "r1", "d_real", "d_fake"):
                record[k] = _mean(history.get(k, []))
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            history, log_t0, log_n = {}, now, 0
        if progress is not None and (step % config.progress_every == 0 or done):
            now = time.perf_counter()
            losses = {"d": last["loss_d"], "g": last["loss_g"], "r1": last.get("r1")}
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
        if step % config.sample_every == 0 or done:
            write_sample_grid(
                out_dir / "samples" / f"step_{step:06d}.png", run.g_ema, sample_z, sample_noises
            )
        if step % config.checkpoint_every == 0 or done:
            _write_checkpoint(run, out_dir)
        if out_of_time:
            break
    result.step, result.images_seen = run.step, run.images_seen
    return result
