"""ISMRMRD noise scans (pre-whitening, the recorded noise std) and parallel-calibration lines
(the reference k-space that coil maps are estimated from)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sgilo.flows.cli import main
from sgilo.pipeline.io.ismrmrd import read_ismrmrd, write_ismrmrd
from sgilo.pipeline.io.types import InputError
from sgilo.pipeline.reconstruct import reconstruct_study, study_operator

C, H, W = 3, 16, 16
#: coil noise mixing: correlated, unequal coil noise (covariance L Lᴴ)
MIX = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [0.3j, -0.2, 0.5]], dtype=np.complex128)


def _noise(rng: np.random.Generator, lines: int, samples: int = H) -> np.ndarray:
    white = rng.standard_normal((lines, C, samples)) + 1j * rng.standard_normal((lines, C, samples))
    return np.einsum("dc,ncs->nds", MIX, white / np.sqrt(2))


def _one_line(path, reason: str) -> None:
    with pytest.raises(InputError) as info:
        read_ismrmrd(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message and reason in message, message


def test_whitening_decorrelates_coils_and_records_the_noise_std(tmp_path):
    rng = np.random.default_rng(0)
    noise = _noise(rng, 400)  # the noise scan
    # imaging "data" = fresh noise of the same coils: after whitening its coils are independent
    # with equal variance σ² (σ² = mean coil variance)
    data = _noise(rng, 4 * W).reshape(4, W, C, H).transpose(0, 2, 3, 1)
    study = read_ismrmrd(write_ismrmrd(tmp_path / "n.h5", data.astype(np.complex64), noise=noise))
    psi_true = MIX @ MIX.conj().T
    sigma = np.sqrt(np.trace(psi_true).real / C)
    assert study.noise_std == pytest.approx(sigma, rel=0.05)
    samples = study.kspace.transpose(1, 0, 2, 3).reshape(C, -1)
    cov = samples @ samples.conj().T / samples.shape[1]
    np.testing.assert_allclose(cov, sigma**2 * np.eye(C), atol=0.1 * sigma**2)
    # unwhitened, the coils were far from that
    raw = data.transpose(1, 0, 2, 3).reshape(C, -1)
    assert np.abs(raw @ raw.conj().T / raw.shape[1] - sigma**2 * np.eye(C)).max() > 0.3


def test_whitening_is_the_inverse_cholesky_factor_scaled_by_sigma(tmp_path):
    rng = np.random.default_rng(1)
    noise = _noise(rng, 50)
    k = (rng.standard_normal((1, C, H, W)) + 1j * rng.standard_normal((1, C, H, W))).astype(
        np.complex64
    )
    study = read_ismrmrd(write_ismrmrd(tmp_path / "w.h5", k, noise=noise))
    n = noise.astype(np.complex64).transpose(1, 0, 2).reshape(C, -1).astype(np.complex128)
    psi = n @ n.conj().T / n.shape[1]
    sigma = np.sqrt(np.trace(psi).real / C)
    expected = np.einsum("dc,schw->sdhw", sigma * np.linalg.inv(np.linalg.cholesky(psi)), k)
    np.testing.assert_allclose(study.kspace, expected, atol=1e-4)


def test_noise_bandwidth_follows_the_dwell_times(tmp_path):
    rng = np.random.default_rng(2)
    noise, k = _noise(rng, 50), np.ones((1, C, H, W), np.complex64)
    same = read_ismrmrd(write_ismrmrd(tmp_path / "a.h5", k, noise=noise, sample_time_us=(5, 5)))
    # noise sampled with twice the dwell (half the bandwidth): twice the variance at 5 µs
    slow = read_ismrmrd(write_ismrmrd(tmp_path / "b.h5", k, noise=noise, sample_time_us=(5, 10)))
    assert slow.noise_std == pytest.approx(same.noise_std * np.sqrt(2))


def test_no_noise_scan_no_whitening(tmp_path):
    k = np.ones((1, C, H, W), np.complex64)
    study = read_ismrmrd(write_ismrmrd(tmp_path / "plain.h5", k))
    assert study.noise_std is None
    np.testing.assert_array_equal(study.kspace, k)


@pytest.mark.parametrize(
    ("noise", "reason"),
    [
        (np.zeros((4, C, H)), "singular"),
        (np.ones((1, C, 2)), "too few"),
        (np.ones((3, 2, H)), "noise lines have [2] channels"),
        (np.full((3, C, H), np.nan), "non-finite"),
    ],
)
def test_bad_noise_scans_are_one_line(tmp_path, noise, reason):
    path = write_ismrmrd(tmp_path / "badnoise.h5", np.ones((1, C, H, W), np.complex64), noise=noise)
    _one_line(path, reason)


def test_noise_std_is_in_run_json(tmp_path):
    rng = np.random.default_rng(3)
    k = (rng.standard_normal((1, C, H, W)) + 1j * rng.standard_normal((1, C, H, W))).astype(
        np.complex64
    )
    path = write_ismrmrd(tmp_path / "scan.h5", k, noise=_noise(rng, 40))
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--method", "zero-filled", "--out", str(out)]) == 0
    record = json.loads((out / "run.json").read_text())
    (timing,) = record["timings"].values()
    (diagnostics,) = timing["diagnostics"]
    assert diagnostics["noise_std"] == pytest.approx(read_ismrmrd(path).noise_std)


# ----------------------------------------------------------------------------- calibration

N = 48  # image size of the calibration tests


def _coil_images(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth object and 4 smooth coil sensitivities: (image (N, N), coil images (4, N, N))."""
    y, x = np.mgrid[:N, :N] / N - 0.5
    image = ((x**2 + y**2) < 0.16) * (1 + 0.5 * np.cos(6 * x)) + ((x - 0.1) ** 2 < 0.004) * 0.5
    centres = [(-0.6, -0.6), (-0.6, 0.6), (0.6, -0.6), (0.6, 0.6)]
    maps = np.stack(
        [
            np.exp(-((x - a) ** 2 + (y - b) ** 2)) * np.exp(1j * (a * x + b * y) * 3)
            for a, b in centres
        ]
    )
    return image, maps * image


def _fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


@pytest.fixture()
def accelerated(tmp_path):
    """2× equispaced imaging lines with no fully sampled centre, and a 12-line reference scan
    (the generator's ``-a 2 -w 12``)."""
    image, coils = _coil_images(np.random.default_rng(4))
    k = _fft2c(coils)[None].astype(np.complex64)
    mask = np.zeros(N, bool)
    mask[1::2] = True
    cal = np.zeros(N, bool)
    cal[N // 2 - 6 : N // 2 + 6] = True

    def write(name: str, mode: str | None) -> object:
        return read_ismrmrd(
            write_ismrmrd(tmp_path / name, k, mask, calibration_mask=cal, calibration_mode=mode)
        )

    return image, k, mask, cal, write


def test_reference_lines_become_the_calibration_kspace(accelerated):
    _, k, mask, cal, write = accelerated
    study = write("sep.h5", "separate")
    np.testing.assert_array_equal(study.mask, mask)  # imaging lines only
    np.testing.assert_array_equal(study.calibration_mask, cal)
    np.testing.assert_array_equal(study.calibration, k * cal)
    np.testing.assert_array_equal(study.kspace, k * mask)
    embedded = write("emb.h5", "embedded")  # same contrast: the reference lines are data too
    np.testing.assert_array_equal(embedded.mask, mask | cal)
    np.testing.assert_array_equal(embedded.kspace, k * (mask | cal))


def test_coil_maps_come_from_the_reference_scan(accelerated):
    """SENSE with maps from the reference lines recovers the object; the imaging lines alone
    (no calibration region) cannot give usable maps."""
    image, _, _, _, write = accelerated
    study = write("sep.h5", "separate")
    _, _, source, _ = study_operator(study)
    assert source == "espirit"
    recon = reconstruct_study(study, "cg-sense").magnitude[0]
    scale = np.vdot(recon, image).real / np.vdot(recon, recon).real
    nmse = np.linalg.norm(scale * recon - image) ** 2 / np.linalg.norm(image) ** 2
    assert nmse < 0.05, nmse
    study.calibration = study.calibration_mask = None
    with pytest.raises(InputError, match="cannot estimate coil maps"):
        study_operator(study)
