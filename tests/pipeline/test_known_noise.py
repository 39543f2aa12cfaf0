"""A measured noise level (an ISMRMRD noise scan) in place of the k-space corners' estimate:
the context, the estimate that follows it, and the λ rule of a study with a noise scan."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sgilo.operators.mri import MultiCoilMRI
from sgilo.pipeline.io.ismrmrd import read_ismrmrd, write_ismrmrd
from sgilo.pipeline.reconstruct import reconstruct_study
from sgilo.pipeline.solvers.classical import default_lambda, l1_wavelet
from sgilo.pipeline.solvers.known_noise import known_noise_sigma, known_sigma
from sgilo.pipeline.solvers.kspace_cv import estimate_noise_sigma

C, H, W = 4, 32, 32


def _phantom_kspace() -> np.ndarray:
    """``(1, C, H, W)`` complex64: a smooth disc seen by smooth coils, fully sampled, no noise."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    image = (xx**2 + yy**2 < 0.5).astype(np.float64) * (1 + 0.3 * xx)
    coils = np.stack(
        [np.exp(-((xx - a) ** 2 + (yy - b) ** 2)) for a, b in [(-1, -1), (-1, 1), (1, -1), (1, 1)]]
    )
    k = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(coils * image, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    return k[None].astype(np.complex64)


def test_the_context_sets_and_restores_the_known_sigma():
    assert known_sigma() is None
    with known_noise_sigma(0.5):
        assert known_sigma() == 0.5
        with known_noise_sigma(None):  # a study without a noise scan inside another's
            assert known_sigma() is None
        assert known_sigma() == 0.5
    assert known_sigma() is None
    with pytest.raises(RuntimeError), known_noise_sigma(2.0):
        raise RuntimeError("a failed solve")
    assert known_sigma() is None  # restored on the error too
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise sigma"), known_noise_sigma(bad):
            pass


def test_the_estimate_is_the_known_sigma_for_every_slice_of_every_split():
    maps = torch.ones(2, 8, 8, dtype=torch.complex64) / 2**0.5
    mask = torch.zeros(8)
    mask[[0, 3, 4, 6]] = 1
    op = MultiCoilMRI(maps, mask)
    y = op.A(torch.randn(3, 8, 8, dtype=torch.complex64))
    corners = estimate_noise_sigma(y, op)
    with known_noise_sigma(0.25):
        assert estimate_noise_sigma(y, op).tolist() == [0.25] * 3
        assert estimate_noise_sigma(y[:1], op).tolist() == [0.25]
    assert torch.equal(estimate_noise_sigma(y, op), corners)


def test_a_study_with_a_noise_scan_sets_the_lambda_rules_noise_level(tmp_path):
    """Noise-free data of a sharp-edged disc, whose spectrum reaches the k-space corners: the
    corners' estimate counts it as noise and raises multi-coil ℓ1-wavelet's default λ. A quiet
    noise scan gives the default back, a loud one raises it further; ``lam="auto"`` records the
    scan's σ and its source."""
    rng = np.random.default_rng(0)
    k = _phantom_kspace()
    maps = torch.ones(C, H, W, dtype=torch.complex64)
    default = float(default_lambda("l1-wavelet", MultiCoilMRI(maps, torch.ones(W)), 1)[0])
    white = rng.standard_normal((64, C, H)) + 1j * rng.standard_normal((64, C, H))
    lam = {}
    for name, sigma in (("quiet", 1e-6), ("loud", 0.3)):
        scale = sigma * float(np.abs(k).max())
        study = read_ismrmrd(write_ismrmrd(tmp_path / f"{name}.h5", k, noise=scale * white))
        assert study.noise_std == pytest.approx(scale * np.sqrt(2), rel=0.1)
        lam[name] = reconstruct_study(study, "l1-wavelet").diagnostics.lambda_rel[0]
        plain = reconstruct_study(replace(study, noise_std=None), "l1-wavelet").diagnostics
        lam[f"{name} without the scan"] = plain.lambda_rel[0]
        assert known_sigma() is None  # the study's context ended with it
    assert lam["quiet without the scan"] > 1.5 * default  # the disc's edges taken for noise
    assert lam["quiet"] == pytest.approx(default)
    assert lam["loud"] > 3 * lam["loud without the scan"]
    auto = reconstruct_study(study, "l1-wavelet", solver_options={"lam": "auto"}).diagnostics
    assert auto.noise_sigma == pytest.approx([study.noise_std])
    assert auto.noise_source == "noise scan"
    op = MultiCoilMRI(maps, torch.ones(W))
    corners = l1_wavelet(torch.from_numpy(study.kspace), op, lam="auto", iterations=5).diagnostics
    assert corners.noise_source == "k-space corners"
