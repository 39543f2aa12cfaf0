"""ILO with a tiny random StyleGAN-2: round boundaries, projections, GeoCross, iterate selection,
the comparison with CSGM on a problem whose truth is a generator sample, and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgilo.models.stylegan2.checkpoint import gaussianized_to_w
from sgilo.models.stylegan2.generator import SynthesisState
from sgilo.operators.masks import column_mask
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm
from sgilo.pipeline.solvers.ilo import ILOConfig, ilo
from sgilo.pipeline.solvers.rounds import geocross, init_round_state

R = 16  # the resolution of the `gen_stats` generator (tests/pipeline/conftest.py)


def _op() -> SingleCoilMRI:
    mask = torch.from_numpy(column_mask("equispaced", R, 0.25, 4, seed=0).astype(np.float32))
    return SingleCoilMRI(mask, shape=(R, R))


def _truth(gen, batch=1, seed=5) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(batch, gen.style_dim, generator=torch.Generator().manual_seed(seed))
        g = gen(z)
    return ((g[:, 0] + 1) / 2).to(torch.complex64)


def _config(**kw) -> ILOConfig:
    base = dict(
        phase="none", normalize=False, fit_gain=False, data_consistency=False, init="random"
    )
    return ILOConfig(**(base | kw))


def test_round_boundary_reproduces_previous_image(gen_stats):
    gen, stats = gen_stats
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        ws = gaussianized_to_w(torch.randn(2, gen.n_latent, gen.style_dim, generator=g), *stats)
        noises = gen.random_noises(2, generator=g)
        # round 0 ends with z, noises: its image is the full forward
        end0 = gen.synthesize(ws, noises)
        h0 = init_round_state(gen, ws, noises, 1)
        assert torch.allclose(gen.synthesize(ws, noises, start=1, h=h0), end0, atol=1e-5)
        # round 1 ends with an optimised (perturbed) h0: round 2 starts from its image
        h0 = SynthesisState(h0.features + 0.3 * torch.randn_like(h0.features), h0.skip + 0.1)
        end1 = gen.synthesize(ws, noises, start=1, h=h0)
        h1 = init_round_state(gen, ws, noises, 2, h0)
        assert torch.allclose(gen.synthesize(ws, noises, start=2, h=h1), end1, atol=1e-5)
    assert init_round_state(gen, ws, noises, 0) is None
    with pytest.raises(ValueError):
        init_round_state(gen, ws, noises, 2, None)


def test_rounds_continue_in_the_solver(gen_stats):
    gen, stats = gen_stats
    op = _op()
    y = op.A(_truth(gen))
    res = ilo(y, op, generator=gen, latent_stats=stats, config=_config(steps=(6, 5, 4)))
    ends, starts = (
        res.diagnostics.round_losses,
        res.diagnostics.round_start_losses,
    )
    assert len(ends) == len(starts) == 3 and len(res.history) == 15
    for k in (1, 2):
        assert math.isclose(starts[k], ends[k - 1], rel_tol=1e-4, abs_tol=1e-7)


def test_zero_radii_keep_the_initial_image(gen_stats):
    gen, stats = gen_stats
    op = _op()
    y = op.A(_truth(gen, batch=2))
    cfg = _config(steps=(4, 3, 3), radii=(0.0, 0.0, 0.0))
    res = ilo(
        y, op, generator=gen, latent_stats=stats, config=cfg, rng=torch.Generator().manual_seed(7)
    )
    z0 = torch.randn(2, gen.n_latent, gen.style_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        g = gen.synthesize(gaussianized_to_w(z0, *stats), None)
    x0 = ((g[:, 0] + 1) / 2).to(torch.complex64)
    assert torch.allclose(res.image, x0, atol=1e-5)
    losses = res.diagnostics.round_losses
    assert max(losses) - min(losses) < 1e-6 * max(1.0, max(losses))


def test_early_stop_ends_stalled_rounds(gen_stats):
    """Zero radii freeze the iterate: with early_stop each round ends `patience` steps after its
    start (the loss never improves) and the image is the one of the full schedule."""
    gen, stats = gen_stats
    op = _op()
    y = op.A(_truth(gen, batch=2))

    def run(**kw):
        cfg = _config(steps=(12, 9), radii=(0.0, 0.0), **kw)
        rng = torch.Generator().manual_seed(7)
        return ilo(y, op, generator=gen, latent_stats=stats, config=cfg, rng=rng)

    full, stopped = run(), run(early_stop=True, patience=4)
    assert full.diagnostics.steps_run == [12, 9]
    assert stopped.diagnostics.steps_run == [4, 4]
    assert len(stopped.history) == 8 and len(full.history) == 21
    assert torch.allclose(stopped.image, full.image, atol=1e-6)
    moving = ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=_config(steps=(12, 9), early_stop=True, patience=50),
        rng=torch.Generator().manual_seed(7),
    )
    assert moving.diagnostics.steps_run == [12, 9]  # patience longer than the rounds


def test_geocross_brute_force():
    z = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = geocross(z)
    for b in range(2):
        angles = []
        for i in range(5):
            for j in range(i + 1, 5):
                u, v = z[b, i].numpy(), z[b, j].numpy()
                a = 2 * math.atan2(np.linalg.norm(u - v), np.linalg.norm(u + v))
                angles.append(a * a)
        assert math.isclose(float(got[b]), sum(angles) / len(angles), rel_tol=1e-12)
    assert torch.equal(geocross(z[:, :1]), torch.zeros(2, dtype=torch.float64))


def test_returned_iterate_is_the_last_rounds_minimum(gen_stats):
    gen, stats = gen_stats
    op = _op()
    y = op.A(_truth(gen, batch=2, seed=9))
    res = ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=_config(steps=(5, 8)),
        rng=torch.Generator().manual_seed(4),
    )
    per_slice = res.diagnostics.last_round_losses
    chosen = res.diagnostics.measurement_losses
    assert len(per_slice) == 2 and all(len(row) == 9 for row in per_slice)
    for row, c in zip(per_slice, chosen, strict=True):
        assert c == min(row)
    # the returned image reproduces the chosen loss (no data consistency, no scale)
    r = op.A(res.image) - y
    m = float((op.mask > 0).sum())
    got = (r.abs().pow(2).reshape(2, -1).sum(1) / m).tolist()
    assert np.allclose(got, chosen, rtol=1e-4, atol=1e-8)


def test_ilo_fits_measurements_at_least_as_well_as_csgm(gen_stats):
    gen, stats = gen_stats
    op = _op()
    y = op.A(_truth(gen, batch=1, seed=11))
    steps = (40, 30, 30)
    res_ilo = ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=_config(steps=steps, radius_fraction=0.3),  # balls generous enough to add freedom
        rng=torch.Generator().manual_seed(0),
    )
    res_csgm = csgm(
        y,
        op,
        generator=gen,
        config=CSGMConfig(
            steps=sum(steps),
            restarts=1,
            phase="none",
            normalize=False,
            data_consistency=False,
            early_stop=False,
        ),
        rng=torch.Generator().manual_seed(0),
    )
    loss_ilo = res_ilo.diagnostics.measurement_loss
    loss_csgm = res_csgm.diagnostics.measurement_loss
    print(f"ILO {loss_ilo:.3e}  CSGM {loss_csgm:.3e}")
    assert loss_ilo <= loss_csgm
    assert all(p.requires_grad for p in gen.parameters())  # unfrozen afterwards


def test_bad_inputs(gen_stats):
    gen, stats = gen_stats
    op = _op()
    y = op.A(_truth(gen))
    with pytest.raises(ValueError, match="rounds"):
        ilo(y, op, generator=gen, latent_stats=stats, config=_config(steps=(2, 2, 2, 2)))
    with pytest.raises(ValueError, match="latent statistics"):
        ilo(y, op, generator=gen, latent_stats=None, config=_config(steps=(2,)))
    # a grid other than the generator's: the image is placed on it (GridPlacement)
    small = SingleCoilMRI(torch.ones(12, dtype=torch.float32), shape=(8, 12))
    res = ilo(
        small.A(torch.ones(1, 8, 12, dtype=torch.complex64)),
        small,
        generator=gen,
        latent_stats=stats,
        config=_config(steps=(2,)),
    )
    assert res.image.shape == (1, 8, 12)
    with pytest.raises(ValueError):
        ILOConfig(steps=(2, 2), radii=(1.0,))
    with pytest.raises(ValueError):
        ILOConfig(unknown=1)
