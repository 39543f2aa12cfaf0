"""NIfTI I/O: RAS+ display orientation, geometry-preserving round trips, nibabel's own test
image, one-line errors for every kind of bad input, and atomic writes."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sgilo.pipeline.data.mni import axial_display_slice
from sgilo.pipeline.io.limits import input_limits
from sgilo.pipeline.io.nifti import (
    ImageVolume,
    from_display,
    read_nifti,
    read_nifti_volumes,
    to_display,
    write_nifti,
)
from sgilo.pipeline.io.types import InputError

#: LPS-like voxel axes: i → Left (flipped x), j → Posterior, k → Superior; anisotropic voxels
LPS_AFFINE = np.array(
    [
        [-0.9, 0.0, 0.0, 40.0],
        [0.0, -1.2, 0.0, 55.0],
        [0.0, 0.0, 3.0, -20.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SHAPE = (7, 5, 4)


def _volume(shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1.0, 100.0, shape).astype(np.float32)


def _save(path: Path, data: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=1)
    nib.save(img, path)
    return path


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(affine, ijk)


def test_display_transform_matches_project_convention():
    vol = _volume()
    data = to_display(vol)
    assert data.shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    for k in range(SHAPE[2]):
        np.testing.assert_array_equal(data[k], axial_display_slice(vol, k))
    np.testing.assert_array_equal(from_display(data), vol)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_preserves_data_and_world_geometry(tmp_path, suffix):
    original = _volume()
    src = _save(tmp_path / f"scan{suffix}", original)
    image = read_nifti(src)

    assert isinstance(image, ImageVolume)
    assert image.name == "scan"
    assert image.data.dtype == np.float32 and image.data.shape == (4, 5, 7)
    np.testing.assert_allclose(image.affine, LPS_AFFINE, atol=1e-6)
    assert image.axcodes == ("L", "P", "S")
    assert nib.aff2axcodes(image.ras_affine) == ("R", "A", "S")
    np.testing.assert_allclose(image.zooms, (0.9, 1.2, 3.0), atol=1e-6)
    assert image.xform_code == 2

    # every display pixel maps to the world position of its original voxel
    ras = image.ras_volume()
    for x, y, z in [(0, 0, 0), (6, 4, 3), (2, 3, 1), (5, 0, 2)]:
        world = _world(image.ras_affine, np.array([x, y, z]))
        i, j, k = np.rint(_world(np.linalg.inv(LPS_AFFINE), world)).astype(int)
        assert ras[x, y, z] == original[i, j, k]

    out = write_nifti(tmp_path / f"out{suffix}", image.data, like=image)
    assert out.exists()
    written = nib.load(out)
    assert written.get_data_dtype() == np.float32
    assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 2
    np.testing.assert_allclose(written.affine, image.ras_affine, atol=1e-6)

    # the written file's voxels sit at the same world positions as the original's
    written_data = np.asarray(written.dataobj)
    for i, j, k in [(0, 0, 0), (6, 4, 3), (1, 2, 3), (3, 1, 0)]:
        world = _world(LPS_AFFINE, np.array([i, j, k]))
        a, b, c = np.rint(_world(np.linalg.inv(written.affine), world)).astype(int)
        assert written_data[a, b, c] == original[i, j, k]

    again = read_nifti(out)
    np.testing.assert_allclose(again.data, image.data, atol=1e-6)
    np.testing.assert_allclose(again.affine, image.ras_affine, atol=1e-6)
    np.testing.assert_allclose(again.ras_affine, image.ras_affine, atol=1e-6)


def test_scaling_and_singleton_fourth_axis(tmp_path):
    ints = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    img = nib.Nifti1Image(ints[..., None], np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_slope_inter(2.0, 5.0)
    nib.save(img, tmp_path / "scaled.nii")
    image = read_nifti(tmp_path / "scaled.nii")
    np.testing.assert_allclose(image.ras_volume(), 2.0 * ints + 5.0)


def test_nibabel_anatomical_loads():
    with importlib.resources.as_file(
        importlib.resources.files("nibabel") / "tests/data" / "anatomical.nii"
    ) as path:
        image = read_nifti(path)
    assert image.data.shape == (25, 41, 33)
    assert image.ras_shape == (33, 41, 25)
    assert np.isfinite(image.data).all() and image.data.max() > 0
    assert nib.aff2axcodes(image.ras_affine) == ("R", "A", "S")


def _bad_random(p: Path) -> Path:
    p.write_bytes(np.random.default_rng(1).bytes(2000))
    return p


def _bad_truncated(p: Path) -> Path:
    full = _save(p.with_name("full.nii"), _volume((16, 16, 16)))
    raw = full.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    return p


BAD_INPUTS = {
    "missing": lambda p: p,
    "random bytes": _bad_random,
    "truncated": _bad_truncated,
    "2-D": lambda p: _save(p, _volume((6, 5)), np.eye(4)),
    "4-D with 3 volumes": lambda p: _save(p, _volume((4, 4, 4, 3))),
    "complex": lambda p: _save(p, _volume().astype(np.complex64)),
    "NaN": lambda p: _save(p, np.where(_volume() > 50, np.nan, 1.0).astype(np.float32)),
    "empty": lambda p: (p.write_bytes(b""), p)[1],
    "wrong name": lambda p: _save(p.with_suffix(".img"), _volume()),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_inputs_raise_one_line_input_error(tmp_path, kind):
    path = BAD_INPUTS[kind](tmp_path / "bad_input.nii")
    with pytest.raises(InputError) as info:
        read_nifti(path)
    message = str(info.value)
    assert path.name in message
    assert "\n" not in message


def test_volumes_of_a_collection(tmp_path):
    """read_nifti_volumes: a 4-D file gives each volume as read_nifti reads it alone (same
    orientation, geometry and limits); a 2-D file is one slice; NaN only when asked."""
    vols = [_volume(seed=t) for t in range(3)]
    read = read_nifti_volumes(_save(tmp_path / "four.nii", np.stack(vols, -1)))
    assert [v.name for v in read] == ["four_t0", "four_t1", "four_t2"]
    for t, got in enumerate(read):
        alone = read_nifti(_save(tmp_path / f"v{t}.nii", vols[t]))
        np.testing.assert_array_equal(got.data, alone.data)
        np.testing.assert_array_equal(got.ras_affine, alone.ras_affine)
        assert got.zooms == alone.zooms and got.xform_code == alone.xform_code
    (one,) = read_nifti_volumes(_save(tmp_path / "flat.nii", _volume((6, 5)), np.eye(4)))
    np.testing.assert_array_equal(one.data[0], axial_display_slice(_volume((6, 5))[..., None], 0))
    (same,) = read_nifti_volumes(tmp_path / "v0.nii")
    np.testing.assert_array_equal(same.data, read_nifti(tmp_path / "v0.nii").data)
    nan = _save(tmp_path / "nan.nii", np.where(vols[0] > 50, np.nan, 1.0).astype(np.float32))
    with pytest.raises(InputError, match="non-finite"):
        read_nifti_volumes(nan)
    (kept,) = read_nifti_volumes(nan, finite=False)
    assert np.isnan(kept.data).any()
    with pytest.raises(InputError, match="expected a 2-D, 3-D or 4-D image"):
        read_nifti_volumes(_save(tmp_path / "five.nii", _volume((3, 3, 3, 2, 2))))
    limit = 2 * int(np.prod(SHAPE))
    with input_limits(max_voxels=limit), pytest.raises(InputError, match="voxels"):
        read_nifti_volumes(tmp_path / "four.nii")  # the limit counts every volume


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    image = read_nifti(_save(tmp_path / "src.nii", _volume()))
    target = tmp_path / "out" / "recon.nii.gz"

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(target, image.data, like=image)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_write_rejects_bad_data(tmp_path):
    image = read_nifti(_save(tmp_path / "src.nii", _volume()))
    with pytest.raises(ValueError, match="shape"):
        write_nifti(tmp_path / "a.nii", image.data[:, :-1], like=image)
    with pytest.raises(ValueError, match="non-finite"):
        write_nifti(tmp_path / "b.nii", image.data * np.nan, like=image)
    with pytest.raises(ValueError, match=".nii"):
        write_nifti(tmp_path / "c.h5", image.data, like=image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.nii"]
