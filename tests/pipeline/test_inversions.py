"""ILO inversions of training images (pipeline/inversions.py) and the commands that use them
(`sgilo invert-training`, `sgilo train-score --latents`), with a tiny random StyleGAN-2 (16², 3
blocks) and a few steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgilo.flows.cli import main
from sgilo.models.score.model import load_score_model
from sgilo.models.score.network import default_network_config
from sgilo.models.score.sources import TensorSource
from sgilo.models.score.train import ScoreTrainConfig, train_score
from sgilo.models.stylegan2.checkpoint import fit_latent_stats, save_generator
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.pipeline.inversions import (
    InversionsError,
    check_inversions,
    invert_images,
    load_inversions,
    save_inversions,
)
from sgilo.pipeline.methods import Prior
from sgilo.pipeline.provenance import sha256_file
from sgilo.pipeline.solvers.sgilo import check_score_models

R = 16
STEPS = (3, 3, 3)


def _generator(channels: int = 1) -> tuple[Generator, object]:
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        resolution=R, style_dim=16, n_mlp=2, image_channels=channels, channel_base=64,
        channel_max=16,
    )  # fmt: skip
    gen = Generator(cfg).eval().requires_grad_(False)
    stats = fit_latent_stats(gen, n=500, batch=500, generator_rng=torch.Generator().manual_seed(1))
    return gen, stats


@pytest.fixture(scope="module")
def prior(tmp_path_factory) -> Prior:
    gen, stats = _generator()
    path = tmp_path_factory.mktemp("gen") / "generator.pt"
    save_generator(path, gen, latent_stats=stats)
    return Prior(gen, stats, path)


def _images(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, R, R) if channels == 1 else (n, 3, R, R)
    return rng.uniform(0, 1, shape).astype(np.float32)


def test_shapes_and_determinism(prior):
    gen = prior.generator
    x = _images(3)
    h0 = invert_images(x, prior, 0, batch=2, steps=STEPS)
    assert h0.shape == (3, gen.block_channels(0), 4, 4) and h0.dtype == torch.float32
    assert bool(torch.isfinite(h0).all())
    again = invert_images(x, prior, 0, batch=2, steps=STEPS)
    assert torch.equal(h0, again)  # seeded
    h1 = invert_images(x[:1], prior, 1, steps=STEPS, include_skip=True)
    assert h1.shape == (1, gen.block_channels(1) + 1, 8, 8)
    # the last block: no round optimises it, it is block 2 run on the final h_1
    h2 = invert_images(x[:1], prior, 2, steps=STEPS)
    assert h2.shape == (1, gen.block_channels(2), 16, 16)
    with pytest.raises(ValueError, match="3 rounds"):
        invert_images(x, prior, 1, steps=(3, 3))
    with pytest.raises(ValueError, match="images must be"):
        invert_images(_images(1)[:, :8], prior, 0, steps=STEPS)
    with pytest.raises(ValueError, match="space must be"):
        invert_images(x, prior, 3, steps=STEPS)


def test_inversion_fits_the_image(prior):
    """For the last block with the skip image, the skip image IS the generator's output: after
    the fit, (skip + 1)/2 is clearly closer to the target than the initial latent's image."""
    gen = prior.generator
    with torch.no_grad():
        z = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
        target = (gen(z)[:, 0] + 1) / 2

    def error(steps: tuple[int, ...]) -> float:
        h = invert_images(target.numpy(), prior, 2, steps=steps, include_skip=True)
        return float((((h[:, -1] + 1) / 2 - target) ** 2).mean())

    assert error((20, 20, 20)) < 0.75 * error((0, 0, 0))


def test_rgb_prior():
    gen, stats = _generator(channels=3)
    prior = Prior(gen, stats, None)
    h = invert_images(_images(2, channels=3), prior, 1, steps=STEPS, include_skip=True)
    assert h.shape == (2, gen.block_channels(1) + 3, 8, 8)


def test_score_model_on_inversions_is_accepted_by_sgilo(prior, tmp_path):
    gen = prior.generator
    latents = invert_images(_images(4), prior, 1, steps=STEPS)
    path = save_inversions(
        tmp_path / "lat.pt",
        latents,
        {"space": 1, "generator_sha256": sha256_file(prior.path), "sources": ["test"]},
    )
    loaded, info = load_inversions(path)
    assert torch.equal(loaded, latents) and info["num_images"] == 4 and info["space"] == 1
    check_inversions(loaded, info, gen, 1, sha256_file(prior.path), path)
    config = ScoreTrainConfig(
        network=default_network_config(tuple(latents.shape[1:]), hidden=8, depth=1),
        space="block1",
        batch=4,
        steps=2,
        warmup_steps=1,
        log_every=1,
    )
    train_score(config, TensorSource(loaded), tmp_path / "score")
    model = load_score_model(tmp_path / "score" / "score_model.pt")
    assert set(check_score_models({model.space: model}, gen)) == {1}


def test_check_inversions_refuses_mismatches(prior, tmp_path):
    gen = prior.generator
    lat = torch.zeros(2, gen.block_channels(1), 8, 8)
    info = {"space": 1, "generator_sha256": "a" * 64}
    with pytest.raises(ValueError, match="block 1, but --space is 0"):
        check_inversions(lat, info, gen, 0)
    with pytest.raises(ValueError, match="another generator"):
        check_inversions(lat, info, gen, 1, "b" * 64)
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        check_inversions(torch.zeros(2, 3, 8, 8), info, gen, 1)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InversionsError, match="bad.pt"):
        load_inversions(bad)
    with pytest.raises(InversionsError, match="no such file"):
        load_inversions(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(InversionsError, match="not a latents file"):
        load_inversions(tmp_path / "other.pt")


def test_cli_invert_then_train_score(prior, tmp_path, capsys):
    data = tmp_path / "slices.npy"
    np.save(data, _images(5))
    latents = tmp_path / "lat.pt"
    common = ["--model", str(prior.path), "--data", str(data), "--out", str(latents)]
    args = ["invert-training", *common, "--space", "1", "--limit", "3", "--steps", "2,2,2"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "3/3" in err
    loaded, info = load_inversions(latents)
    assert loaded.shape == (3, prior.generator.block_channels(1), 8, 8)
    assert info["generator_sha256"] == sha256_file(prior.path)
    assert info["sources"] == [str(data)] and info["num_images"] == 3

    score = ["train-score", "--generator", str(prior.path), "--steps", "2", "--batch", "4"]
    score += ["--hidden", "8", "--depth", "1", "--latents", str(latents)]
    assert main([*score, "--space", "1", "--out", str(tmp_path / "s")]) == 0
    model = load_score_model(tmp_path / "s" / "score_model.pt")
    assert model.space == "block1"
    assert tuple(model.data_shape) == tuple(loaded.shape[1:])
    check_score_models({model.space: model}, prior.generator)

    # a latents file of another block is refused, as is a missing or corrupt one
    capsys.readouterr()
    assert main([*score, "--space", "0", "--out", str(tmp_path / "s0")]) == 2
    err = capsys.readouterr().err.strip()
    assert "block 1" in err and "--space is 0" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s0" / "score_model.pt").exists()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    args = ["train-score", "--generator", str(prior.path), "--space", "1", "--out"]
    assert main([*args, str(tmp_path / "s1"), "--latents", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.pt" in err and len(err.splitlines()) == 1
    assert main([*args, str(tmp_path / "s2"), "--latents", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_cli_invert_training_bad_input(prior, tmp_path, capsys):
    out = str(tmp_path / "lat.pt")
    base = ["invert-training", "--model", str(prior.path), "--out", out]
    assert main([*base, "--data", str(tmp_path / "nope"), "--space", "1"]) == 2
    assert "nope" in capsys.readouterr().err
    data = tmp_path / "x.npy"
    np.save(data, _images(2))
    assert main([*base, "--data", str(data), "--space", "5"]) == 2
    assert "space" in capsys.readouterr().err
    assert main([*base, "--data", str(data), "--space", "1", "--steps", "2,x"]) == 2
    assert "steps" in capsys.readouterr().err
