"""ISMRMRD files: written with ``write_ismrmrd`` (the ``ismrmrd`` package's own writer), read back
with ``read_ismrmrd``; expected k-space is computed here with numpy only."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from sgilo.pipeline.io.ismrmrd import header_geometry, read_ismrmrd, write_ismrmrd
from sgilo.pipeline.io.types import InputError

S, C, H, W = 2, 3, 16, 12
MASK = np.isin(np.arange(W), [0, 3, 5, 6, 7, 9])  # centre run 5..7, 6 of 12 lines


def _fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def _ifft2c(k: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def _kspace(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _one_line_error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        read_ismrmrd(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message, message
    return message


def test_round_trip_multicoil_undersampled(tmp_path):
    k = _kspace((S, C, H, W))
    path = write_ismrmrd(tmp_path / "raw.h5", k, MASK)
    study = read_ismrmrd(path)
    assert study.multicoil and study.kspace.shape == (S, C, H, W)
    assert study.kspace.dtype == np.complex64
    np.testing.assert_array_equal(study.mask, MASK)
    np.testing.assert_array_equal(study.kspace, k * MASK)  # exact floats
    assert study.acceleration == pytest.approx(2.0) and study.num_low_frequencies == 3
    assert "<receiverChannels>3</receiverChannels>" in study.ismrmrd_header
    assert study.name == "raw" and study.image_source is None


def test_single_coil_fully_sampled_has_no_mask(tmp_path):
    k = _kspace((1, H, W))
    study = read_ismrmrd(write_ismrmrd(tmp_path / "full.h5", k))
    assert not study.multicoil and study.mask is None and study.acceleration is None
    np.testing.assert_array_equal(study.kspace[:, 0], k)


def test_readout_oversampling_removed_in_image_space(tmp_path):
    image = np.zeros((1, C, 2 * H, W), dtype=np.complex128)
    image[..., H // 2 : H // 2 + H, :] = _kspace((1, C, H, W), seed=1)  # object in the centre
    k = _fft2c(image).astype(np.complex64)
    study = read_ismrmrd(write_ismrmrd(tmp_path / "os.h5", k, oversampled=True))
    assert study.kspace.shape == (1, C, H, W)
    expected = image[..., H // 2 : H // 2 + H, :]
    np.testing.assert_allclose(_ifft2c(study.kspace), expected, atol=1e-5)
    geometry = header_geometry(study.ismrmrd_header)
    # encoded FOV 2 x 256 mm over 2H samples: the recon pixel size 256 / H
    assert geometry["spacing_mm"][0] == pytest.approx(256.0 / H)
    assert geometry["spacing_mm"][1] == pytest.approx(256.0 / W)


def test_file_without_header(tmp_path):
    path = write_ismrmrd(tmp_path / "nohdr.h5", _kspace((1, C, H, W)), header=False)
    assert "header" in _one_line_error(path)


def test_file_without_acquisitions(tmp_path):
    path = write_ismrmrd(tmp_path / "empty.h5", _kspace((1, C, H, W)))
    with h5py.File(path, "r+") as f:
        del f["dataset/data"]
    assert "acquisitions" in _one_line_error(path)


def test_channels_inconsistent_with_header(tmp_path):
    path = write_ismrmrd(tmp_path / "coils.h5", _kspace((1, C, H, W)))
    with h5py.File(path, "r+") as f:
        xml = f["dataset/xml"][0].decode()
        f["dataset/xml"][0] = xml.replace(f">{C}</receiverChannels>", ">8</receiverChannels>")
    assert "inconsistent sizes" in _one_line_error(path)


def test_not_ismrmrd(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["kspace"] = np.zeros((1, 4, 4), np.complex64)
    assert "dataset" in _one_line_error(plain)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    assert "HDF5" in _one_line_error(text)
