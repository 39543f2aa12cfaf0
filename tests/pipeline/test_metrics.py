"""Metrics against independent numpy/scipy computations, known answers and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from sgilo.pipeline.metrics import evaluate, nmse, psnr, ssim


def _volume(rng: np.random.Generator, shape: tuple[int, ...] = (3, 32, 40)) -> np.ndarray:
    """A smooth-ish positive test volume with structure (so SSIM is informative)."""
    base = rng.random(shape)
    return uniform_filter(base, size=(1, 5, 5)) + 0.2 * base


def _reference_ssim_slice(x: np.ndarray, y: np.ndarray, r: float) -> float:
    """SSIM of one slice written out: 7×7 box means, sample (co)variances, 3-pixel border crop.

    scikit-image uses scipy.ndimage.uniform_filter (mode 'reflect'), multiplies the population
    variances by N/(N−1) with N = 49 when use_sample_covariance=True (its default), and averages
    the map after dropping (7 − 1)/2 = 3 pixels on every side.
    """
    n = 49
    mx, my = uniform_filter(x, 7), uniform_filter(y, 7)
    vx = (uniform_filter(x * x, 7) - mx**2) * n / (n - 1)
    vy = (uniform_filter(y * y, 7) - my**2) * n / (n - 1)
    vxy = (uniform_filter(x * y, 7) - mx * my) * n / (n - 1)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[3:-3, 3:-3].mean())


def test_nmse_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    gt = _volume(rng)
    pred = gt + 0.05 * rng.standard_normal(gt.shape)
    expected = np.sum((pred - gt) ** 2) / np.sum(gt**2)
    assert nmse(gt, pred) == pytest.approx(expected, rel=1e-12)


def test_psnr_matches_formula_with_volume_max() -> None:
    rng = np.random.default_rng(1)
    gt = _volume(rng)
    pred = gt + 0.03 * rng.standard_normal(gt.shape)
    mse = np.mean((pred - gt) ** 2)
    assert psnr(gt, pred) == pytest.approx(10 * np.log10(gt.max() ** 2 / mse), rel=1e-12)
    assert psnr(gt, pred, data_range=2.0) == pytest.approx(10 * np.log10(4.0 / mse), rel=1e-12)


def test_ssim_matches_independent_box_filter_implementation() -> None:
    rng = np.random.default_rng(2)
    gt = _volume(rng, (4, 33, 29))
    gt[1] *= 0.3  # slices with different maxima: R must be the volume maximum, not per slice
    pred = gt + 0.04 * rng.standard_normal(gt.shape)
    r = gt.max()
    expected = np.mean([_reference_ssim_slice(g, p, r) for g, p in zip(gt, pred, strict=True)])
    assert ssim(gt, pred) == pytest.approx(expected, rel=1e-9)
    expected_r1 = np.mean([_reference_ssim_slice(g, p, 1.0) for g, p in zip(gt, pred, strict=True)])
    assert ssim(gt, pred, data_range=1.0) == pytest.approx(expected_r1, rel=1e-9)


def test_two_dimensional_input_is_a_one_slice_volume() -> None:
    rng = np.random.default_rng(3)
    gt = _volume(rng, (1, 24, 24))
    pred = gt + 0.02 * rng.standard_normal(gt.shape)
    assert evaluate(gt[0], pred[0]) == pytest.approx(evaluate(gt, pred), rel=1e-12)


def test_identical_images_give_known_answers() -> None:
    gt = _volume(np.random.default_rng(4))
    m = evaluate(gt, gt.copy())
    assert m["nmse"] == 0.0
    assert m["psnr"] == math.inf
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12)


def test_integer_and_float32_inputs_are_accepted() -> None:
    gt = (np.arange(2 * 16 * 16).reshape(2, 16, 16) % 50).astype(np.uint8)
    pred = gt.astype(np.float32) + 1.0
    assert psnr(gt, pred) == pytest.approx(10 * np.log10(49.0**2 / 1.0))
    assert nmse(gt, pred) == pytest.approx(gt.size / np.sum(gt.astype(float) ** 2))


def test_per_volume_psnr_differs_from_mean_of_per_slice_psnr() -> None:
    """fastMRI reports PSNR per volume; the per-slice mean is a different number.

    Slice 0 peaks at 1.0, slice 1 at 0.1, with the same absolute error. Per volume, both slices
    use R = 1.0; per slice, slice 1 uses R = 0.1, which costs it 20 dB, so the per-slice mean is
    about 10 dB below the per-volume value.
    """
    rng = np.random.default_rng(5)
    gt = _volume(rng, (2, 32, 32))
    gt /= gt.max(axis=(1, 2), keepdims=True)
    gt[1] *= 0.1
    pred = gt + 0.01 * rng.standard_normal(gt.shape)
    per_volume = psnr(gt, pred)
    per_slice = float(np.mean([psnr(g, p) for g, p in zip(gt, pred, strict=True)]))
    assert per_volume - per_slice == pytest.approx(10.0, abs=0.5)


@pytest.mark.parametrize(
    ("gt", "pred", "message"),
    [
        (np.ones((2, 8, 8)), np.ones((2, 8, 9)), "shape mismatch"),
        (np.ones((8, 8)), np.ones((8, 8), dtype=np.complex64), "received dtype complex64"),
        (np.ones((8, 8), dtype=complex), np.ones((8, 8)), "expected real magnitude"),
        (np.ones((8, 8)), np.full((8, 8), np.nan), "expected finite values"),
        (np.zeros((0, 8, 8)), np.zeros((0, 8, 8)), "expected a non-empty array"),
        (np.ones(8), np.ones(8), "expected shape (slices, H, W) or (H, W)"),
        (np.zeros((8, 8)), np.ones((8, 8)), "not all zero"),
    ],
)
def test_invalid_inputs_raise_value_error(gt: np.ndarray, pred: np.ndarray, message: str) -> None:
    for fn in (nmse, psnr, evaluate):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            fn(gt, pred)


def test_ssim_validation() -> None:
    with pytest.raises(ValueError, match="at least 7"):
        ssim(np.ones((6, 20)), np.ones((6, 20)))
    with pytest.raises(ValueError, match="positive maximum"):
        ssim(np.zeros((8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="finite positive"):
        ssim(np.ones((8, 8)), np.ones((8, 8)), data_range=0.0)
    # An all-zero target is fine for SSIM once R is given explicitly.
    assert ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=1.0) == pytest.approx(1.0)
