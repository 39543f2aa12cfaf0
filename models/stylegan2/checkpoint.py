"""Saving and loading StyleGAN-2 generators; the Gaussianized latent statistics of ILO/PULSE.

File format (a torch file holding a dict; always read with ``weights_only=True``):

- ``g_ema``: the generator's state_dict, in the rosinality/stylegan2-pytorch layout
  (see :mod:`sgilo.models.stylegan2.generator`);
- ``latent_avg``: (D,) mean of mapping(z) (for truncation);
- ``config``: ``GeneratorConfig.model_dump()`` (plain JSON-able values) — sgilo files only;
- ``latent_stats``: ``{"mu": (D,), "sigma": (D,)}`` or absent — sgilo files only;
- ``extra``: any further plain values (tensors, numbers, strings, containers).

A foreign (rosinality-format) file has ``g_ema`` and usually ``latent_avg``; training checkpoints
add ``g``, ``d``, optimizer states and ``args`` (an ``argparse.Namespace``, the one non-container
type allowed beyond what ``weights_only`` accepts, since building it runs no code). Its
architecture is inferred from the tensor shapes unless a config is given; ``lr_mlp`` cannot be
inferred and defaults to the standard 0.01.

Every failure raises :class:`CheckpointError` with one line naming the file and the problem.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor

from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.models.torch_io import atomic_torch_save, first_line, safe_torch_load

FORMAT = "sgilo-stylegan2"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A generator checkpoint that cannot be used; the message names the file and the reason."""


class LatentStats(NamedTuple):
    """Per-dimension mean and std of LeakyReLU_5(mapping(z)): mu, sigma (D,)."""

    mu: Tensor
    sigma: Tensor


@dataclass
class CheckpointInfo:
    """What came with the generator: where from, the config, and the latent statistics."""

    path: Path
    config: GeneratorConfig
    source: str  # "sgilo" or "rosinality"
    latent_avg: Tensor | None
    latent_stats: LatentStats | None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- latent statistics
@torch.no_grad()
def fit_latent_stats(
    generator: Generator,
    n: int = 100_000,
    batch: int = 10_000,
    generator_rng: torch.Generator | None = None,
) -> LatentStats:
    """μ, σ (D,) of LeakyReLU_5(mapping(z)), z ~ N(0, I), over n samples (float64 accumulation).

    LeakyReLU_5 undoes the mapping's last leaky ReLU(0.2): x → x/0.2 for x < 0 (the √2 gain is
    positive, so it commutes and is kept).
    """
    if n < 2 or batch < 1:
        raise ValueError(f"need n >= 2 and batch >= 1, got n={n}, batch={batch}")
    d = generator.style_dim
    dev = generator.w_avg.device
    total = torch.zeros(d, dtype=torch.float64, device=dev)
    total_sq = torch.zeros(d, dtype=torch.float64, device=dev)
    done = 0
    while done < n:
        b = min(batch, n - done)
        z = torch.randn(b, d, generator=generator_rng, device=dev)
        x = F.leaky_relu(generator.mapping(z), 5.0).double()
        total += x.sum(dim=0)
        total_sq += x.pow(2).sum(dim=0)
        done += b
    mu = total / n
    var = (total_sq - n * mu.pow(2)).clamp_min(0) / (n - 1)
    dtype = generator.w_avg.dtype
    return LatentStats(mu.to(dtype), var.sqrt().to(dtype))


def gaussianized_to_w(z: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """w = LeakyReLU_0.2(σ ⊙ z + μ); z: (..., D), mu, sigma: (D,) → (..., D)."""
    return F.leaky_relu(z * sigma + mu, 0.2)


# ---------------------------------------------------------------------- saving
def save_generator(
    path: str | Path,
    generator: Generator,
    latent_stats: LatentStats | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``generator`` (and optional latent statistics / extra plain values) to ``path``."""
    path = Path(path)
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "g_ema": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "latent_avg": generator.w_avg.detach().cpu(),
        "config": generator.config.model_dump(),
    }
    if latent_stats is not None:
        ckpt["latent_stats"] = {
            "mu": latent_stats.mu.detach().cpu(),
            "sigma": latent_stats.sigma.detach().cpu(),
        }
    if extra:
        ckpt["extra"] = dict(extra)
    return atomic_torch_save(ckpt, path)


# ---------------------------------------------------------------------- loading
def _read(path: Path, device: str | torch.device) -> Any:
    # rosinality training checkpoints carry their argparse arguments
    return safe_torch_load(path, CheckpointError, device, allowed=(argparse.Namespace,))


def infer_config(state: dict[str, Tensor], lr_mlp: float = 0.01) -> GeneratorConfig:
    """Architecture of a rosinality-layout ``g_ema`` from its tensor shapes.

    Raises KeyError/ValueError when the keys needed are absent or inconsistent.
    """
    n_mlp = len([k for k in state if re.fullmatch(r"style\.\d+\.weight", k)])
    n_rgbs = len([k for k in state if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
    style_dim = int(state["style.1.weight"].shape[1])
    resolution = 4 * 2**n_rgbs
    channels = {4: int(state["input.input"].shape[1])}
    for k in range(1, n_rgbs + 1):
        channels[4 * 2**k] = int(state[f"convs.{2 * k - 2}.conv.weight"].shape[1])
    image_channels = int(state["to_rgb1.bias"].shape[1])
    common = dict(
        resolution=resolution,
        style_dim=style_dim,
        n_mlp=n_mlp,
        lr_mlp=lr_mlp,
        image_channels=image_channels,
    )
    for multiplier in (2, 1, 4):  # prefer the standard width rule when it fits
        cfg = GeneratorConfig(**common, channel_multiplier=multiplier)
        if cfg.channel_map() == channels:
            return cfg
    return GeneratorConfig(**common, channels=channels)


def _check_state_dict(path: Path, state: dict[str, Tensor], generator: Generator) -> None:
    own = generator.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                more = f", … (+{len(keys) - 4})" if len(keys) > 4 else ""
                parts.append(f"{len(keys)} {name} keys ({', '.join(keys[:4])}{more})")
        cfg = generator.config
        raise CheckpointError(
            f"{path}: g_ema does not match a {cfg.resolution}×{cfg.resolution} generator with "
            f"{cfg.image_channels} image channels and style_dim {cfg.style_dim}: "
            + "; ".join(parts)
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{path}: shape mismatch at {k}: file has {tuple(state[k].shape)}, the "
                f"configured generator expects {tuple(v.shape)} (wrong resolution or channels?)"
            )


def _vector(path: Path, value: Any, name: str, dim: int) -> Tensor:
    if not isinstance(value, Tensor) or tuple(value.shape) != (dim,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise CheckpointError(f"{path}: {name} must be a ({dim},) tensor, got {shape}")
    return value


def load_generator(
    path: str | Path,
    config: GeneratorConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Generator, CheckpointInfo]:
    """Load a generator and what came with it.

    The generator comes in eval mode on ``device`` with its parameters frozen
    (``requires_grad=False``: solvers differentiate w.r.t. latents only); call
    ``generator.requires_grad_(True)`` to train it further.

    A sgilo file carries its config (a given ``config`` must equal it); for a foreign file the
    config is the given one or is inferred from the shapes. Keys and shapes must match exactly.
    """
    path = Path(path)
    ckpt = _read(path, device)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict, the file holds a {type(ckpt).__name__}")
    if "g_ema" not in ckpt:
        keys = ", ".join(map(str, list(ckpt)[:6])) or "none"
        raise CheckpointError(f"{path}: no 'g_ema' entry (generator weights); keys: {keys}")
    state = ckpt["g_ema"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'g_ema' is not a state_dict of tensors")

    if "config" in ckpt:
        source = "sgilo"
        try:
            stored = GeneratorConfig.model_validate(ckpt["config"])
        except ValidationError as exc:
            reason = first_line(exc.errors()[0]["msg"]) if exc.errors() else "invalid"
            raise CheckpointError(f"{path}: invalid stored config ({reason})") from None
        if config is not None and config != stored:
            given, saved = config.model_dump(), stored.model_dump()
            diff = ", ".join(
                f"{k}={given[k]} (file: {saved[k]})" for k in given if given[k] != saved[k]
            )
            raise CheckpointError(f"{path}: the given config differs from the file's: {diff}")
        config = stored
    else:
        source = "rosinality"
        if config is None:
            try:
                config = infer_config(state)
            except (KeyError, ValueError, IndexError) as exc:
                raise CheckpointError(
                    f"{path}: cannot infer the generator architecture from g_ema "
                    f"({type(exc).__name__}: {first_line(exc)}); pass a config"
                ) from None

    generator = Generator(config).to(device)
    _check_state_dict(path, state, generator)
    generator.load_state_dict(state, strict=True)
    generator.eval().requires_grad_(False)

    d = config.style_dim
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None:
        latent_avg = _vector(path, latent_avg, "latent_avg", d)
        generator.w_avg.copy_(latent_avg)
    stats = None
    if ckpt.get("latent_stats") is not None:
        raw = ckpt["latent_stats"]
        if not isinstance(raw, dict) or not {"mu", "sigma"} <= set(raw):
            raise CheckpointError(f"{path}: latent_stats must hold 'mu' and 'sigma'")
        stats = LatentStats(
            _vector(path, raw["mu"], "latent_stats.mu", d),
            _vector(path, raw["sigma"], "latent_stats.sigma", d),
        )
    extra = ckpt.get("extra") or {}
    return generator, CheckpointInfo(path, config, source, latent_avg, stats, dict(extra))
