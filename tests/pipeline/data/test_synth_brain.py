"""The synthetic brain images: determinism, ranges, variety, the split, the train-gan sampler."""

from __future__ import annotations

import pytest
import torch

from sgilo.pipeline.data import mni, ood
from sgilo.pipeline.data.synth_brain import (
    SynthBrainConfig,
    SynthBrainSampler,
    _percentile,
    _planes,
    synth_brain_batch,
)
from sgilo.pipeline.data.synth_split import FAMILIES, split_positions

CLEAN = dict(
    oblique_prob=0.0,
    max_inplane_deg=0.0,
    max_deform_mm=0.0,
    bias_prob=0.0,
    lowres_prob=0.0,
    blur_prob=0.0,
    noise_prob=0.0,
    head_prob=0.0,
)


def test_deterministic_per_seed_and_in_range():
    a = synth_brain_batch(6, seed=3, size=32)
    assert a.shape == (6, 32, 32) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, synth_brain_batch(6, seed=3, size=32))
    assert not torch.equal(a, synth_brain_batch(6, seed=4, size=32))
    # per-image scaling: the 99.5th percentile maps to 1 (then clipped)
    assert (torch.quantile(a.flatten(1), 0.995, dim=1) > 0.99).all()
    assert (a.flatten(1).amax(1) == 1).all()


def test_percentile_matches_torch_quantile():
    x = torch.rand(4, 1000)
    assert torch.allclose(_percentile(x, 99.5), torch.quantile(x, 0.995, dim=1))


def test_split_positions_are_disjoint_and_hold_out_every_benchmark_plane():
    for family in FAMILIES:
        train, val = split_positions(family, "train"), split_positions(family, "validation")
        assert len(train) > 20 and val
        assert min(abs(t - v) for t in train for v in val) >= mni.MARGIN
    held_out = {
        "axial": (*mni.VALIDATION_Z, *ood.AXIAL_Z),
        "coronal": ood.CORONAL_Y,
        "sagittal": (*ood.SAGITTAL_X, *(196 - x for x in ood.SAGITTAL_X)),  # and mirror images
    }
    for family, planes in held_out.items():
        assert set(planes) <= set(split_positions(family, "validation"))


@pytest.mark.parametrize("split", ["train", "validation"])
def test_sampled_planes_come_from_their_split(split):
    rng = torch.Generator().manual_seed(0)
    planes = _planes(rng, 400, split, SynthBrainConfig(), "cpu")
    for k, family in enumerate(FAMILIES):
        chosen = set(planes.position[planes.family == k].long().tolist())
        assert chosen and chosen <= set(split_positions(family, split))


def test_train_and_validation_streams_differ():
    a = synth_brain_batch(4, seed=0, size=32, split="train")
    b = synth_brain_batch(4, seed=0, size=32, split="validation")
    assert not torch.allclose(a, b)


def _extent(images: torch.Tensor) -> torch.Tensor:
    """(rows spanned − columns spanned) by the non-background pixels, per image."""
    on = images > 0.05
    rows = on.any(2).float().sum(1)
    cols = on.any(1).float().sum(1)
    return rows - cols


def test_orientations_differ_in_shape():
    axial = SynthBrainConfig(family_probs=(1, 0, 0), **CLEAN)
    sagittal = SynthBrainConfig(family_probs=(0, 0, 1), **CLEAN)
    a = synth_brain_batch(24, seed=1, size=64, config=axial)
    s = synth_brain_batch(24, seed=1, size=64, config=sagittal)
    # axial brain: longer front to back (rows) than across; sagittal: front to back is columns
    assert _extent(a).mean() > _extent(s).mean() + 6


def test_t1_and_t2_contrasts_are_inverted_on_the_same_anatomy():
    t1 = SynthBrainConfig(contrast_probs=(0, 1, 0, 0, 0), gamma_std=0.0, **CLEAN)
    t2 = SynthBrainConfig(contrast_probs=(0, 0, 1, 0, 0), gamma_std=0.0, **CLEAN)
    x1 = synth_brain_batch(8, seed=2, size=64, config=t1)
    x2 = synth_brain_batch(8, seed=2, size=64, config=t2)
    brain = (x1 > 0.02) & (x2 > 0.02)
    assert ((x1 > 0.02) == (x2 > 0.02)).float().mean() > 0.9  # the same planes and deformations
    # the T1-brightest pixels (white matter) are darker than average on T2
    top1 = x1 >= torch.quantile(x1[brain], 0.9)
    assert x2[brain & top1].mean() < 0.9 * x2[brain].mean()


def test_the_head_option_adds_tissue_around_the_brain():
    off = synth_brain_batch(8, seed=5, size=64, config=SynthBrainConfig(**CLEAN))
    on = synth_brain_batch(8, seed=5, size=64, config=SynthBrainConfig(**{**CLEAN, "head_prob": 1}))
    assert ((on > 0.05).float().mean((1, 2)) > 1.15 * (off > 0.05).float().mean((1, 2))).all()


def test_sampler_replays_from_the_trainer_generator():
    sampler = SynthBrainSampler(16)
    x = sampler(3, torch.Generator().manual_seed(7))
    assert x.shape == (3, 1, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, sampler(3, torch.Generator().manual_seed(7)))


def test_train_gan_takes_synth_brain_alone_or_mixed(tmp_path, capsys):
    from sgilo.flows.cli import main

    out = tmp_path / "run"
    args = [
        "train-gan",
        "--data",
        "synth-brain",
        "--out",
        str(out),
        "--resolution",
        "16",
        "--style-dim",
        "8",
        "--channel-base",
        "32",
        "--channel-max",
        "8",
        "--channel-min",
        "8",
        "--batch",
        "2",
        "--steps",
        "2",
        "--checkpoint-every",
        "2",
    ]
    assert main(args) == 0 and (out / "generator.pt").exists()
    mixed = tmp_path / "mixed"
    mix = [*args[:3], "--data", "mni-train", "--real-fraction", "0.5", *args[3:]]
    mix[mix.index("--out") + 1] = str(mixed)
    capsys.readouterr()
    assert main(mix) == 0 and (mixed / "generator.pt").exists()
    err = capsys.readouterr().err
    assert "data: synth-brain: on the fly, 50% of each batch" in err
    assert "data: mni-train: 101 images, 50% of each batch" in err
    refused = {  # into a folder never written: refused for the reason given, not the folder
        "no loaded source to mix with": [*args, "--real-fraction", "0.5"],
        "mixes loaded images with synth-brain: add it": [*mix[:1], *mix[3:]],
        "expected a value in [0, 1], received 1.5": [*mix, "--real-fraction", "1.5"],
        "synth-brain: listed twice": [*mix[:3], *mix[1:]],
    }
    for message, command in refused.items():
        command[command.index("--out") + 1] = str(tmp_path / "never")
        assert main(command) == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "never").exists()
    # a CPU run continued at another batch (as a GPU would): only with --resume --new-batch
    more = [*args[:-5], "4", "--steps", "3", "--checkpoint-every", "2"]
    assert more[more.index("--batch") + 1] == "4"
    assert main([*more, "--new-batch"]) == 2  # --new-batch without --resume
    assert main([*more, "--resume"]) == 2  # a new batch needs --new-batch
    assert main([*more, "--resume", "--new-batch"]) == 0
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert (ckpt["step"], ckpt["images_seen"]) == (3, 2 * 2 + 4)


def test_mixed_sampler_draws_loaded_rows_at_its_fraction_and_replays():
    from sgilo.pipeline.data.synth_mix import MixedSampler

    synth = SynthBrainSampler(16)
    loaded = torch.full((3, 16, 16), 0.5)
    loaded[1], loaded[2] = 0.25, 0.75  # three constant images, unlike any synthetic one
    mixed = MixedSampler(synth, loaded, real_fraction=0.5)
    x = mixed(64, torch.Generator().manual_seed(1))
    assert x.shape == (64, 1, 16, 16)
    assert torch.equal(x, mixed(64, torch.Generator().manual_seed(1)))
    flat = x.flatten(1)
    real = (flat == flat[:, :1]).all(dim=1) & torch.isin(flat[:, 0], loaded[:, 0, 0])
    assert 20 <= int(real.sum()) <= 44  # Binomial(64, 1/2): mean 32, sd 4
    assert len(torch.unique(flat[real, 0])) == 3  # every loaded image is drawn
    assert not MixedSampler(synth, loaded, 0.0)(16, torch.Generator()).flatten(1).std(1).eq(0).any()
    every = MixedSampler(synth, loaded, 1.0)(32, torch.Generator()).flatten(1)
    assert (every == every[:, :1]).all() and torch.isin(every[:, 0], loaded[:, 0, 0]).all()
    with pytest.raises(ValueError, match="real_fraction"):
        MixedSampler(synth, loaded, 1.5)
    with pytest.raises(ValueError, match=r"\(N, 16, 16\)"):
        MixedSampler(synth, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MixedSampler(synth, loaded + 1)
