"""CSGM: known answers with a generator that is linear in z, restart selection by the measurement
loss, data consistency, the phase and scale models, errors, and a smoke run of a tiny StyleGAN-2.

The linear stand-in: ``mapping = identity``, ``G(z) = reshape(M z)`` with ``M = [1, B]`` (a constant
column, so that the percentile normalisation ``x/s`` of any image of the model is again an image of
the model: ``(M ẑ + 1)/2 = (M z* + 1)/(2q)`` is solved by ``ẑ = z*/q + (1/q − 1) e₀``).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.operators.base import Identity
from sgilo.operators.fft import fft2c
from sgilo.operators.masks import column_mask
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.solvers.classical import DEFAULT_LAMBDA, data_scale, tuned_lambda
from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm
from sgilo.pipeline.solvers.kspace_cv import estimate_noise_sigma
from sgilo.pipeline.solvers.lambda_rule import raised_for_noise

R = 8
D = 6


class LinearGenerator(torch.nn.Module):
    """``G(z) = reshape(M z)`` (row 0 of w+), ``mapping = identity``; 1 or 2 channels."""

    n_latent = 4

    def __init__(self, channels: int = 1, seed: int = 0, resolution: int = R) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = channels * resolution * resolution
        basis = torch.randn(n, D - 1, generator=g, dtype=torch.float64) * 0.2
        self.register_buffer("M", torch.cat([torch.ones(n, 1, dtype=torch.float64), basis], 1))
        self.config = types.SimpleNamespace(resolution=resolution, image_channels=channels)

    @property
    def style_dim(self) -> int:
        return D

    def mapping(self, z):
        return z

    def synthesize(self, ws, noises=None):
        assert ws.shape[1:] == (self.n_latent, D) and noises is None
        r = self.config.resolution
        return (ws[:, 0] @ self.M.T).reshape(-1, self.config.image_channels, r, r)

    def image(self, z):
        g = self.synthesize(z[:, None].expand(-1, self.n_latent, -1))
        if self.config.image_channels == 1:
            return ((g[:, 0] + 1) / 2).to(torch.complex128)
        return torch.complex(g[:, 0], g[:, 1])


def _config(**kw) -> CSGMConfig:
    base = dict(
        steps=600,
        latent_weight=0.0,
        restarts=1,
        phase="none",
        data_consistency=False,
        fit_gain=False,
        early_stop=False,
    )
    return CSGMConfig(**(base | kw))


def _rel(a, b) -> float:
    return float((a - b).abs().norm() / b.abs().norm())


def _truth(gen, batch=2, seed=3, amplitude=5.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, D, generator=g, dtype=torch.float64) * 0.5
    return gen.image(z) * amplitude


def _full_op():
    return SingleCoilMRI(torch.ones(R, R, dtype=torch.float64))


def _column_op(columns=(0, 3, 4, 5)):
    mask = torch.zeros(R, dtype=torch.float64)
    mask[list(columns)] = 1
    return SingleCoilMRI(mask, shape=(R, R))


def test_linear_generator_known_answer():
    gen = LinearGenerator()
    x = _truth(gen)
    op = _full_op()
    res = csgm(op.A(x), op, generator=gen, config=_config(), rng=torch.Generator().manual_seed(1))
    assert res.image.shape == (2, R, R) and res.image.dtype == torch.complex128
    assert _rel(res.image, x) < 1e-3
    assert res.diagnostics.measurement_loss < 1e-8
    assert res.diagnostics.config.steps == 600 and res.diagnostics.phase == "none"
    assert len(res.history) == 600 and res.history[-1] < res.history[0]


def test_known_answer_on_a_larger_non_square_grid():
    """An 8×8 generator on a 12×20 acquisition: its image is placed on the grid (GridPlacement)
    and the latent is still recovered exactly."""
    from sgilo.pipeline.solvers.resample import GridPlacement

    gen = LinearGenerator(channels=2, seed=8)
    placed = GridPlacement(R, (12, 20)).A(_truth(gen, amplitude=1.0))
    op = SingleCoilMRI(torch.ones(12, 20, dtype=torch.float64))
    res = csgm(op.A(placed), op, generator=gen, config=_config(normalize=False), rng=None)
    assert res.image.shape == (2, 12, 20)
    assert _rel(res.image, placed) < 1e-3


def test_two_channel_generator_known_answer():
    gen = LinearGenerator(channels=2, seed=4)
    x = _truth(gen, amplitude=1.0)
    op = _full_op()
    res = csgm(op.A(x), op, generator=gen, config=_config(normalize=False), rng=None)
    assert _rel(res.image, x) < 1e-3
    assert res.diagnostics.phase == "none"  # "auto" resolves to none for 2 channels
    with pytest.raises(ValueError, match="1-channel"):
        csgm(op.A(x), op, generator=gen, config=_config(phase="from-calibration"))


def test_phase_from_calibration():
    gen = LinearGenerator(seed=5)
    x = _truth(gen) * np.exp(0.7j)  # a constant phase: the calibration image has it exactly
    op = _full_op()
    rng = torch.Generator().manual_seed(2)
    res = csgm(op.A(x), op, generator=gen, config=_config(phase="from-calibration"), rng=rng)
    assert _rel(res.image, x) < 1e-3
    without = csgm(op.A(x), op, generator=gen, config=_config(steps=100), rng=rng)
    assert _rel(without.image, x) > 0.1


def test_restarts_keep_the_lowest_measurement_loss():
    """steps = 0: each restart is its initial latent, reproduced here from the same rng."""
    gen = LinearGenerator(seed=6)
    x = _truth(gen, batch=3)
    op = _column_op()
    y = op.A(x)
    cfg = _config(steps=0, restarts=4, normalize=False)
    res = csgm(y, op, generator=gen, config=cfg, rng=torch.Generator().manual_seed(7))
    rng = torch.Generator().manual_seed(7)
    z0 = torch.stack([torch.randn(3, D, generator=rng, dtype=torch.float64) for _ in range(4)])
    m = 4 * R  # sampled entries per slice
    losses = torch.stack([(op.A(gen.image(z)) - y).abs().pow(2).sum(dim=(1, 2)) / m for z in z0])
    best = losses.argmin(dim=0)
    np.testing.assert_allclose(res.diagnostics.restart_losses, losses.numpy(), rtol=1e-9)
    assert res.diagnostics.chosen_restart == best.tolist()
    assert len(set(best.tolist())) > 1  # the slices pick different restarts
    want = torch.stack([gen.image(z0[best[b], b : b + 1])[0] for b in range(3)])
    torch.testing.assert_close(res.image, want)
    chosen = res.diagnostics.measurement_losses
    np.testing.assert_allclose(chosen, losses.min(dim=0).values.numpy(), rtol=1e-9)


def test_restarts_with_steps_select_by_measurement_loss():
    gen = LinearGenerator(seed=8)
    x = _truth(gen)
    op = _column_op()
    y = op.A(x)
    res = csgm(y, op, generator=gen, config=_config(steps=3, restarts=3), rng=None)
    per_restart = np.array(res.diagnostics.restart_losses)  # (restarts, B)
    chosen = np.array(res.diagnostics.measurement_losses)
    np.testing.assert_allclose(chosen, per_restart.min(axis=0), rtol=1e-12)
    # the returned image has that loss (in the normalised units ‖A x/s − y/s‖²/m)
    s = torch.tensor(res.diagnostics.data_scale, dtype=torch.float64)
    actual = (op.A(res.image) - y).abs().pow(2).sum(dim=(1, 2)) / (4 * R) / s**2
    np.testing.assert_allclose(actual.numpy(), chosen, rtol=1e-6)


def test_restarts_race_then_only_the_leaders_run():
    """``race`` steps of every restart side by side (150 by default), then each slice's leader
    alone: the progress total and the steps each restart ran say so; with ``race=0`` (or
    ``race`` ≥ the steps) they run in turn. The kept iterate is the lowest measurement loss
    either way, and on this convex fit both reach the known answer."""
    gen = LinearGenerator(seed=8)
    x = _truth(gen, batch=3)
    op = _full_op()
    y = op.A(x)

    def run(**kw):
        totals = []
        res = csgm(
            y,
            op,
            generator=gen,
            config=_config(steps=300, restarts=2, **kw),
            rng=torch.Generator().manual_seed(3),
            callback=lambda done, total, message: totals.append((done, total, message)),
        )
        return res, totals

    raced, totals = run()  # the default: a race of 150 steps
    assert totals[-1][:2] == (2 * 150 + 300 - 150,) * 2
    assert any("race" in m for _, _, m in totals) and any("leaders" in m for _, _, m in totals)
    leaders = set(raced.diagnostics.chosen_restart)
    assert raced.diagnostics.steps_run == [300 if r in leaders else 150 for r in range(2)]
    in_turn, totals = run(race=0)
    assert totals[-1][:2] == (2 * 300,) * 2
    assert in_turn.diagnostics.steps_run == [300, 300]
    for res in (raced, in_turn):
        chosen = np.array(res.diagnostics.measurement_losses)
        per_restart = np.array(res.diagnostics.restart_losses)
        np.testing.assert_allclose(chosen, per_restart.min(axis=0), rtol=1e-12)
        assert _rel(res.image, x) < 1e-3
    _, totals = run(race=300)  # race ≥ steps: in turn
    assert totals[-1][:2] == (2 * 300,) * 2


def test_early_stop_ends_stalled_restarts():
    """A learning rate of 1e-9 leaves the loss flat: with early_stop each restart ends after
    `patience` steps without a relative improvement of 1e-3; without it every step runs. The
    known-answer fit, whose loss keeps falling, is not stopped."""
    gen = LinearGenerator(seed=10)
    x = _truth(gen)
    op = _full_op()
    y = op.A(x)

    def run(**kw):
        return csgm(
            y, op, generator=gen, config=_config(**kw), rng=torch.Generator().manual_seed(1)
        )

    flat = run(steps=50, restarts=2, lr=1e-9, early_stop=True, patience=7)
    assert flat.diagnostics.steps_run == [7, 7]
    assert len(flat.history) == 14
    full = run(steps=50, restarts=2, lr=1e-9)
    assert full.diagnostics.steps_run == [50, 50]
    stopped = run(early_stop=True, patience=20)
    assert stopped.diagnostics.steps_run == [600]
    assert _rel(stopped.image, x) < 1e-3


def test_data_consistency_single_coil():
    gen = LinearGenerator(seed=9)
    x = _truth(gen) + 0.3 * torch.randn(2, R, R, dtype=torch.complex128)  # outside the model
    op = _column_op()
    y = op.A(x)
    cfg = _config(steps=30, data_consistency=True, dc_wavelet=0)
    res = csgm(y, op, generator=gen, config=cfg, rng=torch.Generator().manual_seed(0))
    k = fft2c(res.image)
    sampled = op.mask.expand(2, R, R) > 0
    torch.testing.assert_close(k[sampled], y[sampled])
    rng = torch.Generator().manual_seed(0)
    plain = csgm(y, op, generator=gen, config=_config(steps=30), rng=rng)
    assert not torch.allclose(fft2c(plain.image)[sampled], y[sampled])
    # unsampled k-space is the generator's
    torch.testing.assert_close(k[~sampled], fft2c(plain.image)[~sampled], atol=1e-6, rtol=1e-6)


def test_data_consistency_multi_coil_reduces_residual():
    g = torch.Generator().manual_seed(10)
    maps = torch.randn(3, R, R, generator=g, dtype=torch.complex128)
    maps = maps / maps.abs().pow(2).sum(dim=0, keepdim=True).sqrt()
    mask = torch.zeros(R, dtype=torch.float64)
    mask[[1, 3, 4, 5]] = 1
    op = MultiCoilMRI(maps, mask)
    gen = LinearGenerator(seed=11)
    x = _truth(gen) + 0.3 * torch.randn(2, R, R, generator=g, dtype=torch.complex128)
    y = op.A(x)
    cfg = _config(steps=30, phase="from-calibration")
    plain = csgm(y, op, generator=gen, config=cfg, rng=torch.Generator().manual_seed(0))
    dc = csgm(
        y,
        op,
        generator=gen,
        config=cfg.model_copy(update={"data_consistency": True, "dc_wavelet": 0.0}),
        rng=torch.Generator().manual_seed(0),
    )
    before = (op.A(plain.image) - y).norm()
    after = (op.A(dc.image) - y).norm()
    assert after < 0.1 * before


def test_image_is_zero_outside_the_coil_support():
    """ESPIRiT-style maps blank the left half: there the data say nothing, and the generator's
    image (non-zero everywhere) must not survive, with or without data consistency."""
    g = torch.Generator().manual_seed(12)
    maps = torch.randn(3, R, R, generator=g, dtype=torch.complex128)
    maps = maps / maps.abs().pow(2).sum(dim=0, keepdim=True).sqrt()
    maps[:, :, : R // 2] = 0
    op = MultiCoilMRI(maps, torch.ones(R, dtype=torch.float64))
    gen = LinearGenerator(seed=11)
    y = op.A(_truth(gen))
    for dc in (False, True):
        res = csgm(
            y,
            op,
            generator=gen,
            config=_config(steps=20, data_consistency=dc),
            rng=torch.Generator().manual_seed(0),
        )
        assert (res.image[..., : R // 2] == 0).all()
        assert (res.image[..., R // 2 :].abs() > 0).float().mean() > 0.9
        # the final step's λ is recorded per slice: fully sampled multi-coil data (a column mask,
        # so the trusted band applies and "auto" is the classical ℓ1-wavelet's λ) take its 4×
        # anchor (constant beyond it), raised as the classical default is where σ̂/s is high:
        # here the random linear generator's image reaches the corners of k-space, which the
        # noise estimate counts as noise (an upper bound, pipeline/solvers/kspace_cv.py)
        anchor = DEFAULT_LAMBDA[("l1-wavelet", "multi-coil")][1]
        tuned = tuned_lambda("l1-wavelet", y, op).tolist()
        assert tuned == pytest.approx(
            raised_for_noise(
                "l1-wavelet",
                "multi-coil",
                torch.full((2,), anchor, dtype=torch.float64),
                estimate_noise_sigma(y, op) / data_scale(y, op).cpu().double(),
            ).tolist()
        )
        expected = tuned if dc else None
        assert (res.diagnostics.dc_lambdas if dc else None) == pytest.approx(expected)
        assert dc or res.diagnostics.dc_lambdas is None


def test_shape_and_resolution_errors():
    gen = LinearGenerator()
    op4 = SingleCoilMRI(torch.ones(4, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(4, 6\) is too small"):
        csgm(torch.zeros(1, 4, 6, dtype=torch.complex128), op4, generator=gen)
    op = _full_op()
    with pytest.raises(ValueError, match="y must be complex"):
        csgm(torch.zeros(1, R, R + 1, dtype=torch.complex128), op, generator=gen)
    with pytest.raises(ValueError, match="y must be complex"):
        csgm(torch.zeros(1, R, R), op, generator=gen)
    with pytest.raises(ValueError, match="MRI operator"):
        csgm(torch.zeros(1, R, R, dtype=torch.complex128), Identity((R, R)), generator=gen)
    rgb = LinearGenerator(channels=3)
    with pytest.raises(ValueError, match="3 channels"):
        csgm(torch.zeros(1, R, R, dtype=torch.complex128), op, generator=rgb)
    no_centre = _column_op(columns=(0, 1, 2))
    with pytest.raises(ValueError, match="centre columns"):
        csgm(
            torch.ones(1, R, R, dtype=torch.complex128),
            no_centre,
            generator=gen,
            config=_config(phase="from-calibration"),
        )
    with pytest.raises(ValueError):
        CSGMConfig(unknown=1)


def test_smoke_tiny_stylegan2():
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=1, channel_base=64, channel_max=16
    )
    gen = Generator(cfg)
    mask = torch.from_numpy(column_mask("equispaced", 16, 0.25, 4, seed=0).astype(np.float32))
    op = SingleCoilMRI(mask, shape=(16, 16))
    x = torch.rand(2, 16, 16) * torch.exp(1j * torch.rand(2, 16, 16) * 0.3)
    calls = []
    res = csgm(
        op.A(x.to(torch.complex64)),
        op,
        generator=gen,
        config=CSGMConfig(steps=5, restarts=2),
        rng=torch.Generator().manual_seed(0),
        callback=lambda step, total, msg: calls.append((step, total)),
    )
    assert res.image.shape == (2, 16, 16) and res.image.dtype == torch.complex64
    assert bool(torch.isfinite(res.image.abs()).all())
    assert calls[-1] == (10, 10) and len(calls) == 10
    assert np.isfinite(res.diagnostics.measurement_loss)
    assert res.diagnostics.phase == "from-calibration"
    assert all(p.requires_grad for p in gen.parameters())  # unfrozen afterwards


def test_gain_recovers_an_image_brighter_than_the_model_range():
    """An image 1.5× brighter than the truth's (as when the data scale undershoots at high
    acceleration) is fitted exactly with the gain; the gain itself is the least-squares factor,
    clamped to [0.5, 2]."""
    gen = LinearGenerator(seed=9)
    x = _truth(gen, amplitude=1.0)
    op = _full_op()
    y = op.A(1.5 * x)
    cfg = dict(normalize=False, steps=400)
    rng = torch.Generator().manual_seed(3)
    with_gain = csgm(y, op, generator=gen, config=_config(fit_gain=True, **cfg), rng=rng)
    assert _rel(with_gain.image, 1.5 * x) < 1e-3
    from sgilo.pipeline.solvers.problem import prepare_problem

    problem = prepare_problem(y, op, gen, phase="none", normalize=False, fit_gain=True)
    assert torch.allclose(
        problem.gain(op.A_adjoint(y) / 3), torch.tensor([2.0, 2.0], dtype=torch.float64)
    )
    assert torch.allclose(problem.gain(op.A_adjoint(y)), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("fit_gain", [False, True])
def test_image_and_loss_equals_image_then_measurement_loss(fit_gain):
    """The solvers' step computes the image and its loss with one application of A (the gain's
    A x reused); it must equal image() followed by measurement_loss(), values and gradients,
    on multi-coil undersampled data with a phase carrier."""
    from sgilo.pipeline.solvers.problem import prepare_problem

    gen = Generator(GeneratorConfig(resolution=16, style_dim=16, n_mlp=2, image_channels=1))
    rng = torch.Generator().manual_seed(4)
    maps = torch.randn(2, 3, 16, 16, generator=rng, dtype=torch.complex64)
    mask = torch.from_numpy(column_mask("random", 16, 0.25, 2.0, seed=1).astype(np.float32))
    op = MultiCoilMRI(maps, mask)
    x_true = torch.randn(2, 16, 16, generator=rng, dtype=torch.complex64)
    y = op.A(x_true)
    problem = prepare_problem(y, op, gen, phase="auto", normalize=True, fit_gain=fit_gain)
    g0 = torch.rand(2, 1, 16, 16, generator=rng) * 2 - 1
    g1 = g0.clone().requires_grad_(True)
    x1 = problem.image(g1)
    loss1 = problem.measurement_loss(x1)
    loss1.sum().backward()
    g2 = g0.clone().requires_grad_(True)
    x2, loss2 = problem.image_and_loss(g2)
    loss2.sum().backward()
    assert torch.allclose(x1, x2, rtol=1e-5, atol=1e-6)
    assert torch.allclose(loss1, loss2, rtol=1e-5)
    assert torch.allclose(g1.grad, g2.grad, rtol=1e-4, atol=1e-6)
