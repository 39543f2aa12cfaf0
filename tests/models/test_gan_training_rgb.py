"""StyleGAN-2 training on RGB images (3 channels): pixel mapping, augmentation, the loop, exact
resume, RGB sample grids, and the `sgilo train-gan --channels 3` / `train-score` / `sample`
commands on natural-train. Tiny networks (16², ≤ 16 channels)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import sgilo.models.stylegan2.train as train
import sgilo.models.stylegan2.train_step as train_step
import sgilo.pipeline.data.training as training_data
from sgilo.flows.cli import main
from sgilo.models.stylegan2 import GeneratorConfig, load_generator
from sgilo.models.stylegan2.augment import AugmentConfig, augment_batch, augment_images
from sgilo.models.stylegan2.grid import tile_grid
from sgilo.models.stylegan2.train import (
    TrainConfig,
    network_to_image,
    network_to_magnitude,
    to_network,
    train_gan,
)

R = 16


def colour_blobs(n: int = 24, seed: int = 0) -> torch.Tensor:
    """n RGB images (n, 3, R, R) in [0, 1]: a coloured Gaussian blob on a tinted background."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    out = torch.empty(n, 3, R, R)
    for i in range(n):
        cy, cx = (torch.rand(2, generator=gen) * (R - 6) + 3).tolist()
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
        colour, tint = torch.rand(3, generator=gen), 0.3 * torch.rand(3, generator=gen)
        out[i] = tint[:, None, None] + colour[:, None, None] * blob
    return out.clamp(0, 1)


def tiny_rgb_config(total_steps: int = 4, **kw) -> TrainConfig:
    g = GeneratorConfig(
        resolution=R, style_dim=16, n_mlp=2, image_channels=3, channels={4: 16, 8: 16, 16: 8}
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
        seed=5,
    )
    return TrainConfig(**(fields | kw))


def load_ckpt(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return colour_blobs()


# ---------------------------------------------------------------------- pixels, augmentation
def test_rgb_pixel_mapping_round_trip() -> None:
    x = torch.rand(2, 3, R, R)
    y = to_network(x, 3)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert torch.allclose(network_to_image(y), x, atol=1e-6)
    with pytest.raises(ValueError, match="network_to_image"):
        network_to_magnitude(y)
    m = torch.rand(2, 1, R, R)  # grey generators are unchanged
    assert torch.equal(network_to_image(to_network(m, 1)), network_to_magnitude(to_network(m, 1)))
    assert train.PIXEL_MAPPING[3].startswith("rgb")


def test_rgb_augmentation_shares_the_transform_across_channels(data) -> None:
    cfg = AugmentConfig()
    x = data[:8]
    out = augment_batch(x, torch.Generator().manual_seed(3), cfg)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augment_images(x, torch.Generator().manual_seed(3), cfg))
    # each channel alone, through the grey path with the same seed, gets the same transform
    for c in range(3):
        grey = augment_batch(x[:, c : c + 1], torch.Generator().manual_seed(3), cfg)
        assert torch.allclose(out[:, c : c + 1], grey, atol=1e-6)
    # intensity only: one gain for all three channels (colour ratios kept where not clipped)
    gain_only = AugmentConfig.identity().model_copy(update={"intensity": 0.1})
    small = x * 0.5
    g = augment_images(small, torch.Generator().manual_seed(1), gain_only)
    ratio = g / small.clamp_min(1e-3)
    per_image = ratio.flatten(1)
    mask = small.flatten(1) > 0.05
    for i in range(8):
        r = per_image[i][mask[i]]
        assert r.max() - r.min() < 1e-4
    with pytest.raises(ValueError, match="phase"):
        augment_batch(x, torch.Generator().manual_seed(0), cfg, phase=True)


def test_rgb_grid_tiles() -> None:
    tiles = np.random.default_rng(0).random((5, 3, 4, 4)).astype(np.float32)
    canvas = tile_grid(tiles, cols=3, pad=1)
    assert canvas.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    np.testing.assert_array_equal(canvas[1:5, 1:5], np.moveaxis(tiles[0], 0, -1))
    assert (canvas[0] == 1).all()


# ---------------------------------------------------------------------- the loop and resume
def test_rgb_config_checks(data, tmp_path) -> None:
    cfg = tiny_rgb_config(1)
    assert cfg.discriminator.image_channels == 3
    with pytest.raises(ValueError, match="phase_augmentation"):
        tiny_rgb_config(phase_augmentation=True)
    with pytest.raises(ValueError, match=r"expected real images \(N, 3, 16, 16\)"):
        train_gan(cfg, data[:, :1], tmp_path / "grey")
    with pytest.raises(ValueError, match="RGB values in"):
        train_gan(cfg, data * 2, tmp_path / "range")


def test_rgb_discriminator_learns(data) -> None:
    """With G frozen, D's loss on RGB reals vs fakes falls within a few steps."""
    cfg = tiny_rgb_config(8, lr=0.01, r1_gamma=0.0)
    run = train.new_run(cfg, torch.device("cpu"))
    run.g_opt.param_groups[0]["lr"] = 0.0
    sampler = train_step.as_sampler(data, R, 3)
    losses = [train_step.train_step(run, sampler, torch.device("cpu"))["loss_d"] for _ in range(8)]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_rgb_resume_is_bit_for_bit_and_writes_rgb(tmp_path, data) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    train_gan(tiny_rgb_config(4), data, full)
    assert train_gan(tiny_rgb_config(2), data, split).step == 2
    assert train_gan(tiny_rgb_config(4), data, split, resume=True).step == 4
    a, b = load_ckpt(full / "checkpoint.pt"), load_ckpt(split / "checkpoint.pt")
    for key in ("g", "d", "g_ema", "rng"):
        assert states_equal(a[key], b[key]), key
    for key in ("g_optim", "d_optim"):
        assert a[key]["state"].keys() == b[key]["state"].keys()
        for k in a[key]["state"]:
            assert states_equal(a[key]["state"][k], b[key]["state"][k])
    log = [json.loads(line)["step"] for line in (split / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]

    grid = Image.open(full / "samples" / "step_000004.png")
    assert grid.mode == "RGB" and grid.size == (2 * (R + 2) + 2, 2 * (R + 2) + 2)
    assert np.array_equal(
        np.asarray(grid), np.asarray(Image.open(split / "samples" / "step_000004.png"))
    )
    g, info = load_generator(full / "generator.pt")
    assert g.config.image_channels == 3 and info.extra["pixel_mapping"] == "rgb = (x + 1) / 2"
    assert g(torch.randn(2, 16)).shape == (2, 3, R, R)


# ---------------------------------------------------------------------- the command line
GAN = ["--resolution", "16", "--style-dim", "16", "--channel-max", "16", "--batch", "2"]


def test_cli_train_gan_rgb_on_natural_train_then_score_and_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training_data, "NATURAL_TRAIN_PATCHES", 32)
    out = tmp_path / "gan"
    args = ["train-gan", "--data", "natural-train", "--channels", "3", "--out", str(out)]
    assert main([*args, "--steps", "2", "--checkpoint-every", "2", *GAN]) == 0
    assert "natural-train: 32 images" in capsys.readouterr().err
    generator, info = load_generator(out / "generator.pt")
    assert generator.config.image_channels == 3
    assert info.extra["train_config"]["generator"]["image_channels"] == 3
    assert Image.open(out / "samples" / "step_000002.png").mode == "RGB"

    # the data source and the channel count must agree
    bad = ["train-gan", "--data", "natural-train", "--out", str(tmp_path / "x"), *GAN]
    assert main([*bad, "--steps", "1"]) == 2
    assert "channels=3" in capsys.readouterr().err
    bad = ["train-gan", "--data", "mni-train", "--channels", "3", "--out", str(tmp_path / "y")]
    assert main([*bad, "--steps", "1", *GAN]) == 2
    assert "grey" in capsys.readouterr().err

    # a latent score model on block 1 of the RGB generator, and an RGB sample sheet
    score = tmp_path / "score"
    assert (
        main(
            [
                "train-score",
                "--generator",
                str(out / "generator.pt"),
                "--space",
                "1",
                "--out",
                str(score),
                "--steps",
                "2",
                "--batch",
                "4",
            ]
        )
        == 0
    )
    sheet = tmp_path / "sheet.png"
    cmd = ["sample", "--generator", str(out / "generator.pt"), "--n", "3", "--out", str(sheet)]
    assert main([*cmd, "--score", str(score / "score_model.pt"), "--block", "1"]) == 0
    image = Image.open(sheet)
    assert image.mode == "RGB" and image.size == (3 * 18 + 2, 2 * 18 + 2)
