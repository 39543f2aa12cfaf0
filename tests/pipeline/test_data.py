"""Bundled real data: the MNI152 split and slices, pydicom's MR examples, scikit-image photos."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from sgilo.pipeline.data import dicom_examples, mni
from sgilo.pipeline.data.natural import natural_image, natural_image_names
from sgilo.pipeline.io.dicom import read_dicom
from sgilo.pipeline.io.types import InputError

# ---------------------------------------------------------------------------------------------
# MNI152


@pytest.fixture(scope="module")
def mni_raw() -> tuple[np.ndarray, np.ndarray]:
    """The template volume and affine, loaded once for this module (a few seconds)."""
    return mni.mni_volume()


def test_split_is_fixed() -> None:
    assert mni.VALIDATION_Z == tuple(range(86, 94)) + tuple(range(108, 116))
    assert mni.TRAINING_Z == tuple(range(12, 81)) + tuple(range(99, 103)) + tuple(range(121, 149))
    assert (len(mni.TRAINING_Z), len(mni.VALIDATION_Z)) == (101, 16)
    assert mni.mni_slice_z("train") == mni.TRAINING_Z
    assert mni.mni_slice_z("validation") == mni.VALIDATION_Z
    assert all(isinstance(z, int) for z in mni.TRAINING_Z + mni.VALIDATION_Z)


def test_split_is_disjoint_with_six_slice_margin() -> None:
    train, val = np.array(mni.TRAINING_Z), np.array(mni.VALIDATION_Z)
    assert not set(mni.TRAINING_Z) & set(mni.VALIDATION_Z)
    distance = np.abs(train[:, None] - val[None, :]).min(axis=1)
    assert distance.min() == mni.MARGIN == 6
    # Both bands: 8 contiguous slices 1 mm apart.
    for lo, hi in mni.VALIDATION_BANDS:
        band = [z for z in mni.VALIDATION_Z if lo <= z < hi]
        assert band == list(range(lo, hi)) and len(band) == 8


def test_split_follows_documented_rule(mni_raw: tuple[np.ndarray, np.ndarray]) -> None:
    volume, _ = mni_raw
    nonzero = (volume != 0).mean(axis=(0, 1))
    brain = tuple(int(z) for z in np.flatnonzero(nonzero > 0.05))
    assert mni.brain_z_indices() == brain == tuple(range(mni.BRAIN_Z[0], mni.BRAIN_Z[1] + 1))
    expected = tuple(z for z in brain if all(abs(z - v) >= 6 for v in mni.VALIDATION_Z))
    assert mni.TRAINING_Z == expected
    assert set(mni.VALIDATION_Z) <= set(brain)
    assert nonzero[list(mni.VALIDATION_Z)].min() > 0.2  # well inside the brain, not at its edge


def test_volume_and_affine(mni_raw: tuple[np.ndarray, np.ndarray]) -> None:
    volume, affine = mni_raw
    assert volume.shape == (197, 233, 189) and volume.dtype == np.float32
    assert volume.min() >= 0 and volume.max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(affine[:3, :3], np.eye(3))
    np.testing.assert_allclose(affine[:3, 3], [-98, -134, -72])
    assert not volume.flags.writeable  # the cached array cannot be corrupted by callers


@pytest.mark.parametrize(("split", "size", "count"), [("validation", 128, 16), ("train", 64, 101)])
def test_slices_shape_dtype_range(split: mni.Split, size: int, count: int) -> None:
    slices = mni.mni_slices(split, size=size)
    assert slices.shape == (count, size, size) and slices.dtype == np.float32
    assert slices.min() >= 0.0 and slices.max() <= 1.0
    assert (slices.reshape(count, -1).max(axis=1) > 0.5).all()  # every slice shows tissue


def test_slices_equal_documented_flip_of_raw_volume(mni_raw: tuple[np.ndarray, np.ndarray]) -> None:
    """At size 233 (the padded side) no resize happens: the slice is the documented transform."""
    volume, _ = mni_raw
    slices = mni.mni_slices("validation", size=233)
    for image, z in zip(slices, mni.VALIDATION_Z, strict=True):
        oriented = np.flipud(np.fliplr(volume[:, :, z].T))  # (233, 197)
        expected = np.pad(oriented, ((0, 0), (18, 18))) / volume.max()
        np.testing.assert_allclose(image, expected, atol=1e-6)


def test_display_orientation_is_radiological() -> None:
    """Anterior (largest y) at the top, the patient's right (largest x in RAS+) on the left."""
    volume = np.zeros((5, 7, 3), dtype=np.float32)
    volume[4, 6, 1] = 1.0  # right-most, anterior-most voxel
    volume[0, 0, 1] = 2.0  # left-most, posterior-most voxel
    image = mni.axial_display_slice(volume, 1)
    assert image.shape == (7, 5)
    assert image[0, 0] == 1.0 and image[-1, -1] == 2.0


def test_brain_front_is_at_the_top(mni_raw: tuple[np.ndarray, np.ndarray]) -> None:
    """Anatomy: the frontal pole (MNI y ≈ +68 mm) is nearer the top than the occipital pole."""
    volume, affine = mni_raw
    z = mni.VALIDATION_Z[0]
    image = mni.axial_display_slice(volume, z)
    rows = np.flatnonzero(image.any(axis=1))
    top_y = affine[1, 3] + (volume.shape[1] - 1 - rows[0])  # MNI y of the first brain row
    bottom_y = affine[1, 3] + (volume.shape[1] - 1 - rows[-1])
    assert top_y > 50 and bottom_y < -80


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="'train' or 'validation'"):
        mni.mni_slices("test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer >= 8"):
        mni.mni_slices("validation", size=4)
    with pytest.raises(ValueError, match="expected shape"):
        mni.pad_to_square(np.zeros((2, 3, 4)))
    assert mni.pad_to_square(np.ones((3, 6))).shape == (6, 6)


# ---------------------------------------------------------------------------------------------
# pydicom's MR examples


def test_mr_example_paths_are_local_decodable_mr_files() -> None:
    import pydicom

    dicom_examples._mr_paths.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no download (or any other) warnings escape
        paths = dicom_examples.mr_example_paths()
    names = {p.name for p in paths}
    assert {"MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"} <= names
    assert "MR_truncated.dcm" not in names
    for path in paths:
        assert isinstance(path, Path) and path.is_file()
        assert pydicom.dcmread(path, stop_before_pixels=True).Modality == "MR"
        (series,) = read_dicom(path)  # each is one MR image of the project's DICOM reader
        assert series.data.shape[0] == 1 and min(series.data.shape[1:]) >= 32
    assert len(dicom_examples.mr_example_paths(min_size=1)) > len(paths)  # 16×16 thumbnails


def test_mr_small_pixels() -> None:
    import pydicom

    image = dicom_examples.mr_small()
    assert image.shape == (64, 64) and image.dtype == np.float32
    raw = pydicom.dcmread(dicom_examples.bundled_test_files_dir() / "MR_small.dcm").pixel_array
    np.testing.assert_array_equal(image, raw.astype(np.float32))  # no rescale tags: identity
    assert np.isfinite(image).all() and image.max() > image.min()


def test_examples_leave_out_what_the_reader_refuses() -> None:
    """The list is what read_dicom reads: a CT file next to MR ones is not an MR example."""
    import pydicom

    root = dicom_examples.bundled_test_files_dir()
    names = {p.name for p in dicom_examples.mr_example_paths(min_size=1)}
    assert "CT_small.dcm" not in names
    assert pydicom.dcmread(root / "CT_small.dcm", stop_before_pixels=True).Modality == "CT"
    with pytest.raises(InputError, match="modality is 'CT'"):
        read_dicom(root / "CT_small.dcm")


# ---------------------------------------------------------------------------------------------
# scikit-image photographs


def test_natural_image_names() -> None:
    names = natural_image_names()
    assert {"camera", "astronaut", "coffee", "chelsea", "rocket"} <= set(names)
    assert "brain" not in names and list(names) == sorted(names)


@pytest.mark.parametrize("name", natural_image_names())
def test_natural_images_native_and_resized(name: str) -> None:
    image = natural_image(name)
    assert image.dtype == np.float32 and image.ndim in (2, 3)
    if image.ndim == 3:
        assert image.shape[0] == 3
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5
    small = natural_image(name, size=32)
    assert small.shape == image.shape[:-2] + (32, 32) and small.dtype == np.float32
    assert 0.0 <= small.min() and small.max() <= 1.0
    gray = natural_image(name, size=32, grayscale=True)
    assert gray.shape == (32, 32) and 0.0 <= gray.min() and gray.max() <= 1.0


def test_natural_image_values_and_center_crop() -> None:
    import skimage.data

    np.testing.assert_allclose(natural_image("camera"), skimage.data.camera() / 255.0, atol=1e-7)
    cat = skimage.data.chelsea()  # (300, 451, 3): the centred square is columns 75..374
    cropped = natural_image("chelsea", size=300)
    expected = np.moveaxis(cat[:, 75:375], -1, 0) / 255.0
    np.testing.assert_allclose(cropped, expected, atol=1e-7)
    with pytest.raises(ValueError, match="expected one of"):
        natural_image("brain")
    with pytest.raises(ValueError, match="integer >= 1"):
        natural_image("camera", size=0)
