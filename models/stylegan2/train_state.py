"""The state of a StyleGAN-2 training run (networks, optimizers, random generators, counters),
its creation from a seed and its checkpoint (see :mod:`sgilo.models.stylegan2.train`).

Random generators live where their numbers are used: ``augment`` and ``latent`` on the training
device, ``data`` where the sampler draws (:attr:`~sgilo.models.stylegan2.train_step.TensorSampler.
rng_device`: the training device for images in memory, the CPU for a callable sampler). A CPU run
is what it always was. The checkpoint stores each generator's state and device type; a resume on
the same device type continues the streams exactly, a resume on another (a GPU run continued on
the CPU) reseeds each from (its seed, step) and warns: a valid continuation, not the same numbers.

The optimizers are Adam with multi-tensor steps: ``foreach`` on the CPU (the same arithmetic as
one tensor at a time, bit for bit) and ``fused`` (one kernel) on a GPU. A checkpoint restores
their state under the current device's flags.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgilo.models.data_parallel import SINGLE, DataParallel
from sgilo.models.stylegan2.checkpoint import save_generator
from sgilo.models.stylegan2.discriminator import Discriminator
from sgilo.models.stylegan2.generator import Generator
from sgilo.models.stylegan2.pixels import PIXEL_MAPPING
from sgilo.models.stylegan2.train_config import TrainConfig
from sgilo.models.torch_io import atomic_torch_save

CHECKPOINT_FORMAT = "sgilo-stylegan2-training"
RNG_NAMES = ("data", "augment", "latent")


@dataclass(frozen=True)
class Nets:
    """How a step calls the networks: ``mapping`` z → w, ``synthesize`` (ws, noises) → image and
    ``d`` image → logits; the modules' own methods, or compiled versions of them
    (:mod:`sgilo.models.stylegan2.train_compile`)."""

    mapping: Callable[[Tensor], Tensor]
    synthesize: Callable[..., Tensor]
    d: Callable[[Tensor], Tensor]
    compiled: bool = False

    @classmethod
    def eager(cls, g: Generator, d: Discriminator) -> Nets:
        return cls(g.mapping, g.synthesize, d)


@dataclass
class TrainRun:
    """A run in memory: the networks and their optimizers on the training device, the random
    generators ``data``, ``augment`` and ``latent`` (module docstring), the counters, this
    process's place among data-parallel processes and how a step calls the networks."""

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
    parallel: DataParallel = field(default=SINGLE)
    nets: Nets | None = None
    #: whether a step avoids every read-back to the host (style mixing by a device mask): on
    #: an accelerator; the CPU keeps the host-side slicing, whose gradients are today's bit for bit
    sync_free: bool = False

    def __post_init__(self) -> None:
        if self.nets is None:
            self.nets = Nets.eager(self.g, self.d)


def seeds(seed: int) -> dict[str, int]:
    """The seeds of every random stream of a run, derived from ``seed``."""
    names = ("init", *RNG_NAMES, "samples", "latent_avg", "global")
    states = np.random.SeedSequence(seed).generate_state(len(names), dtype=np.uint64)
    return {n: int(s) & (2**63 - 1) for n, s in zip(names, states, strict=True)}


def adam_flags(device: torch.device) -> dict[str, bool]:
    """Adam's multi-tensor implementation for ``device``: fused on CUDA, foreach elsewhere."""
    if torch.device(device).type == "cuda":
        return {"fused": True, "foreach": False}
    return {"fused": False, "foreach": True}


def new_run(
    config: TrainConfig,
    device: torch.device,
    parallel: DataParallel = SINGLE,
    data_device: torch.device | None = None,
) -> TrainRun:
    """A fresh run: networks initialized from ``config.seed`` (the same in every process), Adam
    for G and for D (D's with StyleGAN-2's lazy-R1 correction), seeded generators: ``augment``
    and ``latent`` on ``device``, ``data`` on ``data_device`` (default ``device``)."""
    drawn = seeds(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(drawn["init"])
        g = Generator(config.generator)
        d = Discriminator(config.discriminator)
    g, d = g.to(device), d.to(device)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    gamma = config.effective_r1_gamma
    c = config.r1_every / (config.r1_every + 1) if gamma > 0 else 1.0
    b0, b1 = config.betas
    flags = adam_flags(device)
    g_opt = torch.optim.Adam(g.parameters(), lr=config.lr, betas=(b0, b1), eps=1e-8, **flags)
    d_opt = torch.optim.Adam(
        d.parameters(), lr=config.lr * c, betas=(b0**c, b1**c), eps=1e-8, **flags
    )
    where = {"data": torch.device(data_device or device)}
    rngs = {
        n: torch.Generator(device=where.get(n, device)).manual_seed(drawn[n]) for n in RNG_NAMES
    }
    sync_free = torch.device(device).type != "cpu"
    return TrainRun(config, g, d, g_ema, g_opt, d_opt, rngs, parallel=parallel, sync_free=sync_free)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint (weights only); ValueError naming the file when it is not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, not a torch file, or needs arbitrary code
        reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        reason = reason[:160] or type(exc).__name__
        raise ValueError(f"{path}: cannot read the training checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a sgilo StyleGAN-2 training checkpoint")
    return ckpt


def restore(run: TrainRun, ckpt: dict[str, Any]) -> None:
    """Put a checkpoint's state into ``run`` (and the global CPU RNG state)."""
    run.g.load_state_dict(ckpt["g"])
    run.d.load_state_dict(ckpt["d"])
    run.g_ema.load_state_dict(ckpt["g_ema"])
    run.g_opt.load_state_dict(_with_flags(ckpt["g_optim"], run.g_opt))
    run.d_opt.load_state_dict(_with_flags(ckpt["d_optim"], run.d_opt))
    run.step, run.images_seen = int(ckpt["step"]), int(ckpt["images_seen"])
    saved_on = ckpt.get("rng_devices", {})  # absent before the generators could live on a GPU
    moved = []
    for name in RNG_NAMES:
        rng = run.rngs[name]
        if saved_on.get(name, "cpu") == rng.device.type:
            rng.set_state(ckpt["rng"][name])
        else:
            rng.manual_seed(_reseed(seeds(run.config.seed)[name], run.step))
            moved.append(f"{name} ({saved_on[name]} → {rng.device.type})")
    if moved:
        warnings.warn(
            "resumed on another device: the random generators "
            f"{', '.join(moved)} were reseeded from (seed, step {run.step}); the run continues "
            "validly but not with the numbers an uninterrupted run would draw",
            stacklevel=3,
        )
    torch.set_rng_state(ckpt["rng"]["torch_cpu"])
    run.seconds = float(ckpt["seconds"])


def _with_flags(state: dict[str, Any], optim: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer state dict with ``optim``'s fused/foreach flags (a checkpoint's groups would
    otherwise replace them, and with them where the step counters live)."""
    flags = {k: optim.param_groups[0][k] for k in ("fused", "foreach")}
    return state | {"param_groups": [group | flags for group in state["param_groups"]]}


def _reseed(seed: int, step: int) -> int:
    """A generator seed for a stream continued on another device at ``step``."""
    state = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


@torch.no_grad()
def set_latent_avg(g_ema: Generator, seed: int, n: int = 4096) -> None:
    """g_ema.w_avg ← mean of mapping(z) over a fixed draw of n z (never the training RNGs)."""
    z = torch.randn(n, g_ema.style_dim, generator=torch.Generator().manual_seed(seed))
    g_ema.w_avg.copy_(g_ema.mapping(z.to(g_ema.w_avg.device)).mean(dim=0))


def write_checkpoint(run: TrainRun, out_dir: Path) -> None:
    """Write ``generator.pt`` (the EMA generator, release format) and ``checkpoint.pt``
    (everything a resume needs), each atomically."""
    cfg = run.config
    set_latent_avg(run.g_ema, seeds(cfg.seed)["latent_avg"])
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
        "rng": {n: run.rngs[n].get_state() for n in RNG_NAMES}
        | {"torch_cpu": torch.get_rng_state()},
        "rng_devices": {n: run.rngs[n].device.type for n in RNG_NAMES},
        "train_config": dump,
        "latent_avg": run.g_ema.w_avg.detach().cpu(),
    }
    atomic_torch_save(ckpt, out_dir / "checkpoint.pt")
