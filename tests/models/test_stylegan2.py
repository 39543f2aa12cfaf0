"""StyleGAN-2: splittable synthesis, noise, purity, checkpoint format and failures, latent stats,
discriminator. All on tiny configurations (16²/32², ≤ 32 channels, style_dim 16)."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch
import torch.nn.functional as F

from sgilo.models.stylegan2 import (
    CheckpointError,
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    SynthesisState,
    fit_latent_stats,
    gaussianized_to_w,
    load_generator,
    save_generator,
)
from sgilo.models.stylegan2.layers import ModulatedConv2d, StyledConv, Upsample, upfirdn2d

D = 16


def tiny_config(resolution: int = 32, image_channels: int = 3, **kw) -> GeneratorConfig:
    # widths: 4→16, 8→16, 16→16, 32→8
    fields = dict(
        resolution=resolution,
        style_dim=D,
        n_mlp=2,
        image_channels=image_channels,
        channel_base=128,
        channel_multiplier=2,
        channel_max=16,
    )
    return GeneratorConfig(**(fields | kw))


def tiny_generator(resolution: int = 32, image_channels: int = 3, seed: int = 0, **kw):
    torch.manual_seed(seed)
    g = Generator(tiny_config(resolution, image_channels, **kw))
    with torch.no_grad():  # noise strengths start at 0: make noise matter
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    return g


def random_ws(g: Generator, batch: int = 2, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, g.n_latent, g.style_dim, generator=gen)


class Payload:
    """A class that weights_only unpickling must refuse."""

    def __init__(self) -> None:
        self.x = 1


@pytest.fixture(scope="module")
def g32() -> Generator:
    return tiny_generator(32)


# ------------------------------------------------------------------ layers
@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_equals_per_sample_grouped_conv(upsample, demodulate):
    """Independent formulation: modulate/demodulate the weight per sample, grouped conv."""
    torch.manual_seed(0)
    b, cin, cout, k, r = 3, 5, 6, 3, 6
    m = ModulatedConv2d(cin, cout, k, 7, demodulate=demodulate, upsample=upsample).double()
    x = torch.randn(b, cin, r, r, dtype=torch.float64)
    style = torch.randn(b, 7, dtype=torch.float64)
    w = m.weight * m.scale * m.modulation(style)[:, None, :, None, None]  # (B, out, in, k, k)
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
    xs = x.reshape(1, b * cin, r, r)
    if upsample:
        wt = w.transpose(1, 2).reshape(b * cin, cout, k, k)
        ref = F.conv_transpose2d(xs, wt, stride=2, groups=b).reshape(b, cout, 2 * r + 1, -1)
        # [1,3,3,1] blur (×4 gain), padding 1 on each side: 2r+1 → 2r
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
        blur = (taps[:, None] * taps[None, :] / 64 * 4).expand(cout, 1, 4, 4)
        ref = F.conv2d(F.pad(ref, (1, 1, 1, 1)), blur, groups=cout)
    else:
        ref = F.conv2d(xs, w.reshape(b * cout, cin, k, k), padding=1, groups=b)
        ref = ref.reshape(b, cout, r, r)
    out = m(x, style)
    assert (
        out.shape == ref.shape == (b, cout, r * (2 if upsample else 1), r * (2 if upsample else 1))
    )
    assert torch.allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("noise_batch", [1, 3])
def test_styled_conv_equals_conv_noise_then_activation(upsample, noise_batch):
    """StyledConv folds the demodulation, noise, bias and √2 gain into one multiply-add before
    the leaky ReLU: the same values and gradients as its three parts applied one after another
    (modulated conv, noise injection, fused leaky ReLU), in float64."""
    torch.manual_seed(1)
    layer = StyledConv(5, 6, 3, 7, upsample=upsample).double()
    with torch.no_grad():  # non-zero noise strength and bias, as after training
        layer.noise.weight.fill_(0.3)
        layer.activate.bias.normal_()
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    style = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    side = 12 if upsample else 6
    noise = torch.randn(noise_batch, 1, side, side, dtype=torch.float64, requires_grad=True)
    out = layer(x, style, noise)
    ref = layer.activate(layer.noise(layer.conv(x, style), noise))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(out)
    inputs = (x, style, noise, *layer.parameters())  # ILO and SGILO optimise the noise maps
    grads = torch.autograd.grad((out * weights).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * weights).sum(), inputs)
    for g, r in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_upsample_keeps_constants_and_resamples_by_zero_insertion():
    up = Upsample().double()
    x = torch.ones(1, 2, 5, 5, dtype=torch.float64)
    y = up(x)
    assert y.shape == (1, 2, 10, 10)
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.ones(1, 2, 8, 8, dtype=torch.float64))
    # a unit impulse spreads as the (symmetric) 4×4 kernel, whose gain 4 keeps the DC level
    imp = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    imp[..., 1, 1] = 1
    y = upfirdn2d(imp, up.kernel, up=2, pad=(2, 1))
    assert torch.equal(y[0, 0, 1:5, 1:5], up.kernel) and y.sum().item() == pytest.approx(4.0)


# ------------------------------------------------------------------ synthesis
def test_indexing(g32):
    assert (g32.num_blocks, g32.n_latent, g32.num_noises) == (4, 8, 7)
    rows = [r for k in range(g32.num_blocks) for r in g32.block_latent_rows(k)]
    assert sorted(set(rows)) == list(range(g32.n_latent))
    noise = [i for k in range(g32.num_blocks) for i in g32.block_noise_indices(k)]
    assert noise == list(range(g32.num_noises))


def test_split_equals_full_at_every_block(g32):
    ws = random_ws(g32)
    with torch.no_grad():
        full = g32.synthesize(ws)
        for k in range(1, g32.num_blocks):
            h = g32.block_output(k - 1, ws)
            assert isinstance(h, SynthesisState)
            assert torch.equal(g32.synthesize(ws, start=k, h=h), full), k
            # one block at a time reproduces h_k, features and skip image
            step = g32.run_blocks(ws, start=k, end=k + 1, h=h)
            ref = g32.block_output(k, ws)
            assert torch.equal(step.features, ref.features) and torch.equal(step.skip, ref.skip)
        # the skip image carries information: dropping it (the reference bug) changes the image
        h = g32.block_output(1, ws)
        no_skip = SynthesisState(h.features, torch.zeros_like(h.skip))
        dropped = g32.synthesize(ws, start=2, h=no_skip)
        assert (dropped - full).abs().max() > 1e-3


def test_last_block_output_is_image(g32):
    ws = random_ws(g32)
    with torch.no_grad():
        h = g32.block_output(g32.num_blocks - 1, ws)
        assert torch.equal(h.skip, g32.synthesize(ws))
        # end < num_blocks gives a state, end == num_blocks the image
        assert isinstance(g32.synthesize(ws, end=2), SynthesisState)
        assert torch.equal(g32.synthesize(ws, end=g32.num_blocks), h.skip)


def test_split_needs_h_with_right_shapes(g32):
    ws = random_ws(g32)
    with pytest.raises(ValueError, match="needs h"):
        g32.synthesize(ws, start=2)
    h = g32.block_output(0, ws)
    with pytest.raises(ValueError, match="block 1"):
        g32.synthesize(ws, start=2, h=h)
    with pytest.raises(ValueError, match="ws must be"):
        g32.synthesize(ws[:, :3])


def test_noise_buffers_default_and_explicit_noises(g32):
    ws = random_ws(g32)
    with torch.no_grad():
        base = g32.synthesize(ws)
        assert torch.equal(base, g32.synthesize(ws, noises=g32.noise_buffers()))
        assert torch.equal(base, g32.synthesize(ws, noises=[None] * g32.num_noises))
        fresh = g32.random_noises(2, generator=torch.Generator().manual_seed(5))
        assert (g32.synthesize(ws, noises=fresh) - base).abs().max() > 1e-3
        one = [None] * g32.num_noises
        one[3] = torch.randn(1, 1, 16, 16)
        assert not torch.equal(g32.synthesize(ws, noises=one), base)
    with pytest.raises(ValueError, match="noise 3"):
        one[3] = torch.randn(1, 1, 8, 8)
        g32.synthesize(ws, noises=one)


def test_synthesize_is_pure(g32):
    before = {k: v.clone() for k, v in g32.state_dict().items()}
    ws = random_ws(g32).requires_grad_(True)
    noises = [n.clone().requires_grad_(True) for n in g32.random_noises(2)]
    h = g32.block_output(1, ws.detach(), noises)
    h = SynthesisState(h.features.detach().requires_grad_(True), h.skip.detach())
    out = g32.synthesize(ws, noises, start=2, h=h)
    grads = torch.autograd.grad(out.square().sum(), [ws, h.features, *noises[3:]])
    assert all(gr.abs().sum() > 0 for gr in grads)
    after = g32.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in g32.parameters())


@pytest.mark.parametrize("resolution", [16, 32])
@pytest.mark.parametrize("image_channels", [1, 2, 3])
def test_output_shapes(resolution, image_channels):
    g = tiny_generator(resolution, image_channels)
    with torch.no_grad():
        img = g(torch.randn(3, D))
        assert img.shape == (3, image_channels, resolution, resolution)
        ws = random_ws(g, 3)
        for k in range(g.num_blocks):
            h = g.block_output(k, ws)
            r = 4 * 2**k
            assert h.features.shape == (3, g.block_channels(k), r, r)
            assert h.skip.shape == (3, image_channels, r, r)
        w = g.mapping(torch.randn(3, D))
        assert w.shape == (3, D)
        assert torch.equal(g.synthesize(w), g.synthesize(w[:, None].expand(-1, g.n_latent, -1)))
        trunc = g(torch.randn(3, D), truncation=0.5, truncation_latent=torch.zeros(D))
        assert trunc.shape == img.shape


def test_config_validation():
    for bad in (4, 24, 2048):
        with pytest.raises(ValueError, match="power of two"):
            tiny_config(bad)
    with pytest.raises(ValueError):
        tiny_config(32, channels={4: 8, 8: 8})
    cfg = GeneratorConfig(resolution=256)  # the standard config-f widths
    assert cfg.channel_map() == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    assert cfg.n_latent == 14


# ------------------------------------------------------------------ key layout
def expected_keys_32() -> list[str]:
    styled = [
        "conv.weight",
        "conv.modulation.weight",
        "conv.modulation.bias",
        "noise.weight",
        "activate.bias",
    ]
    rgb = ["bias", "conv.weight", "conv.modulation.weight", "conv.modulation.bias"]
    keys = ["style.1.weight", "style.1.bias", "style.2.weight", "style.2.bias", "input.input"]
    keys += [f"conv1.{s}" for s in styled] + [f"to_rgb1.{s}" for s in rgb]
    for i in range(6):
        keys += [f"convs.{i}.{s}" for s in styled]
        if i % 2 == 0:
            keys.append(f"convs.{i}.conv.blur.kernel")
    for i in range(3):
        keys += [f"to_rgbs.{i}.{s}" for s in rgb] + [f"to_rgbs.{i}.upsample.kernel"]
    keys += [f"noises.noise_{i}" for i in range(7)]
    return keys


def test_state_dict_keys_are_the_standard_layout(g32):
    keys = expected_keys_32()
    assert len(keys) == len(set(keys))
    assert set(g32.state_dict()) == set(keys)
    sd = g32.state_dict()
    assert sd["convs.0.conv.weight"].shape == (1, 16, 16, 3, 3)
    assert sd["to_rgbs.2.conv.weight"].shape == (1, 3, 8, 1, 1)
    assert sd["to_rgb1.bias"].shape == (1, 3, 1, 1)
    assert sd["noises.noise_6"].shape == (1, 1, 32, 32)
    assert sd["convs.0.conv.blur.kernel"].sum() == pytest.approx(4.0)


# ------------------------------------------------------------------ checkpoints
def test_save_load_round_trip(tmp_path):
    g32 = tiny_generator(32, seed=3)
    stats = fit_latent_stats(g32, n=512, batch=256, generator_rng=torch.Generator().manual_seed(0))
    g32.w_avg.copy_(g32.mean_latent(256, torch.Generator().manual_seed(1)))
    path = save_generator(tmp_path / "g.pt", g32, latent_stats=stats, extra={"note": "tiny"})
    g, info = load_generator(path)
    assert info.source == "sgilo" and info.config == g32.config and info.extra == {"note": "tiny"}
    assert torch.equal(info.latent_stats.mu, stats.mu)
    assert torch.equal(info.latent_stats.sigma, stats.sigma)
    assert torch.equal(g.w_avg, g32.w_avg)
    ws = random_ws(g32)
    with torch.no_grad():
        assert torch.equal(g.synthesize(ws), g32.synthesize(ws))
        z = torch.ones(2, D)
        assert torch.equal(g(z, truncation=0.7), g32(z, truncation=0.7))


@pytest.mark.parametrize("with_args", [False, True])
def test_foreign_rosinality_file_loads_strictly(tmp_path, g32, with_args):
    ckpt = {"g_ema": g32.state_dict(), "latent_avg": torch.randn(D)}
    if with_args:  # training checkpoints carry the argparse namespace
        ckpt |= {"d": {"x": torch.zeros(1)}, "args": argparse.Namespace(size=32, lr=0.002)}
    torch.save(ckpt, tmp_path / "foreign.pt")
    g, info = load_generator(tmp_path / "foreign.pt")
    assert info.source == "rosinality" and info.latent_stats is None
    assert info.config.channel_map() == g32.config.channel_map()
    assert (info.config.resolution, info.config.style_dim, info.config.n_mlp) == (32, D, 2)
    assert torch.equal(g.w_avg, ckpt["latent_avg"])
    ws = random_ws(g32)
    with torch.no_grad():
        assert torch.equal(g.synthesize(ws), g32.synthesize(ws))
    g2, _ = load_generator(tmp_path / "foreign.pt", config=g32.config)
    assert g2.config == g32.config


def write_bad(tmp_path, kind: str, g32: Generator):
    path = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        save_generator(path, g32)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "random":
        path.write_bytes(
            torch.randint(
                0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
            )
            .numpy()
            .tobytes()
        )
    elif kind == "custom_class":
        torch.save({"g_ema": g32.state_dict(), "payload": Payload()}, path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"g_ema": Payload()}, protocol=2))
    elif kind == "no_g_ema":
        torch.save({"g": g32.state_dict(), "latent_avg": torch.zeros(D)}, path)
    elif kind == "not_dict":
        torch.save([torch.zeros(3)], path)
    return path


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("missing", "no such file"),
        ("truncated", "truncated or corrupt"),
        ("random", "not a torch checkpoint or corrupt"),
        ("custom_class", r"arbitrary code .*Payload.*weights_only=True"),
        ("plain_pickle", r"arbitrary code .*Payload"),
        ("no_g_ema", "no 'g_ema' entry"),
        ("not_dict", "expected a dict"),
    ],
)
def test_bad_files_raise_checkpoint_error(tmp_path, g32, kind, pattern):
    path = write_bad(tmp_path, kind, g32) if kind != "missing" else tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_generator(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert isinstance(err.value, ValueError)


def test_wrong_architecture_is_named(tmp_path, g32):
    path = tmp_path / "foreign32.pt"
    torch.save({"g_ema": g32.state_dict(), "latent_avg": torch.zeros(D)}, path)
    # wrong resolution: the extra 32² block's keys are listed
    with pytest.raises(CheckpointError, match=r"16×16.*unexpected keys \(convs\.4\.") as err:
        load_generator(path, config=tiny_config(16))
    assert str(path) in str(err.value)
    # wrong channel widths: the first mismatched key and both shapes
    wide = tiny_config(32, channels={4: 16, 8: 16, 16: 16, 32: 16})
    with pytest.raises(
        CheckpointError,
        match=r"at convs\.4\.conv\.weight: file has "
        r"\(1, 8, 16, 3, 3\).*\(1, 16, 16, 3, 3\)",
    ):
        load_generator(path, config=wide)
    # image channels
    with pytest.raises(CheckpointError, match="to_rgb1"):
        load_generator(path, config=tiny_config(32, image_channels=1))
    # a sgilo file whose config disagrees with the one asked for
    save_generator(tmp_path / "own.pt", g32)
    with pytest.raises(CheckpointError, match="differs"):
        load_generator(tmp_path / "own.pt", config=tiny_config(16))
    # a 16² generator's file loaded as 32²: missing keys named
    torch.save({"g_ema": tiny_generator(16).state_dict()}, tmp_path / "g16.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \(convs\.4\."):
        load_generator(tmp_path / "g16.pt", config=tiny_config(32))


# ------------------------------------------------------------------ latent statistics
def test_fit_latent_stats_and_gaussianized_w(g32):
    rng = torch.Generator().manual_seed(0)
    mu, sigma = fit_latent_stats(g32, n=4000, batch=1000, generator_rng=rng)
    assert mu.shape == sigma.shape == (D,) and (sigma > 0).all()
    rng0 = torch.Generator().manual_seed(0)
    again = fit_latent_stats(g32, n=4000, batch=1000, generator_rng=rng0)
    assert torch.allclose(again.mu, mu) and torch.allclose(again.sigma, sigma)
    # independent check on fresh samples: the mapping output with its last activation undone
    with torch.no_grad():
        x = F.leaky_relu(g32.mapping(torch.randn(4000, D, generator=rng)), 5.0)
    assert torch.allclose(x.mean(0), mu, atol=4 * sigma.max().item() / 4000**0.5)
    assert torch.allclose(x.std(0), sigma, rtol=0.1)
    w0 = gaussianized_to_w(torch.zeros(3, D), mu, sigma)
    assert torch.allclose(w0, F.leaky_relu(mu, 0.2).expand(3, -1))
    # Gaussian z through the map has the statistics of mapping(z)
    with torch.no_grad():
        w = g32.mapping(torch.randn(4000, D, generator=rng))
    wz = gaussianized_to_w(torch.randn(4000, D, generator=rng), mu, sigma)
    assert torch.allclose(wz.mean(0), w.mean(0), atol=0.1 * sigma.max().item())


# ------------------------------------------------------------------ discriminator
@pytest.mark.parametrize("batch", [4, 3])
def test_discriminator_shapes_and_gradients(batch):
    torch.manual_seed(0)
    cfg = DiscriminatorConfig.matching(tiny_config(16, image_channels=2))
    d = Discriminator(cfg)
    x = torch.randn(batch, 2, 16, 16, requires_grad=True)
    out = d(x)
    assert out.shape == (batch, 1)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    keys = set(d.state_dict())
    for k in (
        "convs.0.0.weight",
        "convs.0.1.bias",
        "convs.1.conv1.0.weight",
        "convs.1.conv2.0.kernel",
        "convs.1.conv2.1.weight",
        "convs.1.conv2.2.bias",
        "convs.1.skip.0.kernel",
        "convs.1.skip.1.weight",
        "convs.2.skip.1.weight",
        "final_conv.0.weight",
        "final_conv.1.bias",
        "final_linear.0.weight",
        "final_linear.1.bias",
    ):
        assert k in keys, k
    assert "convs.3.conv1.0.weight" not in keys  # 16 → 8 → 4: two residual blocks
    with pytest.raises(ValueError, match="expected images"):
        d(torch.randn(2, 3, 16, 16))
