"""SGILO: the prior step against a closed-form Gaussian posterior, the reduction to ILO without the
ball (λ = τ = 0), chains (samples, std map) and input errors, with a tiny random StyleGAN-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgilo.models.score.model import ScoreModel
from sgilo.models.score.network import (
    ConvScoreNetConfig,
    MLPScoreNetConfig,
    build_network,
)
from sgilo.models.stylegan2.checkpoint import fit_latent_stats
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.operators.masks import column_mask
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.solvers.ilo import ILOConfig, ilo
from sgilo.pipeline.solvers.sgilo import (
    SGILOConfig,
    SGILOResult,
    prior_step,
    sgilo,
    used_spaces,
)

R = 16


@pytest.fixture(scope="module")
def gen_stats():
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        resolution=R, style_dim=16, n_mlp=2, image_channels=1, channel_base=64, channel_max=16
    )
    gen = Generator(cfg).eval()
    stats = fit_latent_stats(gen, n=500, batch=500, generator_rng=torch.Generator().manual_seed(1))
    return gen, stats


def _op() -> SingleCoilMRI:
    mask = torch.from_numpy(column_mask("equispaced", R, 0.25, 4, seed=0).astype(np.float32))
    return SingleCoilMRI(mask, shape=(R, R))


def _y(gen, batch=1, seed=5) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(batch, gen.style_dim, generator=torch.Generator().manual_seed(seed))
        x = ((gen(z)[:, 0] + 1) / 2).to(torch.complex64)
    return _op().A(x)


def _gaussian_model(shape, shift=None, scale=None) -> ScoreModel:
    """An untrained score model (zero network + Gaussian skip): exactly the prior
    N(shift, scale²), whose Tweedie denoiser at t is D(v) = shift + m(t)·(v − shift)."""
    if len(shape) == 2:
        net = MLPScoreNetConfig(
            n_rows=shape[0], dim=shape[1], hidden=8, depth=1, row_hidden=4, time_dim=4
        )
    else:
        net = ConvScoreNetConfig(
            channels=shape[0], resolution=shape[1], hidden=8, depth=1, groups=4, time_dim=4
        )
    return ScoreModel(build_network(net), shift=shift, scale=scale).eval().requires_grad_(False)


def _config(**kw) -> SGILOConfig:
    base = dict(
        phase="none",
        normalize=False,
        fit_gain=False,
        data_consistency=False,
        radius_fraction=None,
        init="random",
    )
    return SGILOConfig(**(base | kw))


# ---------------------------------------------------------------------- the prior step
def _toy(tau: float, chains: int, steps: int, burn_in: int):
    """SGILO's iteration on v ∈ R^d, y = A v + noise, prior N(μ, s²I): a gradient step on
    ½‖A v − y‖²/σ² with step α, then :func:`prior_step` (λ, τ, t). With c = λ(1 − m(t)) the
    composed affine map has the fixed point of α(1 − c)·A^T(Av − y)/σ² + c(v − μ) = 0, the
    posterior mean iff α = c·s²/(1 − c); the noise leaves the mean of the iterates there."""
    g = torch.Generator().manual_seed(0)
    d, n, sigma, s = 3, 5, 0.7, 0.8
    lam, t = 0.5, 0.5
    a = torch.randn(n, d, generator=g) / n**0.5
    mu = torch.randn(1, d, generator=g)
    y = a @ torch.randn(d, generator=g) * 1.5 + sigma * torch.randn(n, generator=g)
    model = _gaussian_model((1, d), shift=mu, scale=torch.tensor(s))
    c = lam * (1 - float(model.sde.mean_coeff(t)))
    alpha = c * s**2 / (1 - c)
    precision = a.T @ a / sigma**2 + torch.eye(d) / s**2
    posterior_mean = torch.linalg.solve(precision, a.T @ y / sigma**2 + mu[0] / s**2)
    v = torch.zeros(chains, 1, d)
    rng = torch.Generator().manual_seed(1)
    total = torch.zeros(d)
    for i in range(steps):
        v = v - alpha * ((v @ a.T - y) @ a) / sigma**2
        v = prior_step(v, model, lam, tau, t, rng)
        if i >= burn_in:
            total += v.mean(dim=(0, 1))
    return total / (steps - burn_in), v, posterior_mean


def test_prior_step_without_noise_converges_to_the_posterior_mean():
    """τ = 0: the deterministic fixed point is the MAP = mean of the Gaussian posterior."""
    _, v, posterior_mean = _toy(tau=0.0, chains=1, steps=150, burn_in=149)
    assert torch.allclose(v[0, 0], posterior_mean, atol=1e-4)


def test_langevin_average_matches_the_posterior_mean():
    """τ > 0: the running average of 200 chains over 600 steps after 100 burn-in steps."""
    mean, v, posterior_mean = _toy(tau=0.5, chains=200, steps=700, burn_in=100)
    assert float(v.std()) > 0.1  # the chains do move
    assert torch.allclose(mean, posterior_mean, atol=0.01), (mean, posterior_mean)


def test_prior_step_zero_is_identity_and_noise_uses_rng():
    model = _gaussian_model((1, 4), shift=torch.ones(1, 4), scale=torch.tensor(2.0))
    v = torch.randn(3, 1, 4)
    assert torch.equal(prior_step(v, model, 0.0, 0.0, 0.01), v)
    a = prior_step(v, model, 0.1, 0.2, 0.01, torch.Generator().manual_seed(3))
    b = prior_step(v, model, 0.1, 0.2, 0.01, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, v)


# ---------------------------------------------------------------------- the solver
def _models(gen, skip=False):
    c = gen.block_channels(0) + (1 if skip else 0)
    return {
        "z": _gaussian_model((gen.n_latent, gen.style_dim)),
        0: _gaussian_model((c, 4, 4)),
    }


def test_zero_lam_tau_equals_ilo_with_infinite_radii(gen_stats):
    gen, stats = gen_stats
    op, y = _op(), _y(gen, batch=2)
    steps = (4, 3)
    ref = ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=ILOConfig(
            steps=steps,
            lr=0.05,
            lr_rampup=0,
            lr_rampdown=0,
            radii=(1e30, 1e30),
            phase="none",
            normalize=False,
            fit_gain=False,
            data_consistency=False,
            init="random",
        ),
        rng=torch.Generator().manual_seed(7),
    )
    res = sgilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        score_models=_models(gen),
        config=_config(steps=steps, lam=0.0, tau=0.0),
        rng=torch.Generator().manual_seed(7),
    )
    assert isinstance(res, SGILOResult)
    assert torch.allclose(res.image, ref.image, atol=3e-5)  # measured 3.2e-6
    assert np.allclose(res.history, ref.history, rtol=1e-4, atol=1e-7)
    assert res.diagnostics.prior_spaces == [0, "z"]


def test_chains_std_and_samples(gen_stats):
    gen, stats = gen_stats
    op, y = _op(), _y(gen, batch=2)
    steps = (3, 2)

    def run(**kw):
        return sgilo(
            y,
            op,
            generator=gen,
            latent_stats=stats,
            score_models=_models(gen, skip=True),
            config=_config(steps=steps, chains=3, **kw),
            rng=torch.Generator().manual_seed(3),
        )

    same = run(tau=0.0, shared_init=True)
    assert same.samples.shape == (3, 2, R, R) and same.std.shape == (2, R, R)
    # The K chains run as one batch of K·B rows, and identical rows of a batched convolution or
    # matmul need not be bit-identical: the SIMD lane / blocking a row lands in depends on its
    # position. Measured on AVX-512 and AVX2 at one thread: chain 2 off chain 0 by 1.2e-7 (1 ulp
    # of samples of magnitude ~1.2), std 5.6e-8; exact with 2 threads or ATen's scalar "default"
    # kernels; at most 9.5e-7 for other layouts (8 chains of 3 slices, samples up to ~4). 1e-5
    # is ~100× the difference here, and a real bug is orders of magnitude above it: chains with
    # their own initial z differ by 0.65 (std 0.28), shared z with noise at τ = 1e-3 instead of
    # 0 by 0.014 (std 0.0064).
    assert torch.allclose(same.samples[0], same.samples[1], rtol=0, atol=1e-5)
    assert torch.allclose(same.samples[0], same.samples[2], rtol=0, atol=1e-5)
    assert float(same.std.abs().max()) < 1e-5

    noisy = run(tau=0.05, shared_init=True, keep="last")
    assert not torch.equal(noisy.samples[0], noisy.samples[1])
    assert bool((noisy.std >= 0).all()) and float(noisy.std.max()) > 0
    assert torch.allclose(noisy.image, noisy.samples.mean(dim=0))
    assert torch.allclose(noisy.std, noisy.samples.abs().std(dim=0, correction=0))
    assert len(noisy.history) == 3 * sum(steps)
    assert len(noisy.diagnostics.measurement_losses) == 3


def test_batched_chains_draw_their_own_z(gen_stats):
    """The K chains run as one batch: without shared_init each chain has its own initial z (rows
    of one (K, B, …) draw), so the first chain is the single-chain run of the same seed (τ = 0)
    and the others differ from it."""
    gen, stats = gen_stats
    op, y = _op(), _y(gen, batch=2)

    def run(chains):
        return sgilo(
            y,
            op,
            generator=gen,
            latent_stats=stats,
            score_models=_models(gen),
            config=_config(steps=(3, 2), chains=chains, tau=0.0),
            rng=torch.Generator().manual_seed(4),
        )

    one, three = run(1), run(3)
    assert torch.allclose(three.samples[0], one.samples[0], atol=1e-5)
    assert np.allclose(three.history[:5], one.history, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(three.samples[1], three.samples[0], atol=1e-3)
    assert not torch.allclose(three.samples[2], three.samples[1], atol=1e-3)
    assert len(three.diagnostics.round_losses) == 3


def test_bad_inputs(gen_stats):
    gen, stats = gen_stats
    op, y = _op(), _y(gen)
    kw = dict(generator=gen, latent_stats=stats, config=SGILOConfig(steps=(1, 1)))
    wrong = _gaussian_model((gen.block_channels(0) + 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(19, 4, 4\).*\(16, 4, 4\)"):
        sgilo(y, op, **kw, score_models={0: wrong})
    wrong_z = _gaussian_model((gen.n_latent, gen.style_dim + 1))
    with pytest.raises(ValueError, match=r"\(6, 17\).*\(6, 16\)"):
        sgilo(y, op, **kw, score_models={"z": wrong_z})
    for key in ("w", 2, "block9"):
        with pytest.raises(ValueError, match="score model key"):
            sgilo(y, op, **kw, score_models={key: wrong})
    with pytest.raises(ValueError, match="latent statistics"):
        sgilo(y, op, generator=gen, latent_stats=None)
    with pytest.raises(ValueError):
        SGILOConfig(steps=(-1,))


def test_chains_share_the_csgm_start(gen_stats):
    """init="csgm": one CSGM fit per slice starts every chain. Without prior steps or noise the
    chains stay identical; with the score models' Langevin noise they differ. Progress counts
    the start's steps, then K per batched chain step."""
    gen, stats = gen_stats
    op, y = _op(), _y(gen, batch=2)
    calls: list[tuple[int, int]] = []
    base = dict(steps=(3, 2), init="csgm", init_steps=4, init_restarts=2, early_stop=False)
    quiet = sgilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=_config(chains=3, lam=0.0, tau=0.0, **base),
        rng=torch.Generator().manual_seed(2),
        callback=lambda done, total, _: calls.append((done, total)),
    )
    # rows of one batch, as in test_chains_std_and_samples: equal up to rounding (measured equal
    # here, for 3 to 8 chains of 1 to 3 slices); Langevin noise makes them differ by 0.15
    assert torch.allclose(quiet.samples[0], quiet.samples[1], rtol=0, atol=1e-5)
    assert torch.allclose(quiet.samples[0], quiet.samples[2], rtol=0, atol=1e-5)
    assert calls[-1] == (4 * 2 + 3 * 5, 4 * 2 + 3 * 5)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    noisy = sgilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        score_models=_models(gen),
        config=_config(chains=3, lam=0.1, tau=0.05, **base),
        rng=torch.Generator().manual_seed(2),
    )
    assert not torch.allclose(noisy.samples[0], noisy.samples[1])


def test_used_spaces_follow_the_rounds():
    """Round k ≥ 1 optimises h_{k−1}: a block-k model needs k + 2 rounds, z any step."""
    assert used_spaces(["z", 0, 1], (5, 5)) == [0, "z"]
    assert used_spaces(["z", 0, 1], (5, 5, 5)) == [0, 1, "z"]
    assert used_spaces([1], (5, 5, 0)) == []  # a round of 0 steps runs no prior step
    assert used_spaces(["z"], (0,)) == []
    assert used_spaces([0, 1, 2], SGILOConfig().steps) == [0, 1, 2]


def test_a_block_model_acts_only_when_its_round_runs(gen_stats):
    """A block-1 model (the shipped layout) changes the result once the schedule has its round
    (3 rounds); with 2 rounds it cannot act: the run warns, records no used space, and equals
    the run without any prior."""
    gen, stats = gen_stats
    op, y = _op(), _y(gen, batch=2)
    block1 = {1: _gaussian_model((gen.block_channels(1), 8, 8))}

    def run(steps, models, **kw):
        return sgilo(
            y,
            op,
            generator=gen,
            latent_stats=stats,
            score_models=models,
            config=_config(steps=steps, early_stop=False, **kw),
            rng=torch.Generator().manual_seed(3),
        )

    bare = run((3, 3, 3), {}, lam=0.0, tau=0.0)
    guided = run((3, 3, 3), block1, lam=0.5, tau=0.0)
    assert guided.diagnostics.prior_spaces_used == [1]
    assert not torch.allclose(guided.image, bare.image)
    with pytest.warns(UserWarning, match="needs at least k \\+ 2 rounds"):
        short = run((3, 3), block1, lam=0.5, tau=0.0)
    assert short.diagnostics.prior_spaces_used == []
    assert torch.equal(short.image, run((3, 3), {}, lam=0.0, tau=0.0).image)
