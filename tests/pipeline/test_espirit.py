"""ESPIRiT maps from rectangular calibration regions: against sigpy, the true maps and validation.

Test object: Shepp-Logan magnitude times a smooth phase, 8 birdcage coils normalised so that
sum_c |S_c|^2 = 1, k-space by the centred orthonormal FFT (noise-free). "Inside the object" is
|image| > 0.1 max. Measured when written (numpy 2.4, sigpy 0.1.27):

* square 24x24 region vs ``sigpy.mri.app.EspiritCalib``: per-pixel |<S, S_sigpy>| mean
  0.9999999998, min 0.99999997 (the maps agree to 2e-6 inside the object, phase included);
* 5 centre columns (+ 10 scattered columns), all rows, default kernel: per-pixel
  |<S, S_true>| mean 0.9994, min 0.9954; no object pixel cropped; relative projection error of
  the coil images onto the maps 0.044.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import sigpy as sp
import sigpy.mri as mr

from sgilo.pipeline.espirit import calibration_region, espirit, estimate_maps, readout_padding

H = W = 128
N_COILS = 8


def _fft(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


@pytest.fixture(scope="module")
def phantom() -> dict[str, np.ndarray]:
    mag = np.abs(sp.shepp_logan((H, W)))
    yy, xx = np.mgrid[:H, :W] / H
    img = mag * np.exp(1j * np.pi * (0.6 * xx - 0.4 * yy + 0.5 * xx * yy))
    maps = mr.birdcage_maps((N_COILS, H, W))
    maps = maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    coils = maps * img
    return {
        "img": img,
        "maps": maps,
        "coils": coils,
        "ksp": _fft(coils),
        "obj": np.abs(img) > 0.1 * np.abs(img).max(),
    }


def _inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel |<a, b>| over coils, (C, H, W) x (C, H, W) -> (H, W)."""
    return np.abs(np.sum(a * np.conj(b), axis=0))


def _five_column_mask(rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(W, dtype=bool)
    mask[W // 2 - 2 : W // 2 + 3] = True  # columns 62..66
    far = np.r_[0 : W // 2 - 4, W // 2 + 5 : W]  # keep random columns off the centre run
    mask[rng.choice(far, size=10, replace=False)] = True
    return mask


def test_square_region_matches_sigpy(phantom: dict[str, np.ndarray]) -> None:
    ksp, obj = phantom["ksp"], phantom["obj"]
    try:  # sigpy's power method runs 100 batched matmuls; threaded BLAS crawls on a busy box
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        limit = nullcontext()
    with limit:
        ref = mr.app.EspiritCalib(
            ksp, calib_width=24, kernel_width=6, thresh=0.02, crop=0.95, show_pbar=False
        ).run()
    lo = H // 2 - 12
    ours = espirit(ksp, (slice(lo, lo + 24), slice(lo, lo + 24)))
    assert ours.dtype == np.complex64 and ours.shape == ksp.shape
    agree = _inner(ours, ref)[obj]
    assert agree.mean() > 0.9999  # measured 0.9999999998
    assert agree.min() > 0.999  # measured 0.99999997
    # Same crop decision nearly everywhere (differences only at the eigenvalue ~ crop rim).
    kept_ours, kept_ref = np.any(ours != 0, axis=0), np.any(ref != 0, axis=0)
    assert np.mean(kept_ours == kept_ref) > 0.99


def test_five_centre_columns_recover_true_maps(phantom: dict[str, np.ndarray]) -> None:
    ksp, obj, coils = phantom["ksp"], phantom["obj"], phantom["coils"]
    mask = _five_column_mask(np.random.default_rng(0))
    assert calibration_region(mask, (H, W)) == (slice(0, H), slice(62, 67))

    est = estimate_maps((ksp * mask)[None], mask)
    assert est.shape == (1, N_COILS, H, W) and est.dtype == np.complex64
    est = est[0]
    assert np.all(np.any(est != 0, axis=0)[obj]), "object pixels were cropped"
    agree = _inner(est, phantom["maps"])[obj]
    assert agree.mean() > 0.999  # measured 0.9994
    assert agree.min() > 0.99  # measured 0.9954
    # Coil images lie in the span of the maps: x_c ~ S_c sum_d conj(S_d) x_d.
    proj = est * np.sum(np.conj(est) * coils, axis=0)
    err = np.linalg.norm((coils - proj)[:, obj]) / np.linalg.norm(coils[:, obj])
    assert err < 0.05  # measured 0.044


def test_unit_norm_where_kept_zero_where_cropped(phantom: dict[str, np.ndarray]) -> None:
    ksp = phantom["ksp"]
    mask = _five_column_mask(np.random.default_rng(1))
    maps = espirit(ksp * mask, calibration_region(mask, (H, W)))
    energy = np.sum(np.abs(maps.astype(np.complex128)) ** 2, axis=0)
    kept = energy > 0
    assert 0.1 < 1 - kept.mean() < 0.9  # background is cropped, the object is not
    np.testing.assert_allclose(energy[kept], 1.0, atol=1e-5)
    assert np.all(maps[:, ~kept] == 0)
    # Phase referred to coil 0: S_0 is real and non-negative.
    assert np.all(maps[0].real[kept] >= 0)
    np.testing.assert_allclose(maps[0].imag[kept], 0.0, atol=1e-6)


def test_rows_limited_to_max_rows(phantom: dict[str, np.ndarray]) -> None:
    ksp = phantom["ksp"]
    cal = (slice(0, H), slice(62, 67))
    lo = H // 2 - 12
    trimmed = np.zeros_like(ksp)
    trimmed[:, lo : lo + 24] = ksp[:, lo : lo + 24]
    # (no readout padding: its edge test sees the trimmed k-space's ringing as an object)
    np.testing.assert_array_equal(
        espirit(ksp, cal, pad_readout=False), espirit(trimmed, cal, pad_readout=False)
    )


def test_object_cut_by_the_readout_edges_is_padded(phantom: dict[str, np.ndarray]) -> None:
    """A Shepp-Logan 1.5x taller than the field of view, cut by the top and bottom rows: the
    periodic jump of S_c m at those rows spoils unpadded maps (measured min |<S, S_true>| 0.62
    inside the object); padded (and automatic) maps recover the true ones (measured min 0.995)."""
    mag = np.abs(sp.shepp_logan((3 * H // 2, W)))[H // 4 : H // 4 + H]
    img = mag * np.exp(1j * np.angle(phantom["img"] + 1e-30))
    maps = phantom["maps"]
    obj = mag > 0.1 * mag.max()
    assert obj[0].any() and obj[-1].any()
    mask = _five_column_mask(np.random.default_rng(0))
    ksp = _fft(maps * img) * mask
    cal = calibration_region(mask, (H, W))
    assert readout_padding(ksp, cal[1])
    plain = _inner(espirit(ksp, cal, pad_readout=False), maps)[obj]
    padded = espirit(ksp, cal, pad_readout=True)
    assert padded.shape == ksp.shape and padded.dtype == np.complex64
    agree = _inner(padded, maps)[obj]
    assert plain.min() < 0.8  # measured 0.62: the failure the padding removes
    assert agree.min() > 0.99 and agree.mean() > 0.999  # measured 0.9948, 0.9992
    np.testing.assert_array_equal(espirit(ksp, cal), padded)  # the automatic choice pads


def test_object_inside_the_field_of_view_is_not_padded(phantom: dict[str, np.ndarray]) -> None:
    mask = _five_column_mask(np.random.default_rng(0))
    ksp = phantom["ksp"] * mask
    cal = calibration_region(mask, (H, W))
    assert not readout_padding(ksp, cal[1])
    np.testing.assert_array_equal(espirit(ksp, cal), espirit(ksp, cal, pad_readout=False))
    # Padding needs every row of the calibration columns: a partial-row region refuses it.
    with pytest.raises(ValueError, match="spans every row"):
        espirit(ksp, (slice(40, 88), cal[1]), pad_readout=True)


def test_calibration_region_2d_masks() -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[40:90, 50:70] = True
    mask[60:68, 20:110] = True  # wider but shorter: smaller area than 50 x 20
    mask[:, 5] = True
    assert calibration_region(mask, (H, W)) == (slice(40, 90), slice(50, 70))
    cols = np.zeros((1, W), dtype=bool)
    cols[0, 60:69] = True
    assert calibration_region(cols, (H, W)) == (slice(0, H), slice(60, 69))
    with pytest.raises(ValueError, match="centre"):
        calibration_region(np.zeros(W, dtype=bool), (H, W))
    with pytest.raises(ValueError, match="length"):
        calibration_region(np.ones(W + 1, dtype=bool), (H, W))


def test_errors(phantom: dict[str, np.ndarray]) -> None:
    ksp = phantom["ksp"]
    with pytest.raises(ValueError, match=r"2 columns"):
        espirit(ksp, (slice(0, H), slice(63, 65)))
    with pytest.raises(ValueError, match="complex"):
        espirit(np.abs(ksp), (slice(0, H), slice(62, 67)))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        espirit(ksp[0], (slice(0, H), slice(62, 67)))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        espirit(ksp[None], (slice(0, H), slice(62, 67)))
    with pytest.raises(ValueError, match=r"\(slices, C, H, W\)"):
        estimate_maps(ksp, np.ones(W, dtype=bool))
