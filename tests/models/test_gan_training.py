"""StyleGAN-2 training: the loop runs and learns, EMA, exact resume, checkpoint format, samples,
config checks on resume, and the data-side augmentation. Tiny networks (16², ≤ 16 channels)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sgilo.models.stylegan2.train as train
import sgilo.models.stylegan2.train_step as train_step
from sgilo.models.stylegan2 import GeneratorConfig, load_generator
from sgilo.models.stylegan2.augment import (
    AugmentConfig,
    augment_batch,
    augment_magnitudes,
    phase_augment,
    random_smooth_phase,
)
from sgilo.models.stylegan2.train import TrainConfig, network_to_magnitude, to_network, train_gan

R = 16


def blobs(n: int = 32, seed: int = 0) -> torch.Tensor:
    """n images (n, 1, R, R) in [0, 1]: one or two Gaussian blobs each."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    out = torch.zeros(n, 1, R, R)
    for i in range(n):
        for _ in range(1 + i % 2):
            cy, cx = (torch.rand(2, generator=gen) * (R - 6) + 3).tolist()
            s = 1.5 + 2 * float(torch.rand((), generator=gen))
            out[i, 0] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out.clamp(0, 1)


def tiny_config(total_steps: int = 4, image_channels: int = 1, **kw) -> TrainConfig:
    g = GeneratorConfig(
        resolution=R,
        style_dim=16,
        n_mlp=2,
        image_channels=image_channels,
        channels={4: 16, 8: 16, 16: 8},
    )
    fields = dict(
        generator=g,
        batch_size=4,
        total_steps=total_steps,
        r1_every=2,
        r1_gamma=1.0,
        ema_kimg=0.01,
        ema_rampup=None,
        checkpoint_every=2,
        sample_every=2,
        log_every=1,
        progress_every=1,
        sample_count=4,
        seed=3,
    )
    return TrainConfig(**(fields | kw))


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def optim_equal(a: dict, b: dict) -> bool:
    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    return all(states_equal(a["state"][k], b["state"][k]) for k in a["state"])


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return blobs()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data):
    """4 steps in one go (checkpoints at 2 and 4), with the initial weights and progress."""
    out = tmp_path_factory.mktemp("full")
    reports: list[dict] = []
    result = train_gan(tiny_config(4), data, out, progress=reports.append)
    return out, result, reports


@pytest.fixture(scope="module")
def initial() -> dict[str, dict[str, torch.Tensor]]:
    """The networks' weights before the first step (same seed as full_run)."""
    run = train.new_run(tiny_config(4), torch.device("cpu"))
    return {"g": run.g.state_dict(), "d": run.d.state_dict()}


# ---------------------------------------------------------------------- the loop
def test_training_changes_weights_and_logs(full_run, initial):
    out, result, reports = full_run
    ckpt = load_ckpt(out / "checkpoint.pt")
    assert ckpt["step"] == 4 and ckpt["images_seen"] == 16 and result.step == 4
    for net, key in (("g", "input.input"), ("d", "final_linear.1.weight")):
        assert not torch.equal(ckpt[net][key], initial[net][key])

    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in records)
    assert records[0]["r1"] is not None and records[1]["r1"] is None  # lazy R1, every 2 steps
    assert records[-1]["kimg"] == pytest.approx(0.016)
    assert [p["step"] for p in reports] == [1, 2, 3, 4]
    assert set(reports[-1]) == {"step", "total", "kimg", "losses", "images_per_s"}
    assert set(reports[-1]["losses"]) == {"d", "g", "r1"} and reports[-1]["total"] == 4


def test_discriminator_learns_on_fixed_generator(data):
    """With G frozen (lr → tiny), D's loss falls: the losses and updates point the right way."""
    cfg = tiny_config(12, lr=0.01, r1_gamma=0.0)
    run = train.new_run(cfg, torch.device("cpu"))
    run.g_opt.param_groups[0]["lr"] = 0.0
    sampler = train_step.as_sampler(data, R)
    losses = [train_step.train_step(run, sampler, torch.device("cpu"))["loss_d"] for _ in range(12)]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


def test_ema_differs_from_g_and_follows_it(full_run, initial):
    out, _, _ = full_run
    ckpt = load_ckpt(out / "checkpoint.pt")
    g, ema, g0 = ckpt["g"], ckpt["g_ema"], initial["g"]
    params = [k for k in g if not k.startswith("noises.") and "kernel" not in k]
    assert any(not torch.equal(g[k], ema[k]) for k in params)
    assert any(not torch.equal(g0[k], ema[k]) for k in params)
    # the EMA has moved from the initial weights towards g
    dist = sum((ema[k] - g[k]).pow(2).sum() for k in params)
    dist_start = sum((g0[k] - g[k]).pow(2).sum() for k in params)
    assert 0 < dist < dist_start


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_contents_and_weights_only(full_run):
    out, result, _ = full_run
    ckpt = load_ckpt(out / "checkpoint.pt")  # weights_only=True (would raise otherwise)
    assert {
        "g",
        "d",
        "g_ema",
        "g_optim",
        "d_optim",
        "step",
        "images_seen",
        "rng",
        "train_config",
    } <= set(ckpt)
    assert set(ckpt["rng"]) == {"data", "augment", "latent", "torch_cpu"}
    assert all(isinstance(v, torch.Tensor) for v in ckpt["rng"].values())
    assert TrainConfig.model_validate(ckpt["train_config"]) == tiny_config(4)
    assert states_equal(ckpt["g_ema"], {k: v for k, v in result.g_ema.state_dict().items()})
    assert not (out / ".checkpoint.pt.tmp").exists()

    g, info = load_generator(out / "generator.pt")
    assert states_equal(g.state_dict(), ckpt["g_ema"])
    assert info.extra["step"] == 4 and info.extra["pixel_mapping"].startswith("magnitude")
    assert torch.count_nonzero(info.latent_avg) > 0


def test_resume_is_bit_for_bit(full_run, tmp_path, data):
    out, _, _ = full_run
    first = train_gan(tiny_config(2), data, tmp_path)
    assert first.step == 2
    second = train_gan(tiny_config(4), data, tmp_path, resume=True)
    assert second.step == 4
    a, b = load_ckpt(out / "checkpoint.pt"), load_ckpt(tmp_path / "checkpoint.pt")
    for key in ("g", "d", "g_ema"):
        assert states_equal(a[key], b[key]), key
    assert optim_equal(a["g_optim"], b["g_optim"]) and optim_equal(a["d_optim"], b["d_optim"])
    assert states_equal(a["rng"], b["rng"])
    assert (a["step"], a["images_seen"]) == (b["step"], b["images_seen"])
    log = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]
    grid_a = np.asarray(Image.open(out / "samples" / "step_000004.png"))
    grid_b = np.asarray(Image.open(tmp_path / "samples" / "step_000004.png"))
    assert np.array_equal(grid_a, grid_b)


def test_time_budget_stops_with_a_checkpoint_and_resume_finishes_exactly(full_run, tmp_path, data):
    out, _, _ = full_run
    stopped = train_gan(tiny_config(4), data, tmp_path, max_seconds=0.0)
    assert stopped.step == 1  # the first step ends past a zero budget
    assert load_ckpt(tmp_path / "checkpoint.pt")["step"] == 1
    assert (tmp_path / "samples" / "step_000001.png").exists()
    finished = train_gan(tiny_config(4), data, tmp_path, resume=True)
    assert finished.step == 4
    a, b = load_ckpt(out / "checkpoint.pt"), load_ckpt(tmp_path / "checkpoint.pt")
    for key in ("g", "d", "g_ema"):
        assert states_equal(a[key], b[key]), key


def test_resume_refuses_a_different_config(full_run, data):
    out, _, _ = full_run
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match=r"batch_size.*lr|lr.*batch_size"):
        train_gan(tiny_config(6, batch_size=2, lr=0.001), data, out, resume=True)
    with pytest.raises(ValueError, match=r"generator\.style_dim"):
        g = tiny_config().generator.model_copy(update={"style_dim": 8})
        train_gan(tiny_config(6, generator=g, discriminator=None), data, out, resume=True)
    with pytest.raises(ValueError, match="total_steps"):  # may grow, not shrink
        train_gan(tiny_config(3), data, out, resume=True)
    with pytest.raises(FileExistsError):  # a fresh start never overwrites a run
        train_gan(tiny_config(4), data, out)
    # the same config (already finished) is a no-op
    assert train_gan(tiny_config(4), data, out, resume=True).step == 4
    assert (out / "checkpoint.pt").read_bytes() == before


def test_sample_grids_written(full_run):
    out, _, _ = full_run
    names = sorted(p.name for p in (out / "samples").glob("*.png"))
    assert names == ["step_000002.png", "step_000004.png"]
    grid = np.asarray(Image.open(out / "samples" / "step_000004.png"))
    assert grid.dtype == np.uint8 and grid.shape == (2 * (R + 2) + 2, 2 * (R + 2) + 2)


def test_two_channel_training_with_phase_augmentation(tmp_path, data):
    cfg = tiny_config(1, image_channels=2, phase_augmentation=True, checkpoint_every=1)
    result = train_gan(cfg, data.numpy()[:, 0], tmp_path)  # (N, R, R) arrays are accepted
    assert result.g_ema.config.image_channels == 2
    _, info = load_generator(tmp_path / "generator.pt")
    assert info.extra["pixel_mapping"].startswith("complex")
    assert (tmp_path / "samples" / "step_000001.png").exists()


def test_batch_sampler_callable(tmp_path, data):
    calls = []

    def sampler(batch: int, generator: torch.Generator) -> torch.Tensor:
        calls.append(batch)
        return data[torch.randint(len(data), (batch,), generator=generator)]

    assert train_gan(tiny_config(1), sampler, tmp_path / "ok").step == 1
    assert calls == [4]

    def wrong(batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(batch, 1, 8, 8, generator=generator)

    with pytest.raises(ValueError, match="expected real images"):
        train_gan(tiny_config(1), wrong, tmp_path / "wrong")


def test_config_validation_and_bad_data(tmp_path, data):
    with pytest.raises(ValueError, match="phase_augmentation"):
        tiny_config(phase_augmentation=True)
    with pytest.raises(ValueError, match="(?i)extra"):
        TrainConfig(generator=tiny_config().generator, learning_rate=1.0)
    cfg = tiny_config(1)
    assert cfg.discriminator.resolution == R and cfg.discriminator.image_channels == 1
    assert TrainConfig(generator=cfg.generator).effective_r1_gamma == pytest.approx(10 / 64**2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_gan(cfg, data * 2, tmp_path / "a")
    with pytest.raises(ValueError, match="expected real images"):
        train_gan(cfg, torch.rand(4, 1, 8, 8), tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="cannot read the training checkpoint") as error:
        train_gan(cfg, data, tmp_path / "c", resume=True)
    assert "\n" not in str(error.value)


def test_pixel_mapping_round_trip():
    m = torch.rand(3, 1, R, R)
    assert torch.allclose(network_to_magnitude(to_network(m, 1)), m, atol=1e-6)
    two = to_network(m, 2)
    assert two.shape == (3, 2, R, R) and torch.equal(network_to_magnitude(two), m)


# ---------------------------------------------------------------------- augmentation
def test_augmentation_shapes_ranges_and_determinism(data):
    cfg = AugmentConfig()
    a = augment_magnitudes(data[:8], torch.Generator().manual_seed(5), cfg)
    b = augment_magnitudes(data[:8], torch.Generator().manual_seed(5), cfg)
    c = augment_magnitudes(data[:8], torch.Generator().manual_seed(6), cfg)
    assert a.shape == (8, 1, R, R) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, data[:8])
    p = augment_batch(data[:8], torch.Generator().manual_seed(5), cfg, phase=True)
    assert p.shape == (8, 2, R, R) and p.abs().max() <= 1
    # the draws do not depend on pixel values: the same seed transforms other images alike
    ones = augment_magnitudes(torch.ones(8, 1, R, R), torch.Generator().manual_seed(5), cfg)
    assert ones.shape == a.shape


def test_flips_really_flip(data):
    x = data[:16]
    only_flip = AugmentConfig.identity().model_copy(update={"flip_prob": 1.0})
    assert torch.equal(
        augment_magnitudes(x, torch.Generator().manual_seed(0), only_flip), x.flip(-1)
    )
    half = AugmentConfig.identity().model_copy(update={"flip_prob": 0.5})
    y = augment_magnitudes(x, torch.Generator().manual_seed(0), half)
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(16)]
    kept = [torch.equal(y[i], x[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)
    none = AugmentConfig.identity()
    assert torch.equal(augment_magnitudes(x, torch.Generator().manual_seed(0), none), x)


def test_affine_jitter_is_small(data):
    only_affine = AugmentConfig.identity().model_copy(
        update={"rotation_deg": 5.0, "scale": 0.05, "translation": 0.04}
    )
    y = augment_magnitudes(data, torch.Generator().manual_seed(1), only_affine)
    change = (y - data).abs().mean() / data.mean()
    assert 0 < change < 0.5  # moved, but not scrambled


def test_phase_augmentation_preserves_magnitude(data):
    m = data[:8] * 0.9 + 0.05
    out = phase_augment(m, torch.Generator().manual_seed(2))
    assert out.shape == (8, 2, R, R)
    assert torch.allclose(torch.hypot(out[:, 0:1], out[:, 1:2]), m, atol=1e-6, rtol=0)
    phase = torch.atan2(out[:, 1], out[:, 0])
    assert phase.std() > 0.01  # a real phase was applied


def test_smooth_phase_is_band_limited_and_bounded():
    phi = random_smooth_phase(
        6, 32, torch.Generator().manual_seed(4), max_freq=3, amplitude=math.pi
    )
    assert phi.shape == (6, 1, 32, 32)
    peak = phi.abs().amax(dim=(1, 2, 3))
    assert (peak <= math.pi + 1e-5).all() and (peak > 0).all()
    spectrum = torch.fft.fftshift(torch.fft.fft2(phi[:, 0].double()), dim=(-2, -1)).abs()
    inside = spectrum[:, 16 - 3 : 16 + 4, 16 - 3 : 16 + 4].pow(2).sum()
    assert inside / spectrum.pow(2).sum() > 1 - 1e-9


def test_resume_at_a_new_batch_continues_only_when_asked(full_run, tmp_path, data):
    out, _, _ = full_run
    first = train_gan(tiny_config(2), data, tmp_path)
    with pytest.raises(ValueError, match=r"batch_size.*new_batch"):
        train_gan(tiny_config(4, batch_size=8), data, tmp_path, resume=True)
    before = load_ckpt(tmp_path / "checkpoint.pt")
    more = train_gan(tiny_config(4, batch_size=8), data, tmp_path, resume=True, new_batch=True)
    assert more.step == 4 and more.images_seen == first.images_seen + 2 * 8
    after = load_ckpt(tmp_path / "checkpoint.pt")
    assert TrainConfig.model_validate(after["train_config"]).batch_size == 8
    assert not states_equal(before["g"], after["g"])  # it trained on from the checkpoint ...
    reference = load_ckpt(out / "checkpoint.pt")  # ... and differs from the batch-4 run
    assert not states_equal(reference["g"], after["g"])
    # the optimizer's step counters went on from the checkpoint's, not from zero
    steps = [s["step"] for s in after["g_optim"]["state"].values() if "step" in s]
    assert steps and all(float(s) == 4 for s in steps)
