"""Shared fixtures of the solver tests."""

from __future__ import annotations

import pytest
import torch

from sgilo.models.stylegan2.checkpoint import LatentStats, fit_latent_stats
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig


@pytest.fixture(scope="module")
def gen_stats() -> tuple[Generator, LatentStats]:
    """A tiny random 16² one-channel StyleGAN-2 and its latent statistics (2000 samples)."""
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=1, channel_base=64, channel_max=16
    )
    gen = Generator(cfg).eval()
    stats = fit_latent_stats(
        gen, n=2000, batch=1000, generator_rng=torch.Generator().manual_seed(1)
    )
    return gen, stats
