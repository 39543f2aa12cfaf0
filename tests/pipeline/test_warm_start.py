"""ILO's CSGM start: the Gaussianization round trip, the first round starting from exactly CSGM's
image, and the rounds improving on it (SGILO's shared start: tests/pipeline/test_sgilo.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgilo.models.stylegan2.checkpoint import gaussianized_to_w
from sgilo.operators.masks import column_mask
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm
from sgilo.pipeline.solvers.ilo import ILOConfig, ilo
from sgilo.pipeline.solvers.warm_start import gaussianize

R = 16  # the resolution of the `gen_stats` generator (tests/pipeline/conftest.py)
PLAIN = dict(phase="none", normalize=False, fit_gain=False, data_consistency=False)


def _problem(gen) -> tuple[torch.Tensor, SingleCoilMRI]:
    mask = torch.from_numpy(column_mask("equispaced", R, 0.25, 4, seed=0).astype(np.float32))
    op = SingleCoilMRI(mask, shape=(R, R))
    with torch.no_grad():
        z = torch.randn(2, gen.style_dim, generator=torch.Generator().manual_seed(5))
        x = ((gen(z)[:, 0] + 1) / 2).to(torch.complex64)
    return op.A(x), op


def test_gaussianize_inverts_gaussianized_to_w(gen_stats):
    gen, (mu, sigma) = gen_stats
    with torch.no_grad():
        w = gen.mapping(torch.randn(64, gen.style_dim, generator=torch.Generator().manual_seed(3)))
    assert (w < 0).any() and (w > 0).any()  # both branches of the leaky ReLU are exercised
    assert torch.allclose(gaussianized_to_w(gaussianize(w, mu, sigma), mu, sigma), w, atol=1e-5)


def test_ilo_first_round_starts_from_csgm_image(gen_stats):
    """With no ILO steps the output is the start: exactly CSGM's fit (same rng, same budget)."""
    gen, stats = gen_stats
    y, op = _problem(gen)
    ref = csgm(
        y,
        op,
        generator=gen,
        config=CSGMConfig(steps=12, restarts=2, **PLAIN),
        rng=torch.Generator().manual_seed(9),
    )
    res = ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=ILOConfig(
            steps=(0,), init="csgm", init_steps=12, init_restarts=2, init_early_stop=False, **PLAIN
        ),
        rng=torch.Generator().manual_seed(9),
    )
    assert torch.allclose(res.image, ref.image, atol=1e-5)
    loss, ref_loss = res.diagnostics.measurement_loss, ref.diagnostics.measurement_loss
    assert loss == pytest.approx(ref_loss, rel=1e-4)


def test_ilo_refines_the_csgm_start(gen_stats):
    """The rounds after the CSGM start lower the measurement loss below CSGM's own."""
    gen, stats = gen_stats
    y, op = _problem(gen)
    ref = csgm(
        y,
        op,
        generator=gen,
        config=CSGMConfig(steps=15, restarts=1, **PLAIN),
        rng=torch.Generator().manual_seed(4),
    )
    res = ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=ILOConfig(
            steps=(15, 15), init="csgm", init_steps=15, init_restarts=1, early_stop=False, **PLAIN
        ),
        rng=torch.Generator().manual_seed(4),
    )
    assert res.diagnostics.measurement_loss < ref.diagnostics.measurement_loss
