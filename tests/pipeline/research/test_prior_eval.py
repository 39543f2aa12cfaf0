"""The prior's validation statistics behave as distances should."""

from __future__ import annotations

import numpy as np

from sgilo.pipeline.research.prior_eval import laplacian_pyramid, nearest_psnr, sliced_wasserstein


def _blobs(n: int, size: int, seed: int, width: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    centres = rng.uniform(0.3, 0.7, size=(n, 2))
    d2 = (yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2
    return np.exp(-d2 / width**2).astype(np.float32)


def test_pyramid_levels_sum_back_to_the_image():
    images = _blobs(3, 64, 0, 0.2)
    levels = laplacian_pyramid(images)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    # the band-pass levels are zero-mean-ish, the coarsest level carries the mean
    assert abs(float(levels[0].mean())) < 0.05 * float(levels[-1].mean())


def test_swd_is_small_for_the_same_law_and_large_for_another():
    a, b = _blobs(40, 32, 0, 0.15), _blobs(40, 32, 1, 0.15)
    other = np.random.default_rng(2).random((40, 32, 32)).astype(np.float32)
    same = sliced_wasserstein(a, b, per_image=32)
    different = sliced_wasserstein(a, other, per_image=32)
    assert same < 0.5 * different


def test_nearest_psnr_finds_the_copy():
    refs = _blobs(5, 16, 0, 0.2)
    noisy = refs[3:4] + 0.01
    assert np.isclose(nearest_psnr(noisy, refs)[0], 40.0, atol=1e-6)


def test_validation_image_sets_are_held_out_and_scaled():
    import pytest

    from sgilo.pipeline.data.mni import mni_slices
    from sgilo.pipeline.data.ood import ood_groups
    from sgilo.pipeline.research.prior_eval import training_scaled, validation_images

    mni = validation_images("mni", 32, 3)
    np.testing.assert_array_equal(mni, training_scaled(mni_slices("validation", 32))[:3])
    synth = validation_images("synth-brain", 32, 4, seed=1)
    assert synth.shape == (4, 32, 32) and synth.dtype == np.float32
    assert 0.0 <= synth.min() and synth.max() <= 1.0 and not np.allclose(synth[0], synth[1])
    np.testing.assert_array_equal(synth, validation_images("synth-brain", 32, 4, seed=1))
    ood = validation_images("ood", 32, 100)
    groups = ood_groups(32)
    assert len(ood) == sum(len(g.images) for n, g in groups.items() if n != "mni-axial-validation")
    in_domain = training_scaled(groups["mni-axial-validation"].images)
    assert not any(np.array_equal(o, d) for o in ood for d in in_domain)
    assert len(validation_images("ood", 32, 5)) == 5
    with pytest.raises(ValueError, match="images"):
        validation_images("fastmri", 32, 2)
