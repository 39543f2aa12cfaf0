"""Simulated acquisitions: coil normalisation, k-space against numpy, SNR, masks, seeds, phase.

Every check is against an independent computation (numpy's FFT,
``sgilo.operators.masks.column_mask``,
the noise-free re-simulation with the same seed) rather than against stored numbers. Images are
small (≤ 64×64, ≤ 3 slices) so the file runs in a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import sigpy as sp

from sgilo.operators.masks import column_mask
from sgilo.pipeline.simulate import (
    normalized_birdcage_maps,
    simulate_acquisition,
    smooth_phase,
)

H, W = 48, 64


def _fft2c(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes (numpy)."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def _ifft2c(k: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def magnitudes() -> np.ndarray:
    """Two slices: Shepp–Logan and a scaled, flipped copy, float (2, H, W), >= 0."""
    sl = np.abs(sp.shepp_logan((H, W)))
    return np.stack([sl, 0.5 * sl[::-1]])


# -- coil maps ------------------------------------------------------------------------------------
@pytest.mark.parametrize("coils, shape", [(1, (16, 16)), (4, (33, 20)), (8, (64, 64))])
def test_birdcage_maps_are_normalised(coils, shape):
    maps = normalized_birdcage_maps(coils, shape)
    assert maps.shape == (coils, *shape) and np.iscomplexobj(maps)
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(axis=0), 1.0, rtol=0, atol=1e-12)
    if coils > 1:  # the maps are not all alike: a real coil array, not one map repeated
        assert np.abs(maps[0] - maps[1]).max() > 0.1


# -- k-space of a fully sampled, noise-free acquisition --------------------------------------------
def test_fully_sampled_multicoil_rss_equals_target(magnitudes):
    acq = simulate_acquisition(
        magnitudes, acceleration=1, center_fraction=1.0, num_coils=8, snr_db=None, seed=3
    )
    assert acq.mask.all() and acq.sigma == 0.0 and acq.multicoil
    assert acq.kspace.shape == (2, 8, H, W) and acq.maps.shape == (8, H, W)
    np.testing.assert_array_equal(acq.target, magnitudes.astype(np.float32))
    np.testing.assert_allclose(np.abs(acq.image), magnitudes, rtol=0, atol=1e-5)
    coil_images = _ifft2c(acq.kspace.astype(np.complex128))
    rss = np.sqrt((np.abs(coil_images) ** 2).sum(axis=1))
    np.testing.assert_allclose(rss, acq.target, rtol=0, atol=1e-5)
    # and the k-space is F(S_c x) for the stored maps and image
    expected = _fft2c(acq.maps[None].astype(np.complex128) * acq.image[:, None])
    assert _rel(acq.kspace, expected) < 1e-5


def test_single_coil_kspace_is_fft_of_image(magnitudes):
    acq = simulate_acquisition(
        magnitudes, acceleration=1, center_fraction=1.0, num_coils=None, snr_db=None, seed=4
    )
    assert not acq.multicoil and acq.maps is None
    assert acq.kspace.shape == (2, 1, H, W)
    expected = _fft2c(acq.image.astype(np.complex128))
    assert _rel(acq.kspace[:, 0], expected) < 1e-5
    # the phase is not trivial: the image is not just the magnitude
    assert np.abs(np.angle(acq.image[magnitudes > 0.1])).max() > 0.5


# -- noise, mask and seeds ----------------------------------------------------------------------
@pytest.mark.parametrize("coils, snr_db", [(None, 15.0), (8, 25.0)])
def test_achieved_snr_and_zero_unsampled_columns(magnitudes, coils, snr_db):
    kwargs = dict(acceleration=4, center_fraction=0.08, num_coils=coils, seed=11)
    noisy = simulate_acquisition(magnitudes, snr_db=snr_db, **kwargs)
    clean = simulate_acquisition(magnitudes, snr_db=None, **kwargs)
    # the phase and the mask are drawn before the noise: the noise-free run sees the same object
    np.testing.assert_array_equal(noisy.image, clean.image)
    np.testing.assert_array_equal(noisy.mask, clean.mask)
    assert clean.sigma == 0.0 and noisy.sigma > 0
    # unsampled columns hold exactly zero, noise included
    assert not noisy.kspace[..., ~noisy.mask].any()
    assert not clean.kspace[..., ~clean.mask].any()
    # SNR_dB = 10 log10(mean |F S x|^2 over the whole clean grid / σ²), σ² from the sampled noise
    maps = np.ones((1, H, W)) if clean.maps is None else clean.maps.astype(np.complex128)
    full = _fft2c(maps[None] * clean.image[:, None].astype(np.complex128))
    noise = (noisy.kspace.astype(np.complex128) - clean.kspace)[..., noisy.mask]
    achieved = 10 * np.log10(np.mean(np.abs(full) ** 2) / np.mean(np.abs(noise) ** 2))
    assert abs(achieved - snr_db) < 0.5, achieved
    assert abs(np.sqrt(np.mean(np.abs(noise) ** 2)) / noisy.sigma - 1) < 0.05
    # circular: real and imaginary parts carry the same variance
    ratio = np.var(noise.real) / np.var(noise.imag)
    assert 0.85 < ratio < 1.15, ratio


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("seed", [0, 7, (1, 2, 3)])
def test_mask_is_fastmri_column_mask(magnitudes, kind, seed):
    acq = simulate_acquisition(
        magnitudes[:1], acceleration=4, center_fraction=0.08, mask_kind=kind, seed=seed
    )
    np.testing.assert_array_equal(acq.mask, column_mask(kind, W, 0.08, 4, seed))
    assert acq.num_low_frequencies == round(W * 0.08)
    assert acq.achieved_acceleration == W / acq.mask.sum()


def test_same_seed_same_acquisition_other_seed_other_phase(magnitudes):
    kwargs = dict(acceleration=4, center_fraction=0.08, num_coils=4, snr_db=20.0)
    a = simulate_acquisition(magnitudes, seed=5, **kwargs)
    b = simulate_acquisition(magnitudes, seed=5, **kwargs)
    c = simulate_acquisition(magnitudes, seed=6, **kwargs)
    for field in ("target", "image", "kspace", "mask", "maps"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.sigma == b.sigma
    inside = magnitudes > 0.1
    phase_diff = np.angle(a.image * np.conj(c.image))[inside]
    assert np.abs(phase_diff).max() > 0.5
    # the two slices of one acquisition get phases of their own
    slice_diff = np.angle(a.image[0] * np.conj(a.image[1]))[inside[0] & inside[1]]
    assert np.abs(slice_diff).max() > 0.5


# -- smooth phase ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape, max_phase, cutoff", [((64, 64), np.pi, 3), ((33, 40), 1.0, 2), ((20, 17), 0.3, 5)]
)
def test_smooth_phase_range_and_band_limit(shape, max_phase, cutoff):
    rng = np.random.default_rng(0)
    phase = smooth_phase(shape, rng, max_phase=max_phase, cutoff=cutoff)
    assert phase.shape == shape and phase.dtype == np.float64
    assert np.abs(phase).max() == pytest.approx(max_phase, rel=1e-12)
    # spectrum (DC at (H//2, W//2)) vanishes outside the (2·cutoff+1)² centre box
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(phase))) ** 2
    h, w = shape
    box = np.zeros(shape, dtype=bool)
    box[h // 2 - cutoff : h // 2 + cutoff + 1, w // 2 - cutoff : w // 2 + cutoff + 1] = True
    assert spectrum[~box].sum() < 1e-20 * spectrum.sum()
    # ... and is genuinely spread over the box (not only DC)
    box_without_dc = box.copy()
    box_without_dc[h // 2, w // 2] = False
    assert spectrum[box_without_dc].sum() > 0.5 * spectrum.sum()


def test_smooth_phase_is_seeded():
    a = smooth_phase((32, 32), np.random.default_rng(1))
    b = smooth_phase((32, 32), np.random.default_rng(1))
    c = smooth_phase((32, 32), np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


# -- bad input ------------------------------------------------------------------------------------
GOOD = np.ones((1, 16, 16))


@pytest.mark.parametrize(
    "images, kwargs, message",
    [
        (GOOD.astype(np.complex64), {}, "complex"),
        (np.where(np.eye(16)[None] > 0, np.nan, GOOD), {}, "finite"),
        (np.where(np.eye(16)[None] > 0, np.inf, GOOD), {}, "finite"),
        (-GOOD, {}, "non-negative"),
        (np.ones((16, 16)), {}, "shape"),
        (np.ones((1, 1, 16, 16)), {}, "shape"),
        (np.ones((0, 16, 16)), {}, "shape"),
        (GOOD, {"num_coils": 0}, "num_coils"),
        (GOOD, {"acceleration": 0.5}, "acceleration"),
        (GOOD, {"acceleration": float("nan")}, "acceleration"),
        (GOOD, {"center_fraction": 0.5}, "center_fraction"),
        (GOOD, {"mask_kind": "poisson"}, "mask kind"),
    ],
)
def test_bad_input_is_refused(images, kwargs, message):
    args = {"acceleration": 4, "center_fraction": 0.125, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        simulate_acquisition(images, **args)


def test_birdcage_maps_refuse_zero_coils():
    with pytest.raises(ValueError, match="num_coils"):
        normalized_birdcage_maps(0, (8, 8))
