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
