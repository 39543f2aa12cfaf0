"""BART's pics as the benchmark's independent reference: the .cfl round trip, the k-space and
image conventions (a fully sampled slice with a negligible λ gives back the image), and the bench
row. Skipped where the ``bart`` command is not installed (``.ci/run`` installs it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgilo.operators.fft import fft2c
from sgilo.pipeline.research.bart import bart_available, bart_pics, read_cfl, write_cfl

needs_bart = pytest.mark.skipif(not bart_available(), reason="bart is not installed")


def test_cfl_round_trip_keeps_shape_and_order(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(5, 4, 1, 3)) + 1j * rng.normal(size=(5, 4, 1, 3))).astype(np.complex64)
    write_cfl(tmp_path / "a", a)
    assert (tmp_path / "a.hdr").read_text().split("\n")[1].split()[:4] == ["5", "4", "1", "3"]
    assert np.array_equal(read_cfl(tmp_path / "a"), a)


def _image(h: int = 32, w: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    blob = ((yy - h / 2) ** 2 / (h / 3) ** 2 + (xx - w / 2) ** 2 / (w / 3) ** 2 < 1).astype(float)
    return (blob * np.exp(1j * 0.3 * xx / w)).astype(np.complex64)


@needs_bart
def test_fully_sampled_single_coil_gives_the_image_back():
    x = _image()
    k = fft2c(torch.from_numpy(x)).numpy()[None, None]  # (S=1, C=1, H, W)
    out = bart_pics(k, lam=1e-6, iterations=30)
    assert out.shape == (1, *x.shape)
    assert np.abs(np.abs(out[0]) - np.abs(x)).max() < 1e-2 * np.abs(x).max()


@needs_bart
def test_multi_coil_uses_the_given_maps():
    x = _image()
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(4, *x.shape)) + 1j * rng.normal(size=(4, *x.shape))
    maps /= np.sqrt((np.abs(maps) ** 2).sum(axis=0, keepdims=True))
    k = fft2c(torch.from_numpy((maps * x).astype(np.complex64))).numpy()[None]
    out = bart_pics(k, maps.astype(np.complex64), lam=1e-6, iterations=30)
    assert np.abs(np.abs(out[0]) - np.abs(x)).max() < 1e-2 * np.abs(x).max()
    with pytest.raises(ValueError, match="need coil maps"):
        bart_pics(k)
