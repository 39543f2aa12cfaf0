"""RGB natural-image patches: the split by image, shapes, ranges, determinism, the grid of
validation crops, and the RGB path of ``load_training_images`` (natural-train, PNG folders)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

import sgilo.pipeline.data.training as training_data
from sgilo.pipeline.data import natural
from sgilo.pipeline.data.natural import (
    TRAINING_IMAGES,
    VALIDATION_IMAGES,
    natural_train_patches,
    natural_validation_patches,
)
from sgilo.pipeline.data.training import load_training_images, natural_train_count


def test_split_is_by_image_disjoint_and_rgb() -> None:
    assert not set(TRAINING_IMAGES) & set(VALIDATION_IMAGES)
    assert len(VALIDATION_IMAGES) >= 2 and len(TRAINING_IMAGES) >= 4
    assert set(VALIDATION_IMAGES) == {"chelsea", "coffee"}
    assert set(TRAINING_IMAGES) | set(VALIDATION_IMAGES) <= set(natural.natural_image_names())
    for name in TRAINING_IMAGES + VALIDATION_IMAGES:
        raw = getattr(skimage.data, name)()
        assert raw.dtype == np.uint8 and raw.ndim == 3 and raw.shape[-1] == 3, name
    # the same photograph under another name must not leak into training
    assert np.array_equal(skimage.data.cat(), skimage.data.chelsea())
    assert "cat" not in TRAINING_IMAGES


def test_train_patches_shape_range_and_determinism() -> None:
    a = natural_train_patches(16, 40, seed=0)
    assert a.shape == (40, 3, 16, 16) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.array_equal(a, natural_train_patches(16, 40, seed=0))
    assert not np.array_equal(a, natural_train_patches(16, 40, seed=1))
    # colour, not grey: the channels differ
    assert np.abs(a[:, 0] - a[:, 1]).mean() > 0.01
    # a prefix is the same draw
    assert np.array_equal(natural_train_patches(16, 10, seed=0), a[:10])
    assert natural_train_patches(16, 0).shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match="size"):
        natural_train_patches(2, 4)


def test_train_patches_come_from_training_images_only(monkeypatch) -> None:
    """With a single-colour stand-in per image, each patch's colour names its source image."""
    colours = {
        n: np.array([20 * i + 10, 200 - 20 * i, 7 * i + 3], np.uint8)
        for i, n in enumerate(TRAINING_IMAGES + VALIDATION_IMAGES)
    }
    textured = np.indices((300, 400)).sum(0) % 2 * 20  # std > FLAT_STD, mean offset 10

    def fake(name: str) -> np.ndarray:
        return (colours[name][None, None, :] + textured[..., None]).astype(np.uint8)

    monkeypatch.setattr(natural, "_rgb_uint8", fake)
    patches = natural_train_patches(8, 30, seed=2)
    means = np.round(patches.mean(axis=(2, 3)) * 255 - 10).astype(int)
    train = {tuple(int(v) for v in colours[n]) for n in TRAINING_IMAGES}
    assert all(tuple(m) in train for m in means.tolist())
    val = natural_validation_patches(8, 8)
    means = np.round(val.mean(axis=(2, 3)) * 255 - 10).astype(int)
    held_out = {tuple(int(v) for v in colours[n]) for n in VALIDATION_IMAGES}
    assert {tuple(m) for m in means.tolist()} == held_out


def test_validation_patches_fixed_and_spread() -> None:
    v = natural_validation_patches(16, 12)
    assert v.shape == (12, 3, 16, 16) and v.dtype == np.float32
    assert v.min() >= 0.0 and v.max() <= 1.0
    assert np.array_equal(v, natural_validation_patches(16, 12))
    # no two crops identical: they are spread over the images and the two scales
    flat = v.reshape(12, -1)
    assert len({row.tobytes() for row in flat}) == 12
    # the first crop of group 0 is the top-left corner of chelsea at side 2·16, resized
    import torch
    import torch.nn.functional as F

    crop = torch.from_numpy(skimage.data.chelsea()[:32, :32].copy()).permute(2, 0, 1)[None]
    want = F.interpolate(crop.float() / 255, size=(16, 16), mode="bilinear", antialias=True)
    np.testing.assert_allclose(v[0], want[0].clamp(0, 1).numpy(), atol=1e-6)


def test_natural_train_source_rgb(monkeypatch) -> None:
    monkeypatch.setattr(training_data, "NATURAL_TRAIN_PATCHES", 24)
    images, summary = load_training_images(["natural-train"], 16, channels=3)
    assert images.shape == (24, 3, 16, 16) and images.dtype == np.float32
    assert np.array_equal(images, natural_train_patches(16, 24, seed=0))
    assert summary["channels"] == 3 and summary["sources"]["natural-train"]["images"] == 24


def test_natural_train_count_memory_cap() -> None:
    assert natural_train_count(64) == training_data.NATURAL_TRAIN_PATCHES
    assert natural_train_count(128) * 3 * 4 * 128**2 <= training_data.NATURAL_TRAIN_MAX_BYTES
    assert natural_train_count(128) < training_data.NATURAL_TRAIN_PATCHES


def test_source_and_channels_must_agree(tmp_path) -> None:
    with pytest.raises(ValueError, match="channels=3"):
        load_training_images(["natural-train"], 16)
    with pytest.raises(ValueError, match="grey"):
        load_training_images(["mni-train"], 16, channels=3)
    with pytest.raises(ValueError, match="unknown bundled source"):
        load_training_images(["natural-validation"], 16, channels=3)
    with pytest.raises(ValueError, match="channels"):
        load_training_images(["natural-train"], 16, channels=2)
    np.save(tmp_path / "stack.npy", np.ones((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="grey MRI"), pytest.warns(UserWarning, match="skipped"):
        load_training_images([str(tmp_path)], 16, channels=3)


def test_folder_of_pngs_keeps_colour(tmp_path) -> None:
    yy, xx = np.mgrid[:20, :30]
    rgb = np.stack([8 * xx, 12 * yy, np.full_like(xx, 60)], -1).astype(np.uint8)  # (20, 30, 3)
    Image.fromarray(rgb).save(tmp_path / "a_rgb.png")
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 9, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "b_rgba.png")
    grey = (4 * xx[:, :20] + 5).astype(np.uint8)  # (20, 20) square
    Image.fromarray(grey).save(tmp_path / "c_grey.png")

    images, summary = load_training_images([str(tmp_path)], 20, channels=3)
    assert images.shape == (3, 3, 20, 20) and images.dtype == np.float32
    # RGB: centre 20×20 square (columns 5..24), divided by 255 — no percentile scaling
    want = np.moveaxis(rgb[:, 5:25], -1, 0) / 255.0
    np.testing.assert_allclose(images[0], want, atol=1e-6)
    np.testing.assert_allclose(images[1], want, atol=1e-6)  # alpha dropped
    np.testing.assert_allclose(images[2], np.repeat(grey[None] / 255.0, 3, 0), atol=1e-6)
    assert summary["sources"][str(tmp_path)]["files_by_type"]["image"] == 3
    # the grey path (channels=1) still converts the same folder to (N, size, size)
    grey_images, _ = load_training_images([str(tmp_path)], 20)
    assert grey_images.shape == (3, 20, 20)
