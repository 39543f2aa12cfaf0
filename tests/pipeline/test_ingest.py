"""Input detection and reading for every accepted format (tiny files built here), and the
display geometry of image inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sgilo.pipeline.io.dicom import DicomSeries
from sgilo.pipeline.io.fastmri import write_kspace
from sgilo.pipeline.io.formats import sniff_format
from sgilo.pipeline.io.geometry import dicom_display_affine, display_affine, nifti_display_affine
from sgilo.pipeline.io.ingest import detect_format, read_input
from sgilo.pipeline.io.ismrmrd import write_ismrmrd
from sgilo.pipeline.io.nifti import ImageVolume
from sgilo.pipeline.io.types import InputError

MR_SMALL = Path(str(get_testdata_file("MR_small.dcm", download=False)))


def _fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def _nifti(path: Path, shape=(24, 20, 3), affine=None) -> Path:
    data = np.random.default_rng(0).random(shape).astype(np.float32) * 100
    nib.save(
        nib.Nifti1Image(data, np.diag([1.0, 1.5, 3.0, 1.0]) if affine is None else affine), path
    )
    return path


def _dicom_series(folder: Path, n: int = 3, series_number: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    uid = pydicom.uid.generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(MR_SMALL)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 2.0 * k]
        ds.InstanceNumber, ds.SeriesNumber = k + 1, series_number
        ds.SOPInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), uid
        ds.save_as(folder / f"s{series_number}_{k}.dcm")
    return folder


def _error(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_detects_every_format(tmp_path):
    k = np.ones((1, 8, 8), np.complex64)
    assert detect_format(write_kspace(tmp_path / "f.h5", k)) == "fastmri"
    assert detect_format(write_ismrmrd(tmp_path / "i.h5", k)) == "ismrmrd"
    assert detect_format(_nifti(tmp_path / "n.nii.gz")) == "nifti"
    plain = tmp_path / "noext"
    shutil.copy(MR_SMALL, plain)  # DICOM by content (DICM prefix), no suffix
    assert detect_format(plain) == "dicom"
    assert detect_format(_dicom_series(tmp_path / "series")) == "dicom"


def test_training_only_kinds_are_unknown_to_reconstruct(tmp_path):
    """PNG/JPEG and .npy files are sniffed (for the training loader) but refused by reconstruct
    with the one line of any unknown file; and they never take a file reconstruct reads."""
    for name, kind in (("p.png", "picture"), ("p.JPEG", "picture"), ("a.npy", "npy")):
        path = tmp_path / name
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
        assert sniff_format(path) == kind
        assert _error(lambda p=path: detect_format(p)) == (
            f"{name}: unknown file type (expected fastMRI or ISMRMRD HDF5, DICOM, or NIfTI "
            ".nii/.nii.gz)"
        )
    k = np.ones((1, 8, 8), np.complex64)
    hdf5 = write_kspace(tmp_path / "k.h5", k).rename(tmp_path / "k.npy")
    shutil.copy(MR_SMALL, tmp_path / "slice.png")
    for path, fmt in ((hdf5, "fastmri"), (tmp_path / "slice.png", "dicom")):
        assert sniff_format(path) == detect_format(path) == fmt
    (tmp_path / "notes.txt").write_text("hello")
    assert "PNG/JPEG" in _error(lambda: sniff_format(tmp_path / "notes.txt"))


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("notes.txt", b"hello", "unknown file type"),
        ("empty.h5", b"", "empty"),
        ("missing.h5", None, "does not exist"),
    ],
)
def test_bad_inputs_name_the_file(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    message = _error(lambda: detect_format(path))
    assert name in message and words in message


def test_nifti_becomes_single_coil_kspace(tmp_path):
    path = _nifti(tmp_path / "vol.nii.gz")
    (study,) = read_input(path, acceleration=4, center_fraction=0.1, seed=1)
    assert isinstance(study.image_source, ImageVolume) and not study.multicoil
    image = study.image_source.data
    assert study.kspace.shape == (3, 1, *image.shape[1:]) and study.name == "vol"
    np.testing.assert_array_equal(study.target, image)
    np.testing.assert_allclose(study.kspace[:, 0], _fft2c(image) * study.mask, atol=1e-3)
    assert study.mask.shape == (image.shape[2],) and study.acceleration == 4


def test_image_input_needs_acceleration(tmp_path):
    path = _nifti(tmp_path / "vol.nii")
    message = _error(lambda: read_input(path))
    assert "vol.nii" in message and "--acceleration" in message


def test_mixed_dicom_folder_gives_one_study_per_series(tmp_path):
    _dicom_series(tmp_path / "mix", n=3, series_number=5)
    _dicom_series(tmp_path / "mix", n=2, series_number=7)
    studies = read_input(tmp_path / "mix", acceleration=2, center_fraction=0.2)
    assert [s.name for s in studies] == ["mix_s5", "mix_s7"]
    assert [s.num_slices for s in studies] == [3, 2]
    assert all(isinstance(s.image_source, DicomSeries) for s in studies)


def test_kspace_input_is_not_changed(tmp_path):
    k = np.fft.fftshift(np.ones((2, 3, 8, 6), np.complex64))
    (study,) = read_input(write_ismrmrd(tmp_path / "raw.h5", k))
    np.testing.assert_array_equal(study.kspace, k)
    assert study.image_source is None


def test_display_affines_locate_pixels(tmp_path):
    """The display affine maps (column, row, slice) to the positions the file declares."""
    affine = np.array([[0, 0, 2.0, -5], [-1.5, 0, 0, 7], [0, 1.0, 0, 3], [0, 0, 0, 1]])
    (n,) = read_input(
        _nifti(tmp_path / "o.nii.gz", affine=affine), acceleration=2, center_fraction=0.2
    )
    a = nifti_display_affine(n.image_source)
    vol = nib.load(tmp_path / "o.nii.gz")
    data = np.asarray(vol.dataobj)
    assert n.target.shape == (20, 24, 3)  # (Z, Y, X) of the RAS+ volume
    for k, i, j in [(0, 0, 0), (5, 7, 2), (19, 23, 1)]:
        voxel = np.linalg.solve(affine, a @ [j, i, k, 1.0])[:3]
        np.testing.assert_allclose(voxel, np.round(voxel), atol=1e-9)
        assert data[tuple(np.round(voxel).astype(int))] == n.target[k, i, j]

    (d,) = read_input(_dicom_series(tmp_path / "d"), acceleration=2, center_fraction=0.2)
    ds = pydicom.dcmread(d.image_source.files[1])
    row_dir, col_dir = (
        np.array(ds.ImageOrientationPatient[:3]),
        np.array(ds.ImageOrientationPatient[3:]),
    )
    dr, dc = (float(v) for v in ds.PixelSpacing)
    lps = np.array(ds.ImagePositionPatient, float) + 4 * dc * row_dir + 9 * dr * col_dir
    ras = dicom_display_affine(d.image_source) @ [4, 9, 1, 1.0]
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(display_affine(d), dicom_display_affine(d.image_source))
