"""Latent score models: VP-SDE identities, known-answer Gaussian problems (trained and analytic),
normalization chain rule, Tweedie denoiser, SGILO step, sampler, resumable training, sources and
checkpoint failures. Tiny networks, single-threaded, a few seconds in all."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from torch import Tensor, nn

from sgilo.models.score import (
    VPSDE,
    ConvScoreNet,
    ConvScoreNetConfig,
    MLPScoreNet,
    MLPScoreNetConfig,
    ScoreCheckpointError,
    ScoreModel,
    ScoreTrainConfig,
    gan_latent_source,
    load_score_model,
    save_score_model,
    split_block_tensor,
    tensor_source,
    train_score,
)
from sgilo.models.stylegan2 import Generator, GeneratorConfig, LatentStats

SDE = VPSDE()


class Payload:
    """A class that weights_only unpickling must refuse."""

    def __init__(self) -> None:
        self.x = 1


class GaussianEps(nn.Module):
    """The exact ε-prediction for normalized data u_0 ~ N(a, diag(b²)) (per coordinate):
    E[ε | u_t = u] = s·(u − m·a)/(m²b² + s²)."""

    def __init__(self, a: Tensor, b: Tensor, sde: VPSDE = SDE) -> None:
        super().__init__()
        self.a, self.b, self.sde = a, b, sde
        self.data_shape = tuple(a.shape)

    def forward(self, u: Tensor, t: Tensor) -> Tensor:
        m = self.sde.mean_coeff(t).reshape(-1, *[1] * len(self.data_shape))
        s = self.sde.std(t).reshape_as(m)
        return s * (u - m * self.a) / (m**2 * self.b**2 + s**2)


def gaussian_log_density(u: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(u; mean, diag(var)) summed over the sample dims; u: (B, ...)."""
    dims = tuple(range(1, u.dim()))
    return (-0.5 * ((u - mean) ** 2 / var + torch.log(2 * math.pi * var))).sum(dim=dims)


# ---------------------------------------------------------------------- SDE
def test_sde_schedule_identities():
    t = torch.linspace(1e-3, 1, 101, dtype=torch.float64)
    m, s = SDE.mean_coeff(t), SDE.std(t)
    assert torch.allclose(m**2 + s**2, torch.ones_like(t), atol=1e-14, rtol=0)
    assert torch.allclose(SDE.alpha_bar(t), m**2, atol=1e-15)
    assert torch.allclose(SDE.beta(t), 0.1 + 19.9 * t, atol=1e-13)
    # m(t) = exp(−½ ∫β): against a fine trapezoid integration of β
    grid = torch.linspace(0, 0.7, 70_001, dtype=torch.float64)
    integral = torch.trapezoid(SDE.beta(grid), grid)
    assert SDE.mean_coeff(torch.tensor(0.7, dtype=torch.float64)).item() == pytest.approx(
        math.exp(-0.5 * integral.item()), rel=1e-9
    )
    assert SDE.std(torch.tensor(1e-6, dtype=torch.float64)).item() > 0  # expm1: no cancellation
    assert torch.allclose(SDE.noise_level(t), s / m)
    eps = torch.randn(4, 3, dtype=torch.float64)
    tt = torch.rand(4, dtype=torch.float64)
    assert torch.allclose(SDE.eps_from_score(SDE.score_from_eps(eps, tt), tt), eps)


def test_perturb_statistics_and_exact_relation():
    g = torch.Generator().manual_seed(0)
    n, t = 40_000, 0.3
    x0 = torch.full((n, 2), 3.0, dtype=torch.float64)
    x0[:, 1] = -1.0
    xt, eps = SDE.perturb(x0, t, g)
    t64 = torch.tensor(t, dtype=torch.float64)
    m, s = SDE.mean_coeff(t64).item(), SDE.std(t64).item()
    assert torch.allclose(xt, m * x0 + s * eps, atol=1e-14)
    se = s / math.sqrt(n)
    assert torch.allclose(xt.mean(0), m * x0[0], atol=5 * se)
    assert torch.allclose(xt.std(0), torch.full((2,), s, dtype=torch.float64), rtol=0.02)
    # per-sample times, and the t sampler's range
    tt = SDE.sample_time(1000, g, dtype=torch.float64)
    assert tt.min() >= 1e-3 and tt.max() <= 1
    xt2, eps2 = SDE.perturb(x0[:1000], tt, g)
    want = SDE.mean_coeff(tt)[:, None] * x0[:1000] + SDE.std(tt)[:, None] * eps2
    assert torch.allclose(xt2, want, atol=1e-14)


# ---------------------------------------------------------------------- networks
def test_network_shapes_and_param_counts():
    conv = ConvScoreNet(ConvScoreNetConfig(channels=8, resolution=4, hidden=16, depth=2, groups=4))
    x, t = torch.randn(3, 8, 4, 4), torch.rand(3) * 0.9 + 0.01
    out = conv(x, t)
    assert out.shape == (3, 8, 4, 4) and torch.equal(out, torch.zeros_like(out))  # zero-init out
    mlp = MLPScoreNet(MLPScoreNetConfig(dim=5, n_rows=4, hidden=16, depth=2, time_dim=8))
    assert mlp(torch.randn(3, 4, 5), t).shape == (3, 4, 5)
    with pytest.raises(ValueError, match=r"x must be \(B, 4, 5\)"):
        mlp(torch.randn(3, 5), t)
    with pytest.raises(ValueError, match="groups=3 must divide hidden=16"):
        ConvScoreNetConfig(channels=8, resolution=4, hidden=16, groups=3)
    # the production sizes stay CPU-friendly (a few M parameters)
    for cfg in (
        MLPScoreNetConfig(dim=512, n_rows=18),
        ConvScoreNetConfig(channels=512, resolution=8),
    ):
        net = MLPScoreNet(cfg) if cfg.kind == "mlp" else ConvScoreNet(cfg)
        assert sum(p.numel() for p in net.parameters()) < 2_500_000


# ---------------------------------------------------------------------- normalization, Tweedie
def analytic_model(dtype=torch.float64) -> tuple[ScoreModel, Tensor, Tensor]:
    """A ScoreModel whose network is the exact ε for u_0 ~ N(a, b²); non-trivial shift/scale."""
    a = torch.tensor([[0.5, -1.0, 0.0], [1.5, 0.2, -0.3]], dtype=dtype)
    b = torch.tensor([[1.0, 0.5, 2.0], [0.7, 1.2, 0.3]], dtype=dtype)
    shift = torch.tensor([[3.0, -2.0, 0.5], [0.0, 1.0, -4.0]])
    scale = torch.tensor([[2.0, 0.5, 1.5], [0.25, 3.0, 1.0]])
    model = ScoreModel(GaussianEps(a, b), SDE, shift, scale, gaussian_skip=False).to(dtype)
    return model, a, b


@pytest.mark.parametrize("t", [0.01, 0.3, 0.9])
def test_score_is_the_chain_rule_of_the_normalized_density(t):
    """score(h) = ∇_h log p_t(h) with p_t the law of shift + scale·u_t: checked by autograd."""
    model, a, b = analytic_model()
    g = torch.Generator().manual_seed(1)
    h = model.shift + model.scale * torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    h.requires_grad_(True)
    t64 = torch.tensor(t, dtype=torch.float64)
    m, s = SDE.mean_coeff(t64), SDE.std(t64)
    u = (h - model.shift) / model.scale
    log_p = gaussian_log_density(u, m * a, m**2 * b**2 + s**2) - torch.log(model.scale).sum()
    (grad,) = torch.autograd.grad(log_p.sum(), h)
    assert torch.allclose(model.score(h.detach(), t), grad, rtol=1e-10, atol=1e-12)
    # Tweedie: E[h_0 | h_t] from the Gaussian posterior mean of u_0
    post_u = a + m * b**2 * (u.detach() - m * a) / (m**2 * b**2 + s**2)
    want = model.shift + model.scale * post_u
    assert torch.allclose(model.denoise(h.detach(), t), want, rtol=1e-10, atol=1e-12)


def test_sgilo_step_identity_and_form():
    model, _, _ = analytic_model()
    v = torch.randn(4, 2, 3, dtype=torch.float64)
    assert torch.equal(model.sgilo_step(v, 0.0, 0.0), v)
    lam, tau, t = 0.3, 0.1, 0.01
    out = model.sgilo_step(v, lam, tau, t, torch.Generator().manual_seed(7))
    xi = torch.randn(v.shape, generator=torch.Generator().manual_seed(7), dtype=v.dtype)
    want = v + lam * (model.denoise(v, t) - v) + tau * model.scale * xi
    assert torch.allclose(out, want, atol=1e-12)


def test_sampler_reproduces_the_analytic_gaussian():
    model, a, b = analytic_model()
    x = model.sample(4000, steps=100, generator=torch.Generator().manual_seed(3))
    mean, std = model.shift + model.scale * a, model.scale * b
    # measured: max |Δmean|/std = 0.020, max |std/std_true − 1| = 0.019 (4000 samples: the
    # sampling error alone is ~0.016 per coordinate)
    assert ((x.mean(0) - mean).abs() / std).max() < 0.1
    assert ((x.std(0) / std) - 1).abs().max() < 0.1


# ---------------------------------------------------------------------- training: known answer
MU = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, -1.0])
SIGMA = torch.tensor([0.5, 1.0, 2.0, 0.3, 1.5, 0.8])


def gaussian_source(n: int, generator: torch.Generator) -> Tensor:
    return (MU + SIGMA * torch.randn(n, 6, generator=generator))[:, None, :]


def analytic_score(model: ScoreModel, h: Tensor, t: float) -> Tensor:
    """∇_h log p_t(h) for x_0 ~ N(μ, σ²) diffused (as the model does) in normalized coordinates:
    −(u − m·μ_u)/((m²σ_u² + s²)·scale), u = (h − shift)/scale, μ_u, σ_u the normalized μ, σ.
    With shift = 0, scale = 1 this is the plain VP-SDE score −(x − mμ)/(m²σ² + s²)."""
    m, s = SDE.mean_coeff(t), SDE.std(t)
    mu_u, sig_u = (MU - model.shift) / model.scale, SIGMA / model.scale
    u = model.normalize(h)
    return -(u - m * mu_u) / (m**2 * sig_u**2 + s**2) / model.scale


@pytest.mark.parametrize(
    "gaussian_skip, steps, tolerances",
    # Measured mean relative errors ‖ŝ − s‖/‖s‖ at t = 0.05, 0.2, 0.5 (seed 0, these settings):
    # network alone, 300 steps: 0.115, 0.052, 0.031; with the Gaussian skip, 150 steps: 0.069,
    # 0.024, 0.009. (Other init seeds, network alone: 0.18–0.36 at t = 0.05, where U[ε, 1]
    # draws few training times; ≤ 0.08 at t ≥ 0.2.) Tolerances: about 2× the measured values.
    [(False, 300, (0.25, 0.12, 0.08)), (True, 150, (0.14, 0.05, 0.02))],
)
def test_trained_score_recovers_the_analytic_gaussian_score(
    tmp_path, gaussian_skip, steps, tolerances
):
    config = ScoreTrainConfig(
        network=MLPScoreNetConfig(dim=6, hidden=64, depth=2, time_dim=32),
        lr=3e-3,
        warmup_steps=20,
        batch=256,
        steps=steps,
        ema_decay=0.99,
        gaussian_skip=gaussian_skip,
        checkpoint_every=1000,
    )
    model = train_score(config, gaussian_source, tmp_path)
    assert torch.allclose(model.shift.squeeze(), MU, atol=0.1)  # standardized from 4096 draws
    g = torch.Generator().manual_seed(5)
    for t, tol in zip((0.05, 0.2, 0.5), tolerances, strict=True):
        u_t, _ = SDE.perturb(model.normalize(gaussian_source(2000, g)), t, g)
        h = model.unnormalize(u_t)
        with torch.no_grad():
            got, want = model.score(h, t), analytic_score(model, h, t)
        rel = ((got - want).norm(dim=-1) / want.norm(dim=-1)).mean().item()
        assert rel < tol, f"t={t}: relative score error {rel:.3f} >= {tol}"


def test_denoiser_trained_on_a_point_mass_moves_towards_it(tmp_path):
    x_star = torch.tensor([1.0, -0.5, 2.0, 0.0])
    config = ScoreTrainConfig(
        network=MLPScoreNetConfig(dim=4, hidden=32, depth=1, time_dim=16),
        lr=3e-3,
        warmup_steps=10,
        batch=128,
        steps=150,
        ema_decay=0.9,
        normalization="none",
    )
    model = train_score(config, x_star.expand(64, 1, 4).clone(), tmp_path)
    g = torch.Generator().manual_seed(3)
    x0 = x_star.expand(256, 1, 4)
    ratios = []
    with torch.no_grad():
        for t in (0.01, 0.05, 0.2, 0.5):
            v, _ = SDE.perturb(x0, t, g)
            before = (v - x0).norm(dim=-1).mean()
            ratios.append(((model.denoise(v, t) - x0).norm(dim=-1).mean() / before).item())
        # measured ratios: 0.48, 0.28, 0.28, 0.22
        assert max(ratios) < 0.75 and sum(ratios) / len(ratios) < 0.5, ratios
        v = x0 + 0.03 * torch.randn(x0.shape, generator=g)
        w = model.sgilo_step(v, 0.5, 0.0)  # measured: mean distance 0.057 → 0.040
        assert (w - x0).norm(dim=-1).mean() < 0.85 * (v - x0).norm(dim=-1).mean()


# ---------------------------------------------------------------------- training: resume
def small_config(**kw) -> ScoreTrainConfig:
    fields = dict(
        network=MLPScoreNetConfig(dim=3, n_rows=2, hidden=8, depth=1, row_hidden=4, time_dim=8),
        lr=1e-2,
        warmup_steps=2,
        batch=16,
        steps=6,
        ema_decay=0.9,
        normalization_samples=64,
        checkpoint_every=2,
        log_every=1,
    )
    return ScoreTrainConfig(**(fields | kw))


def row_source(n: int, generator: torch.Generator) -> Tensor:
    z = torch.randn(n, 2, 3, generator=generator)
    return torch.stack([z[:, 0], 0.5 * z[:, 0] + 0.2 * z[:, 1] + 1.0], dim=1)


def load_plain(path):
    return torch.load(path, weights_only=True)


def assert_same_tree(a, b):
    if isinstance(a, Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_tree(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_tree(x, y)
    else:
        assert a == b


def test_resume_after_a_crash_is_bit_for_bit(tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    train_score(small_config(), row_source, full)

    def crash(record):
        if record["step"] == 5:  # after the checkpoint at step 4
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_score(small_config(), row_source, crashed, progress=crash)
    assert load_plain(crashed / "train_state.pt")["step"] == 4
    with pytest.raises(FileExistsError, match="resume=True"):
        train_score(small_config(), row_source, crashed)
    with pytest.raises(ScoreCheckpointError, match=r"train_state\.pt: the config differs.*lr="):
        train_score(small_config(lr=2e-2), row_source, crashed, resume=True)
    train_score(small_config(), row_source, crashed, resume=True)
    a, b = load_plain(full / "train_state.pt"), load_plain(crashed / "train_state.pt")
    assert_same_tree(a, b)
    assert_same_tree(load_plain(full / "score_model.pt"), load_plain(crashed / "score_model.pt"))
    logs = [
        [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
        for d in (full, crashed)
    ]
    assert [r["step"] for r in logs[1]] == list(range(1, 7))  # the step-5 record was dropped
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    # extending a run (only `steps` may change) continues the same path
    train_score(small_config(steps=8), row_source, crashed, resume=True)
    train_score(small_config(steps=8), row_source, tmp_path / "long")
    assert_same_tree(
        load_plain(crashed / "train_state.pt")["network"],
        load_plain(tmp_path / "long" / "train_state.pt")["network"],
    )
    broken = tmp_path / "broken" / "train_state.pt"
    broken.parent.mkdir()
    broken.write_bytes((full / "train_state.pt").read_bytes()[:100])
    with pytest.raises(ScoreCheckpointError, match=r"broken/train_state\.pt: truncated or corrupt"):
        train_score(small_config(), row_source, broken.parent, resume=True)


# ---------------------------------------------------------------------- sources
def tiny_generator() -> Generator:
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        resolution=8, style_dim=8, n_mlp=1, image_channels=1, channel_base=64, channel_max=8
    )
    return Generator(cfg).eval()


def test_gan_latent_source_shapes_and_determinism():
    g = tiny_generator()
    z_src = gan_latent_source(g, "z")
    assert z_src(3, torch.Generator().manual_seed(0)).shape == (3, g.n_latent, 8)
    src = gan_latent_source(g, 0, noise="fixed")
    x = src(5, torch.Generator().manual_seed(1))
    assert x.shape == (5, *src.sample_shape) == (5, 8, 4, 4)
    assert torch.equal(x, src(5, torch.Generator().manual_seed(1)))
    with torch.no_grad():  # the same draws through the generator's own API
        w = g.mapping(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)))
        want = g.block_output(0, w[:, None].expand(-1, g.n_latent, -1))
    assert torch.allclose(x, want.features)
    both = gan_latent_source(g, 0, noise="fixed", include_skip=True, chunk=2)
    y = both(5, torch.Generator().manual_seed(1))
    assert y.shape == (5, 9, 4, 4)
    state = split_block_tensor(y, 1)
    close = dict(rtol=1e-5, atol=1e-5)  # chunked vs whole-batch convolutions: float rounding
    assert torch.allclose(state.features, want.features, **close)
    assert torch.allclose(state.skip, want.skip, **close)
    # random noise maps: drawn up front, so the chunk size does not change the samples
    one = gan_latent_source(g, 1, include_skip=True)(5, torch.Generator().manual_seed(2))
    two = gan_latent_source(g, 1, include_skip=True, chunk=2)(5, torch.Generator().manual_seed(2))
    assert one.shape == (5, 9, 8, 8) and torch.allclose(one, two, **close)
    stats = LatentStats(torch.zeros(8), torch.ones(8))
    h = gan_latent_source(g, 0, stats, w_from="gaussianized")(2, torch.Generator().manual_seed(0))
    assert h.shape == (2, 8, 4, 4)
    with pytest.raises(ValueError, match="needs latent_stats"):
        gan_latent_source(g, 0, w_from="gaussianized")
    with pytest.raises(ValueError, match="space must be"):
        gan_latent_source(g, 5)


def test_tensor_source_draws_rows():
    data = torch.arange(24.0).reshape(6, 2, 2)
    src = tensor_source(data)
    x = src(10, torch.Generator().manual_seed(0))
    assert x.shape == (10, 2, 2)
    assert all(any(torch.equal(row, d) for d in data) for row in x)
    assert torch.equal(x, src(10, torch.Generator().manual_seed(0)))


def test_conv_model_trains_saves_and_loads(tmp_path):
    g = tiny_generator()
    config = ScoreTrainConfig(
        network=ConvScoreNetConfig(
            channels=8, resolution=4, hidden=8, depth=1, groups=2, time_dim=8
        ),
        space="block0",
        batch=8,
        steps=3,
        normalization_samples=32,
    )
    model = train_score(config, gan_latent_source(g, 0), tmp_path)
    assert model.shift.shape == model.scale.shape == (8, 1, 1)  # per channel
    loaded = load_score_model(tmp_path / "score_model.pt")
    assert loaded.space == "block0" and loaded.extra["step"] == 3
    h, t = torch.randn(2, 8, 4, 4), torch.tensor([0.01, 0.5])
    assert torch.equal(loaded.eps(h, t), model.eps(h, t))
    assert torch.equal(loaded.denoise(h, 0.01), model.denoise(h, 0.01))


# ---------------------------------------------------------------------- checkpoint failures
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("score") / "model.pt"
    net = MLPScoreNet(MLPScoreNetConfig(dim=3, n_rows=2, hidden=8, depth=1, time_dim=8))
    save_score_model(path, ScoreModel(net, space="z"), extra={"note": "x", "n": [1, 2]})
    return path


def test_save_load_round_trip(saved):
    model = load_score_model(saved)
    assert model.extra == {"note": "x", "n": [1, 2]} and model.gaussian_skip
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="not a plain value"):
        save_score_model(saved.parent / "bad.pt", model, extra={"obj": Payload()})


def _bad_file(kind: str, good, path):
    ckpt = torch.load(good, weights_only=True)
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    elif kind == "not_dict":
        torch.save([1, 2], path)
    elif kind == "wrong_format":
        torch.save(ckpt | {"format": "sgilo-stylegan2"}, path)
    elif kind == "missing_keys":
        del ckpt["state_dict"]
        torch.save(ckpt, path)
    elif kind == "bad_config":
        ckpt["network_config"]["hidden"] = -1
        torch.save(ckpt, path)
    elif kind == "wrong_shape":
        ckpt["network_config"]["hidden"] = 16
        torch.save(ckpt, path)
    elif kind == "unexpected_key":
        ckpt["state_dict"]["network.extra.weight"] = torch.zeros(1)
        torch.save(ckpt, path)
    elif kind == "custom_class":
        torch.save(ckpt | {"payload": Payload()}, path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"format": Payload()}, protocol=2))
    return path


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("missing", "no such file"),
        ("directory", "not a regular file"),
        ("truncated", "truncated or corrupt"),
        ("garbage", "corrupt"),
        ("not_dict", "expected a dict, the file holds a list"),
        ("wrong_format", "not a score-model checkpoint"),
        ("missing_keys", "missing entries: state_dict"),
        ("bad_config", r"invalid stored config \(mlp\.hidden"),
        ("wrong_shape", "shape mismatch at state_dict.network"),
        ("unexpected_key", "1 unexpected keys"),
        ("custom_class", r"arbitrary code .*Payload.*weights_only=True"),
        ("plain_pickle", r"arbitrary code .*Payload"),
    ],
)
def test_bad_files_raise_score_checkpoint_error(tmp_path, saved, kind, pattern):
    path = _bad_file(kind, saved, tmp_path / "bad.pt")
    with pytest.raises(ScoreCheckpointError, match=pattern) as info:
        load_score_model(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
