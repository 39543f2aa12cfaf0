"""Training images from MNI and folders of PNG/JPEG, NIfTI and DICOM files: shapes, ranges,
orientation, the shared intensity rule, per-source counts, skipped files and bad sources; one
format sniffer shared with ``sgilo reconstruct``, and NIfTI/DICOM read by the io readers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from skimage.transform import resize

from sgilo.pipeline.data import mni
from sgilo.pipeline.data.dicom_examples import bundled_test_files_dir
from sgilo.pipeline.data.training import load_training_images, prepare_image, scale_to_unit
from sgilo.pipeline.io.fastmri import write_kspace
from sgilo.pipeline.io.formats import FORMATS, detect_format, sniff_format
from sgilo.pipeline.io.ingest import read_input
from sgilo.pipeline.io.ismrmrd import write_ismrmrd
from sgilo.pipeline.io.limits import input_limits
from sgilo.pipeline.io.types import InputError

SIZE = 32


def grey_picture() -> np.ndarray:
    """A non-square (40, 30) uint8 picture: a bright disc on a gradient."""
    yy, xx = np.mgrid[:40, :30]
    img = 40 + 2 * xx + 150 * (((yy - 18) ** 2 + (xx - 14) ** 2) < 64)
    return img.astype(np.uint8)


def nifti_volume() -> np.ndarray:
    """(12, 10, 6) float32: z = 1, 2, 3 hold an off-centre block (> 5 %), z = 4 one voxel."""
    vol = np.zeros((12, 10, 6), dtype=np.float32)
    for z in (1, 2, 3):
        vol[1:5, 2:9, z] = 10.0 * z
        vol[1, 2, z] = 50.0  # a marker that shows the orientation
    vol[6, 5, 4] = 7.0
    return vol


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    Image.fromarray(grey_picture()).save(root / "a_grey.png")
    rgb = np.stack([grey_picture(), grey_picture() // 2, np.zeros((40, 30), np.uint8)], -1)
    Image.fromarray(rgb).save(root / "b_rgb.png")
    Image.fromarray(rgb).save(root / "c_photo.jpg")
    # LAS voxel order: as_closest_canonical flips the first axis back to RAS
    nib.save(
        nib.Nifti1Image(nifti_volume(), np.diag([-1.0, 1.0, 1.0, 1.0])), root / "d_volume.nii.gz"
    )
    (root / "series").mkdir()
    shutil.copy(bundled_test_files_dir() / "MR_small.dcm", root / "series" / "e_slice.dcm")
    shutil.copy(bundled_test_files_dir() / "MR_small.dcm", root / "series" / "IM0001")
    (root / "f_broken.png").write_bytes(b"not a png at all")
    (root / "g_notes.txt").write_text("acquired on a Tuesday\n")
    (root / ".hidden").write_text("ignored")
    return root


@pytest.fixture(scope="module")
def mixed(folder):
    with pytest.warns(UserWarning, match="skipped") as caught:
        images, summary = load_training_images(["mni-train", str(folder)], SIZE)
    return images, summary, [str(w.message) for w in caught]


def test_shapes_ranges_and_counts(mixed, folder):
    images, summary, warned = mixed
    n_mni = len(mni.TRAINING_Z)
    # 3 pictures + 3 NIfTI slices + 2 DICOM files
    assert images.shape == (n_mni + 8, SIZE, SIZE) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    assert summary["total"] == n_mni + 8 and summary["size"] == SIZE
    assert summary["sources"]["mni-train"]["images"] == n_mni
    got = summary["sources"][str(folder)]
    assert got["images"] == 8 and got["files"] == 6 and got["skipped"] == 2
    assert got["files_by_type"] == {"image": 3, "nifti": 1, "dicom": 2, "npy": 0}
    skipped = sorted(Path(s["path"]).name for s in summary["skipped"])
    assert skipped == ["f_broken.png", "g_notes.txt"]
    assert len(warned) == 2 and all("skipped" in w for w in warned)
    # every image is scaled by its own 99.5th percentile: at least 0.5 % of pixels reach 1
    assert ((images >= 1.0).mean(axis=(1, 2)) >= 0.004).all()


def test_mni_follows_the_same_percentile_rule(mixed):
    images, _, _ = mixed
    raw = mni.mni_slices("train", SIZE)
    n = len(raw)
    np.testing.assert_array_equal(images[:n], np.stack([scale_to_unit(s) for s in raw]))
    # and that equals the rule applied to the unscaled slices (the volume max cancels)
    volume, _ = mni.mni_volume()
    z = mni.TRAINING_Z[40]
    direct = prepare_image(mni.axial_display_slice(volume, z) * 1000.0, SIZE)
    np.testing.assert_allclose(images[40], direct, atol=1e-5)


def test_picture_known_answer(mixed):
    images, _, _ = mixed
    square = mni.pad_to_square(grey_picture().astype(np.float64))
    small = resize(square, (SIZE, SIZE), anti_aliasing=True, preserve_range=True)
    want = np.clip(small / np.percentile(small, 99.5), 0, 1)
    n = len(mni.TRAINING_Z)
    np.testing.assert_allclose(images[n], want, atol=1e-6)  # a_grey.png comes first
    assert images[n].shape == (SIZE, SIZE)


def test_nifti_slices_oriented_like_mni(mixed):
    images, _, _ = mixed
    canonical = nifti_volume()[::-1]  # the LAS file in RAS order
    n = len(mni.TRAINING_Z) + 3
    for i, z in enumerate((1, 2, 3)):
        want = prepare_image(mni.axial_display_slice(canonical, z), SIZE)
        np.testing.assert_allclose(images[n + i], want, atol=1e-6)
    # without the reorientation to RAS+ the slices would come out mirrored
    mirrored = prepare_image(mni.axial_display_slice(nifti_volume(), 1), SIZE)
    assert not np.allclose(images[n], mirrored, atol=1e-3)


def test_dicom_with_and_without_extension(mixed):
    images, _, _ = mixed
    raw = pydicom.dcmread(bundled_test_files_dir() / "MR_small.dcm").pixel_array  # no rescale
    want = prepare_image(raw.astype(np.float64), SIZE)
    np.testing.assert_allclose(images[-2], want, atol=1e-6)  # series/IM0001
    np.testing.assert_allclose(images[-1], want, atol=1e-6)  # series/e_slice.dcm


def test_single_file_source_and_anisotropic_voxels(tmp_path):
    vol = np.zeros((8, 16, 3), np.float32)
    vol[2:6, 4:12, 1] = 1.0
    path = tmp_path / "aniso.nii"
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 1.0, 1.0, 1.0])), path)  # 2 mm along x
    images, summary = load_training_images([str(path)], 16)
    assert images.shape == (1, 16, 16) and summary["sources"][str(path)]["images"] == 1
    on = images[0] > 0.5
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    # 8 mm (y) × 8 mm (x) block: square after resampling to 1 mm pixels
    assert abs(len(rows) - len(cols)) <= 1


def test_bad_sources(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="^" + re.escape(f"{empty}: ") + r"empty folder"):
        load_training_images([str(empty)], SIZE)
    missing = tmp_path / "nowhere"
    with pytest.raises(
        ValueError, match="^" + re.escape(f"{missing}: ") + r"no such file or folder"
    ) as error:
        load_training_images([str(missing)], SIZE)
    assert "\n" not in str(error.value)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"\x89PNG broken")
    (junk / "y.jpg").write_bytes(np.zeros(1, np.uint8).tobytes())
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match="^" + re.escape(f"{junk}: ") + r"no readable"),
    ):
        load_training_images([str(junk)], SIZE)
    blank = tmp_path / "blank"
    blank.mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(blank / "black.png")
    with pytest.warns(UserWarning, match="blank"), pytest.raises(ValueError, match="no readable"):
        load_training_images([str(blank)], SIZE)
    with pytest.raises(ValueError, match="mni-validation: unknown bundled source"):
        load_training_images(["mni-validation"], SIZE)
    with pytest.raises(ValueError, match="size"):
        load_training_images(["mni-train"], 4)
    with pytest.raises(ValueError, match="sources"):
        load_training_images([], SIZE)


def test_npy_stacks_equal_the_mni_source(tmp_path):
    """mni-train written with np.save and read back as a folder source: every slice of the stack
    (and the single-image file) goes through the common preparation, nothing else."""
    mni, _ = load_training_images(["mni-train"], 32)
    np.save(tmp_path / "stack.npy", mni)
    np.save(tmp_path / "one.npy", mni[0])
    np.save(tmp_path / "bad.npy", np.array(["a", "b"]))
    with pytest.warns(UserWarning, match="bad.npy: skipped"):
        got, summary = load_training_images([str(tmp_path)], 32)
    assert summary["sources"][str(tmp_path)]["files_by_type"]["npy"] == 2
    assert len(got) == len(mni) + 1  # one.npy sorts before stack.npy
    expected = np.stack([prepare_image(m.astype(np.float64), 32) for m in mni])
    np.testing.assert_allclose(got[1:], expected, atol=1e-6)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# one format sniffer, one reader per format


def _every_kind(root: Path) -> dict[str, str]:
    """A file of each kind in ``root``: its name → the kind the sniffer must give it."""
    root.mkdir()
    write_kspace(root / "k.h5", np.ones((1, 8, 8), np.complex64))
    write_ismrmrd(root / "raw.h5", np.ones((1, 8, 8), np.complex64))
    nib.save(nib.Nifti1Image(nifti_volume(), np.eye(4)), root / "vol.nii.gz")
    shutil.copy(bundled_test_files_dir() / "MR_small.dcm", root / "slice.dcm")
    shutil.copy(bundled_test_files_dir() / "MR_small.dcm", root / "IM0001")  # by DICM prefix
    Image.fromarray(grey_picture()).save(root / "pic.png")
    Image.fromarray(grey_picture()).save(root / "pic.jpg")
    np.save(root / "stack.npy", np.ones((2, 9, 9)))
    (root / "notes.txt").write_text("no image\n")
    return {
        "k.h5": "fastmri",
        "raw.h5": "ismrmrd",
        "vol.nii.gz": "nifti",
        "slice.dcm": "dicom",
        "IM0001": "dicom",
        "pic.png": "picture",
        "pic.jpg": "picture",
        "stack.npy": "npy",
    }


def test_training_and_reconstruct_agree_on_every_kind(tmp_path):
    root = tmp_path / "every"
    kinds = _every_kind(root)
    with pytest.warns(UserWarning, match="skipped"):
        _, summary = load_training_images([str(root)], SIZE)
    unknown = str(pytest.raises(InputError, detect_format, root / "notes.txt").value)
    assert unknown.startswith("notes.txt: unknown file type")
    for name, kind in kinds.items():
        assert sniff_format(root / name) == kind, name
        if kind in FORMATS:  # reconstruct reads it as the same format
            assert detect_format(root / name) == kind, name
        else:  # reconstruct refuses it, with the one line it gives any unknown file
            for call in (detect_format, read_input):
                message = str(pytest.raises(InputError, call, root / name).value)
                assert message == unknown.replace("notes.txt", name)
    # training reads the image kinds, and skips k-space and the unknown file, with the reason
    got = summary["sources"][str(root)]
    assert got["files_by_type"] == {"image": 2, "nifti": 1, "dicom": 2, "npy": 1}
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    unknown_any = reasons["notes.txt"]
    assert reasons["k.h5"] == "fastmri k-space data, not an image"
    assert reasons["raw.h5"] == "ismrmrd k-space data, not an image"
    assert unknown_any.startswith("unknown file type (") and "PNG/JPEG" in unknown_any
    assert len(reasons) == 3


def test_nifti_and_dicom_go_through_the_io_readers(tmp_path):
    """The input limits and the readers' refusals apply to training files: a NIfTI and a DICOM
    file above the voxel limit are skipped with the reader's reason (a picture is not limited),
    and so is a CT file (the DICOM reader reads MR only); a rescaled DICOM file is rescaled."""
    root = tmp_path / "limited"
    root.mkdir()
    nib.save(nib.Nifti1Image(nifti_volume(), np.eye(4)), root / "vol.nii")  # 720 voxels
    ds = pydicom.dcmread(bundled_test_files_dir() / "MR_small.dcm")  # 64 x 64 voxels
    ds.RescaleSlope, ds.RescaleIntercept = "2.5", "-100"
    ds.save_as(root / "rescaled.dcm")
    shutil.copy(bundled_test_files_dir() / "CT_small.dcm", root / "ct.dcm")
    Image.fromarray(grey_picture()).save(root / "pic.png")
    with input_limits(max_voxels=500), pytest.warns(UserWarning, match="skipped"):
        images, summary = load_training_images([str(root)], SIZE)
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert sorted(reasons) == ["ct.dcm", "rescaled.dcm", "vol.nii"] and len(images) == 1
    assert "--max-input-voxels" in reasons["vol.nii"]
    assert "--max-input-voxels" in reasons["rescaled.dcm"]
    assert "modality is 'CT'" in reasons["ct.dcm"]
    with pytest.warns(UserWarning, match="ct.dcm: skipped"):
        images, summary = load_training_images([str(root)], SIZE)
    assert summary["sources"][str(root)]["files_by_type"] == {
        "image": 1,
        "nifti": 1,
        "dicom": 1,
        "npy": 0,
    }
    raw = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(images[1], prepare_image(2.5 * raw - 100.0, SIZE), atol=1e-6)


def test_nifti_collections_4d_2d_and_nan(tmp_path):
    """Every volume of a 4-D file, a 2-D file as one slice, and NaN counted and read as 0."""
    vol = nifti_volume()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "a_3d.nii")
    nib.save(nib.Nifti1Image(np.stack([vol, 2 * vol], -1), np.eye(4)), tmp_path / "b_4d.nii")
    nib.save(nib.Nifti1Image(vol[:, :, 1], np.eye(4)), tmp_path / "c_2d.nii")
    nan = np.where(vol == 0, np.nan, vol).astype(np.float32)
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "d_nan.nii")
    images, summary = load_training_images([str(tmp_path)], SIZE)
    assert len(images) == 3 + 6 + 1 + 3 and summary["skipped"] == []
    three = images[:3]
    np.testing.assert_allclose(images[3:6], three, atol=1e-6)  # volume 0
    np.testing.assert_allclose(images[6:9], three, atol=1e-6)  # volume 1 = 2 x volume 0
    np.testing.assert_array_equal(images[9], three[0])  # the 2-D file is slice z = 1
    np.testing.assert_array_equal(images[10:], three)  # NaN = 0: z = 0 and 5 stay empty
