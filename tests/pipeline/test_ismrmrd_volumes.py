"""ISMRMRD files with several volumes (contrasts, phases, repetitions, sets), averages, and 3-D
Cartesian encodings (``kspace_encode_step_2``)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sgilo.flows.cli import main
from sgilo.pipeline.io.ismrmrd import read_ismrmrd, read_ismrmrd_volumes, write_ismrmrd
from sgilo.pipeline.io.ismrmrd_dimensions import parse_selection
from sgilo.pipeline.io.ismrmrd_write import AcquisitionGeometry
from sgilo.pipeline.io.types import InputError

C, H, W = 2, 16, 12
MASK = np.isin(np.arange(W), [0, 2, 4, 5, 6, 7, 9])


def _kspace(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _centred(x: np.ndarray, axes: tuple[int, ...], inverse: bool = False) -> np.ndarray:
    fft = np.fft.ifftn if inverse else np.fft.fftn
    return np.fft.fftshift(fft(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _one_line(call, name: str, reason: str) -> None:
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and name in message and reason in message, message


@pytest.fixture()
def echoes(tmp_path):
    """Two contrasts (echoes) x two repetitions, two slices each."""
    volumes = {(c, 0, r, 0): _kspace((2, C, H, W), 10 * c + r) for c in (0, 1) for r in (0, 1)}
    return write_ismrmrd(tmp_path / "echoes.h5", volumes, MASK), volumes


def test_each_volume_is_a_study(echoes):
    path, volumes = echoes
    studies = read_ismrmrd_volumes(path)
    assert [s.name for s in studies] == [
        "echoes_c0_r0",
        "echoes_c0_r1",
        "echoes_c1_r0",
        "echoes_c1_r1",
    ]
    for study in studies:
        key = tuple(study.attrs[n] for n in ("contrast", "phase", "repetition", "set"))
        np.testing.assert_array_equal(study.kspace, volumes[key] * MASK)
        np.testing.assert_array_equal(study.mask, MASK)
    # one acquisition: one frame of reference for all its volumes
    assert len({s.frame_of_reference_uid for s in studies}) == 1
    _one_line(lambda: read_ismrmrd(path), "echoes.h5", "4 volumes")


def test_a_selection_keeps_some_volumes(echoes):
    path, volumes = echoes
    studies = read_ismrmrd_volumes(path, parse_selection("contrast=1; repetition=0,5"))
    assert [s.name for s in studies] == ["echoes_c1_r0"]
    np.testing.assert_array_equal(studies[0].kspace, volumes[(1, 0, 0, 0)] * MASK)
    _one_line(
        lambda: read_ismrmrd_volumes(path, parse_selection("set=3")), "echoes.h5", "matches none"
    )


@pytest.mark.parametrize(
    "text", ["echo=1", "contrast", "contrast=a", "contrast=-1", "", "set=1;set=2"]
)
def test_bad_selections_are_refused(text):
    with pytest.raises(ValueError):
        parse_selection(text)


def test_averages_are_averaged(tmp_path):
    k = _kspace((1, C, H, W), 3)
    path = write_ismrmrd(tmp_path / "avg.h5", k)
    with h5py.File(path, "r+") as f:
        rows = f["dataset/data"][()]
        again = rows.copy()
        again["head"]["idx"]["average"] = 1
        for i in range(len(again)):
            again["data"][i] = 3 * np.asarray(rows["data"][i])
        del f["dataset/data"]
        f["dataset"].create_dataset("data", data=np.concatenate([rows, again]))
    (study,) = read_ismrmrd_volumes(path)
    np.testing.assert_allclose(study.kspace, 2 * k, rtol=1e-6)  # (k + 3k) / 2


def test_cli_writes_one_output_set_per_selected_volume(echoes, tmp_path):
    path, _ = echoes
    out = tmp_path / "out"
    args = ["reconstruct", str(path), "--method", "zero-filled", "--out", str(out)]
    assert main([*args, "--volumes", "repetition=1", "--format", "h5,nifti"]) == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("run."))
    assert names == [
        "echoes_c0_r1.h5",
        "echoes_c0_r1.nii.gz",
        "echoes_c1_r1.h5",
        "echoes_c1_r1.nii.gz",
    ]
    with h5py.File(out / "echoes_c1_r1.h5") as f:
        assert f["reconstruction"].shape == (2, H, W)
    with pytest.raises(SystemExit) as info:
        main([*args, "--volumes", "echo=1"])
    assert info.value.code == 2


# ----------------------------------------------------------------------------- 3-D


def _slab(nz: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(k2d, k3d)``: per-slice 2-D k-space ``(nz, C, H, W)`` and the slab's 3-D k-space (the
    centred FFT of ``k2d`` along the slices)."""
    images = _kspace((nz, C, H, W), seed)
    k2d = _centred(images, (-2, -1))
    return k2d.astype(np.complex64), _centred(k2d, (0,)).astype(np.complex64)


def test_3d_partitions_become_2d_slices(tmp_path):
    k2d, k3d = _slab(8)
    slice_dir = np.array([0.0, 0.6, 0.8])
    geometry = AcquisitionGeometry(
        phase_dir=(0.0, 0.8, -0.6), slice_dir=tuple(slice_dir), centre=(5.0, 6.0, 7.0)
    )
    path = write_ismrmrd(
        tmp_path / "slab.h5", k3d, MASK, three_d=True, fov_mm=(160, 120, 40), geometry=geometry
    )
    study = read_ismrmrd(path)
    assert study.kspace.shape == (8, C, H, W)
    np.testing.assert_allclose(study.kspace, k2d * MASK, atol=1e-4)
    np.testing.assert_array_equal(study.mask, MASK)
    # slices 40 / 8 = 5 mm apart along slice_dir; partition nz // 2 at the slab centre
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(study.affine[:3, 2], lps_to_ras @ (5.0 * slice_dir), atol=1e-5)
    centre = study.affine @ [W // 2, H // 2, 4, 1.0]
    np.testing.assert_allclose(centre[:3], lps_to_ras @ [5.0, 6.0, 7.0], atol=1e-4)


def test_3d_slice_oversampling_is_cropped(tmp_path):
    import ismrmrd.xsd

    k2d, k3d = _slab(8)
    path = write_ismrmrd(tmp_path / "os.h5", k3d, three_d=True)
    with h5py.File(path, "r+") as f:
        header = ismrmrd.xsd.CreateFromDocument(f["dataset/xml"][0].decode())
        header.encoding[0].reconSpace.matrixSize.z = 6
        del f["dataset/xml"]
        f["dataset"].create_dataset("xml", data=[ismrmrd.xsd.ToXML(header).encode()])
    study = read_ismrmrd(path)
    np.testing.assert_allclose(study.kspace, k2d[1:7], atol=1e-4)  # the central 6 partitions


def test_3d_with_a_missing_partition_is_refused(tmp_path):
    _, k3d = _slab(4)
    path = write_ismrmrd(tmp_path / "holes.h5", k3d, three_d=True)
    with h5py.File(path, "r+") as f:
        rows = f["dataset/data"][()]
        keep = rows["head"]["idx"]["kspace_encode_step_2"] != 3
        del f["dataset/data"]
        f["dataset"].create_dataset("data", data=rows[keep])
    _one_line(lambda: read_ismrmrd(path), "holes.h5", "partition 3 has no acquisitions")
