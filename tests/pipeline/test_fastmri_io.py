"""fastMRI HDF5 I/O: round trips through real files, the submission format, atomic writes,
one-line errors for every kind of bad input, and retrospective undersampling."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from sgilo.operators.masks import center_columns, column_mask, seed_from_name
from sgilo.pipeline.io.fastmri import (
    center_run_length,
    read_fastmri,
    retrospective_undersample,
    write_kspace,
    write_reconstruction,
    write_study,
)
from sgilo.pipeline.io.types import InputError, KSpaceStudy


def _kspace(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random complex64 k-space of ``shape`` (no exact zeros)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape) + 0.1).astype(np.complex64)


def _column_mask(width: int = 16) -> np.ndarray:
    """bool (W,): every 3rd column plus 4 centre columns (interior gaps, centre run of 4)."""
    mask = np.zeros(width, dtype=bool)
    mask[::3] = True
    mask[center_columns(width, 4)] = True
    return mask


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ----------------------------------------------------------------------------- round trips


def test_center_run_length() -> None:
    assert center_run_length(np.array([0, 1, 1, 1, 1, 0, 1, 0], dtype=bool)) == 4
    assert center_run_length(np.array([1, 0, 0, 0, 1, 1], dtype=bool)) == 0
    assert center_run_length(np.ones(7, dtype=bool)) == 7
    assert center_run_length(_column_mask(16)) == 4


def test_single_coil_fully_sampled_round_trip(tmp_path: Path) -> None:
    k = _kspace((3, 12, 10))
    path = write_kspace(tmp_path / "file1.h5", k, attrs={"patient_id": "abc", "max": 2.5})
    study = read_fastmri(path)
    assert study.name == "file1" and study.source == path
    assert not study.multicoil and study.kspace.shape == (3, 1, 12, 10)
    assert study.kspace.dtype == np.complex64
    np.testing.assert_array_equal(study.kspace[:, 0], k)
    assert study.mask is None and not study.is_undersampled
    assert study.acceleration is None and study.num_low_frequencies is None
    assert (study.num_slices, study.num_coils, study.shape) == (3, 1, (12, 10))
    assert study.attrs == {"patient_id": "abc", "max": 2.5}
    assert study.maps is None and study.target is None and study.ismrmrd_header is None


def test_multicoil_round_trip_with_mask_dataset(tmp_path: Path) -> None:
    mask = _column_mask(16)
    k = _kspace((2, 4, 8, 16)) * mask
    path = write_kspace(tmp_path / "mc.h5", k, mask=mask, attrs={"recon_size": [8, 8]})
    with h5py.File(path, "r") as f:  # the on-disk layout is fastMRI's
        assert f["mask"].dtype == np.bool_ and f["mask"].shape == (16,)
        assert f.attrs["acceleration"] == pytest.approx(16 / mask.sum())
        assert f.attrs["num_low_frequency"] == 4
    study = read_fastmri(path)
    assert study.multicoil and study.kspace.shape == (2, 4, 8, 16)
    np.testing.assert_array_equal(study.kspace, k)
    np.testing.assert_array_equal(study.mask, mask)
    assert study.is_undersampled
    assert study.acceleration == pytest.approx(16 / mask.sum())
    assert study.num_low_frequencies == 4
    assert study.attrs == {"recon_size": [8, 8]}
    np.testing.assert_array_equal(study.sampling_mask(), np.broadcast_to(mask, (8, 16)))


def test_mask_detected_from_zero_columns(tmp_path: Path) -> None:
    mask = _column_mask(16)
    k = _kspace((2, 3, 8, 16)) * mask
    study = read_fastmri(write_kspace(tmp_path / "zeros.h5", k))
    np.testing.assert_array_equal(study.mask, mask)
    assert study.acceleration == pytest.approx(16 / mask.sum())
    assert study.num_low_frequencies == 4


def test_file_attributes_override_computed_values(tmp_path: Path) -> None:
    mask = _column_mask(16)
    path = write_kspace(
        tmp_path / "nominal.h5",
        _kspace((1, 8, 16)) * mask,
        mask=mask,
        attrs={"acceleration": 4, "num_low_frequency": 3},
    )
    study = read_fastmri(path)
    assert (study.acceleration, study.num_low_frequencies) == (4.0, 3)
    with h5py.File(path, "a") as f:  # the alternative spelling is accepted too
        del f.attrs["num_low_frequency"]
        f.attrs["num_low_frequencies"] = 5
    assert read_fastmri(path).num_low_frequencies == 5


def test_edge_zero_padding_is_not_undersampling(tmp_path: Path) -> None:
    k = _kspace((1, 8, 16))
    k[..., :2] = 0
    k[..., -3:] = 0
    study = read_fastmri(write_kspace(tmp_path / "padded.h5", k))
    assert study.mask is None and not study.is_undersampled


def test_full_mask_dataset_means_fully_sampled(tmp_path: Path) -> None:
    path = write_kspace(tmp_path / "full.h5", _kspace((1, 4, 6)), mask=np.ones(6, dtype=bool))
    assert read_fastmri(path).mask is None


def test_maps_target_header_and_complex128_round_trip(tmp_path: Path) -> None:
    k = _kspace((2, 3, 6, 8)).astype(np.complex128)
    maps = _kspace((2, 3, 6, 8), seed=1)
    target = np.abs(_kspace((2, 4, 4), seed=2)).astype(np.float64)
    header = "<ismrmrdHeader><x>ü</x></ismrmrdHeader>"
    path = write_kspace(tmp_path / "extra.h5", k, maps=maps, target=target, ismrmrd_header=header)
    study = read_fastmri(path)
    assert study.kspace.dtype == np.complex64
    np.testing.assert_array_equal(study.kspace, k.astype(np.complex64))
    np.testing.assert_array_equal(study.maps, maps)
    assert study.target is not None and study.target.dtype == np.float32
    np.testing.assert_allclose(study.target, target, rtol=1e-6)
    assert study.ismrmrd_header == header


def test_single_coil_maps_and_esc_target(tmp_path: Path) -> None:
    path = tmp_path / "sc.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = _kspace((2, 4, 6))
        f["sens_maps"] = np.ones((2, 4, 6), dtype=np.complex64)
        f["reconstruction_esc"] = np.full((2, 3, 3), 1.0, dtype=np.float32)
        f["reconstruction_rss"] = np.full((2, 3, 3), 2.0, dtype=np.float32)
    study = read_fastmri(path)
    assert study.maps is not None and study.maps.shape == (2, 1, 4, 6)
    assert study.target is not None and np.all(study.target == 1.0)  # ESC for single-coil


def test_write_study_round_trip(tmp_path: Path) -> None:
    full = read_fastmri(write_kspace(tmp_path / "full.h5", _kspace((2, 8, 16))))
    under = retrospective_undersample(full, 4, 0.125, seed=3)
    again = read_fastmri(write_study(tmp_path / "under.h5", under))
    np.testing.assert_array_equal(again.kspace, under.kspace)
    np.testing.assert_array_equal(again.mask, under.mask)
    assert (again.acceleration, again.num_low_frequencies) == (4.0, 2)
    assert not again.multicoil


# ----------------------------------------------------------------------------- submission format


def test_write_reconstruction_format(tmp_path: Path) -> None:
    recon = np.abs(_kspace((3, 5, 7))).astype(np.float64)
    path = write_reconstruction(tmp_path / "out" / "file1.h5", recon, attrs={"method": "tv"})
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["reconstruction"]
        ds = f["reconstruction"]
        assert ds.dtype == np.float32 and ds.shape == (3, 5, 7)
        np.testing.assert_array_equal(ds[()], recon.astype(np.float32))
        assert f.attrs["method"] == "tv"
    assert _listing(path.parent) == ["file1.h5"]


@pytest.mark.parametrize(
    "recon",
    [
        np.ones((2, 3, 3), dtype=np.complex64),
        np.ones((3, 3), dtype=np.float32),
        np.full((1, 2, 2), np.nan, dtype=np.float32),
    ],
    ids=["complex", "2-D", "nan"],
)
def test_write_reconstruction_rejects_bad_arrays(tmp_path: Path, recon: np.ndarray) -> None:
    with pytest.raises(ValueError):
        write_reconstruction(tmp_path / "bad.h5", recon)
    assert _listing(tmp_path) == []


def test_write_reconstruction_rejects_non_json_attrs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON"):
        write_reconstruction(tmp_path / "r.h5", np.zeros((1, 2, 2)), attrs={"x": {"a": 1}})
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("writer", ["reconstruction", "kspace"])
def test_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    final = tmp_path / "file1.h5"
    final.write_bytes(b"previous output")
    original = h5py.Group.create_dataset
    seen_tmp: list[str] = []

    def fail_midway(self: h5py.Group, *args: object, **kwargs: object) -> h5py.Dataset:
        original(self, *args, **kwargs)  # data reaches the temporary file, then the write fails
        seen_tmp.append(os.path.basename(self.file.filename))
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        if writer == "reconstruction":
            write_reconstruction(final, np.ones((2, 4, 4)))
        else:
            write_kspace(final, _kspace((2, 4, 4)))
    assert seen_tmp and seen_tmp[0].startswith(".file1.h5.") and seen_tmp[0].endswith(".tmp")
    assert _listing(tmp_path) == ["file1.h5"]
    assert final.read_bytes() == b"previous output"  # never partially overwritten


# ----------------------------------------------------------------------------- bad inputs


def _h5(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f[name] = data
    return path


def _truncated(path: Path) -> Path:
    data = write_kspace(path.with_name("whole.h5"), _kspace((4, 32, 32))).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _huge(shape: tuple[int, ...]) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        with h5py.File(path, "w") as f:  # declared but never written: a tiny file
            f.create_dataset("kspace", shape=shape, dtype=np.complex64)
        return path

    return build


def _with_nonfinite(value: complex) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        k = _kspace((2, 4, 4))
        k[1, 2, 3] = value
        return _h5(path, kspace=k)

    return build


def _with_mask(mask: np.ndarray) -> Callable[[Path], Path]:
    return lambda path: _h5(path, kspace=_kspace((2, 4, 8)), mask=mask)


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda p: p, "does not exist"),
    "directory": (lambda p: (p.mkdir(), p)[1], "directory"),
    "empty": (lambda p: (p.write_bytes(b""), p)[1], "empty"),
    "corrupt": (
        lambda p: (p.write_bytes(np.random.default_rng(0).bytes(4096)), p)[1],
        "not an HDF5",
    ),
    "truncated": (_truncated, "truncated"),
    "no kspace": (lambda p: _h5(p, image=np.zeros((2, 2)), other=np.ones(3)), "image, other"),
    "kspace group": (
        lambda p: (h5py.File(p, "w").create_group("kspace").file.close(), p)[1],
        "datasets found: none",
    ),
    "real kspace": (lambda p: _h5(p, kspace=np.ones((2, 4, 4), np.float32)), "not complex"),
    "integer kspace": (lambda p: _h5(p, kspace=np.ones((2, 4, 4), np.int16)), "not complex"),
    "rank 2": (lambda p: _h5(p, kspace=_kspace((4, 4))), "rank 2"),
    "rank 5": (lambda p: _h5(p, kspace=_kspace((1, 1, 2, 4, 4))), "rank 5"),
    "zero size": (lambda p: _h5(p, kspace=np.zeros((0, 4, 4), np.complex64)), "zero-size"),
    "huge width": (_huge((1, 8, 4097)), "too large"),
    "huge height": (_huge((1, 5000, 8)), "too large"),
    "many coils": (_huge((1, 129, 4, 4)), "too large"),
    "many slices": (_huge((2049, 2, 2)), "too large"),
    "huge in all": (_huge((2048, 128, 4096, 4096)), "samples in all"),  # axes within limits
    "nan": (_with_nonfinite(complex(np.nan, 0)), "non-finite"),
    "inf": (_with_nonfinite(complex(0, np.inf)), "non-finite"),
    "all zero": (lambda p: _h5(p, kspace=np.zeros((2, 4, 4), np.complex64)), "all zero"),
    "mask length": (_with_mask(np.ones(7, dtype=bool)), "kspace width"),
    "mask 2-D": (_with_mask(np.ones((4, 8), dtype=bool)), "kspace width"),
    "mask samples nothing": (_with_mask(np.zeros(8, dtype=np.uint8)), "samples no"),
    "mask not binary": (_with_mask(np.full(8, 0.5)), "0 and 1"),
    "bad acceleration attr": (
        lambda p: (_h5(p, kspace=_kspace((1, 4, 4))), _set_attr(p, "acceleration", "fast"))[0],
        "acceleration",
    ),
    "maps shape": (
        lambda p: _h5(p, kspace=_kspace((1, 2, 4, 4)), sens_maps=_kspace((1, 3, 4, 4))),
        "sens_maps",
    ),
}


def _set_attr(path: Path, name: str, value: object) -> None:
    with h5py.File(path, "a") as f:
        f.attrs[name] = value


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_raises_one_line_input_error(tmp_path: Path, case: str) -> None:
    build, expected = BAD_INPUTS[case]
    path = build(tmp_path / "scan_0042.h5")
    with pytest.raises(InputError) as info:
        read_fastmri(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "scan_0042.h5" in message
    assert "\n" not in message and "\r" not in message
    assert expected in message


def test_huge_kspace_is_rejected_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _huge((1, 8, 4097))(tmp_path / "big.h5")

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("k-space data was read")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", no_reading)
    monkeypatch.setattr(h5py.Dataset, "astype", no_reading)
    with pytest.raises(InputError, match="too large"):
        read_fastmri(path)


# ----------------------------------------------------------------------------- undersampling


def _full_study(tmp_path: Path, name: str = "file1000001.h5") -> KSpaceStudy:
    return read_fastmri(write_kspace(tmp_path / name, _kspace((2, 3, 8, 32))))


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_retrospective_undersampling_uses_the_fastmri_mask(tmp_path: Path, kind: str) -> None:
    study = _full_study(tmp_path)
    under = retrospective_undersample(study, 4, 0.125, seed=7, kind=kind)
    expected = column_mask(kind, 32, 0.125, 4, 7)
    np.testing.assert_array_equal(under.mask, expected)
    np.testing.assert_array_equal(under.kspace[..., expected], study.kspace[..., expected])
    assert not under.kspace[..., ~expected].any()
    assert under.is_undersampled and under.acceleration == 4.0
    assert under.num_low_frequencies == 4
    assert under.kspace.dtype == np.complex64
    assert study.mask is None and study.kspace.all()  # the input study is unchanged


def test_retrospective_seed_defaults_to_the_file_name(tmp_path: Path) -> None:
    study = _full_study(tmp_path, "file1000001.h5")
    first = retrospective_undersample(study, 4, 0.08, None)
    second = retrospective_undersample(study, 4, 0.08, None)
    expected = column_mask("random", 32, 0.08, 4, seed_from_name("file1000001.h5"))
    np.testing.assert_array_equal(first.mask, expected)
    np.testing.assert_array_equal(first.mask, second.mask)
    other = retrospective_undersample(_full_study(tmp_path, "file1000002.h5"), 4, 0.08, None)
    assert other.mask is not None and not np.array_equal(other.mask, first.mask)


def test_retrospective_refuses_double_undersampling_and_bad_parameters(tmp_path: Path) -> None:
    study = _full_study(tmp_path)
    under = retrospective_undersample(study, 4, 0.125, seed=0)
    with pytest.raises(InputError, match="file1000001.h5.*already undersampled"):
        retrospective_undersample(under, 4, 0.125, seed=0)
    with pytest.raises(InputError, match="file1000001.h5.*acceleration"):
        retrospective_undersample(study, 0.5, 0.125, seed=0)
    with pytest.raises(InputError, match="file1000001.h5"):
        retrospective_undersample(study, 4, 0.5, seed=0)  # centre alone exceeds W / R
