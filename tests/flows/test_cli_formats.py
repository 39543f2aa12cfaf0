"""`sgilo reconstruct` on NIfTI, DICOM and ISMRMRD inputs with NIfTI/DICOM/PNG exports, called
in-process (``sgilo.flows.cli.main``) on tiny inputs built here.

Geometry is checked against the input files' own headers (nibabel affines, DICOM
ImagePositionPatient / ImageOrientationPatient / PixelSpacing), and DICOM outputs against
dicom3tools' ``dciodvfy`` when it is installed (required when ``SGILO_REQUIRE_DCIODVFY=1``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sgilo.flows.cli import main
from sgilo.pipeline.io.dicom import read_dicom
from sgilo.pipeline.io.dicom_write import NOT_FOR_DIAGNOSTIC_USE
from sgilo.pipeline.io.geometry import dicom_display_affine, nifti_display_affine
from sgilo.pipeline.io.ismrmrd import write_ismrmrd
from sgilo.pipeline.io.nifti import read_nifti

MR_SMALL = Path(str(get_testdata_file("MR_small.dcm", download=False)))
UNDERSAMPLE = ["--acceleration", "4", "--center-fraction", "0.08"]
ALL_FORMATS = ["--format", "h5,nifti,dicom,png"]
NIFTI_AFFINE = np.array([[0.9, 0, 0, -10.0], [0, 1.1, 0, 20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])


def _run(inputs: list[Path], out: Path, *extra: str) -> int:
    args = ["reconstruct", *map(str, inputs), "--method", "zero-filled", "--out", str(out)]
    return main([*args, *extra])


def _nifti_input(folder: Path) -> Path:
    vol = np.zeros((32, 40, 3), np.float32)
    vol[8:24, 10:30, :] = 100.0
    vol += np.random.default_rng(0).random(vol.shape).astype(np.float32)
    path = folder / "head.nii.gz"
    nib.save(nib.Nifti1Image(vol, NIFTI_AFFINE), path)
    return path


def _dicom_input(folder: Path, n: int = 3, series_number: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    uid = pydicom.uid.generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(MR_SMALL)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 2.5 * k]
        ds.InstanceNumber, ds.SeriesNumber = k + 1, series_number
        ds.SOPInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), uid
        ds.save_as(folder / f"im{series_number}_{k}.dcm")
    return folder


@pytest.fixture(scope="module")
def nifti_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("nifti")
    path = _nifti_input(folder)
    assert _run([path], folder / "out", *UNDERSAMPLE, *ALL_FORMATS) == 0
    return path, folder / "out"


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("dicom")
    series = _dicom_input(folder / "series")
    assert _run([series], folder / "out", *UNDERSAMPLE, *ALL_FORMATS) == 0
    return series, folder / "out"


@pytest.fixture(scope="module")
def ismrmrd_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ismrmrd")
    rng = np.random.default_rng(2)
    k = (rng.standard_normal((2, 3, 32, 24)) + 1j * rng.standard_normal((2, 3, 32, 24))) / 10
    mask = np.zeros(24, dtype=bool)
    mask[::3] = mask[10:14] = True
    path = write_ismrmrd(folder / "raw.h5", k.astype(np.complex64), mask, fov_mm=(200, 180, 4))
    assert _run([path], folder / "out", "--format", "nifti,dicom") == 0
    return path, folder / "out"


def _entries(out: Path) -> list[str]:
    """The output folder's entries other than the run's provenance (run.json, run.log)."""
    if not out.exists():
        return []
    return sorted(p.name for p in out.iterdir() if p.name not in ("run.json", "run.log"))


def _dcm_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


# ----------------------------------------------------------------------------- NIfTI input


def test_nifti_input_writes_every_format(nifti_run):
    _, out = nifti_run
    assert _entries(out) == ["head.h5", "head.nii.gz", "head.png", "head_dicom"]
    with h5py.File(out / "head.h5") as f:
        recon = f["reconstruction"][()]
        assert recon.shape == (3, 40, 32) and f.attrs["input_format"] == "nifti"
    img = nib.load(out / "head.nii.gz")
    np.testing.assert_allclose(img.affine, NIFTI_AFFINE, atol=1e-6)
    # the output voxel (x, y, z) holds the reconstruction's display pixel (z, Y-1-y, X-1-x)
    np.testing.assert_allclose(np.asarray(img.dataobj)[5, 7, 1], recon[1, 40 - 1 - 7, 32 - 1 - 5])
    assert (out / "head.png").read_bytes()[:4] == b"\x89PNG"
    assert len(_dcm_files(out / "head_dicom")) == 3


def test_nifti_input_dicom_output_has_the_nifti_geometry(nifti_run):
    path, out = nifti_run
    (series,) = read_dicom(out / "head_dicom")
    np.testing.assert_allclose(
        dicom_display_affine(series), nifti_display_affine(read_nifti(path)), atol=1e-4
    )
    with h5py.File(out / "head.h5") as f:
        recon = f["reconstruction"][()]
    slope = float(pydicom.dcmread(series.files[0]).RescaleSlope)
    np.testing.assert_allclose(series.data, recon, atol=slope)


# ----------------------------------------------------------------------------- DICOM input


def test_dicom_input_writes_a_derived_series(dicom_run):
    series_dir, out = dicom_run
    assert _entries(out) == ["series.h5", "series.nii.gz", "series.png", "series_dicom"]
    source = pydicom.dcmread(next(series_dir.glob("*.dcm")))
    files = _dcm_files(out / "series_dicom")
    assert len(files) == 3
    uids = set()
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.ImageComments == NOT_FOR_DIAGNOSTIC_USE
        assert "zero-filled" in ds.SeriesDescription and "R=4" in ds.SeriesDescription
        uids.add(ds.SeriesInstanceUID)
    assert len(uids) == 1


def test_dicom_input_nifti_output_matches_dicom_positions(dicom_run):
    series_dir, out = dicom_run
    (series,) = read_dicom(series_dir)
    img = nib.load(out / "series.nii.gz")
    data = np.asarray(img.dataobj)
    with h5py.File(out / "series.h5") as f:
        recon = f["reconstruction"][()]
    for k, i, j in [(0, 0, 0), (2, 10, 50), (1, 63, 5)]:
        ds = pydicom.dcmread(series.files[k])
        o = np.array(ds.ImageOrientationPatient, dtype=float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        lps = np.array(ds.ImagePositionPatient, dtype=float) + j * dc * o[:3] + i * dr * o[3:]
        voxel = np.linalg.solve(img.affine, [-lps[0], -lps[1], lps[2], 1.0])[:3]
        np.testing.assert_allclose(voxel, np.round(voxel), atol=1e-3)
        assert data[tuple(np.round(voxel).astype(int))] == pytest.approx(recon[k, i, j], rel=1e-5)


def test_anonymize_replaces_patient_and_study(tmp_path):
    series_dir = _dicom_input(tmp_path / "series", n=2)
    assert _run([series_dir], tmp_path / "out", *UNDERSAMPLE, "--anonymize") == 0
    assert _entries(tmp_path / "out") == ["series.h5", "series_dicom"]  # the default formats
    source = pydicom.dcmread(next(series_dir.glob("*.dcm")))
    for f in _dcm_files(tmp_path / "out" / "series_dicom"):
        ds = pydicom.dcmread(f)
        assert ds.PatientName == "ANONYMOUS" and ds.PatientID != source.PatientID
        assert ds.StudyInstanceUID != source.StudyInstanceUID
        assert "SourceImageSequence" not in ds


def test_mixed_folder_gives_outputs_per_series(tmp_path):
    _dicom_input(tmp_path / "mix", n=2, series_number=4)
    _dicom_input(tmp_path / "mix", n=3, series_number=9)
    assert _run([tmp_path / "mix"], tmp_path / "out", *UNDERSAMPLE) == 0
    assert _entries(tmp_path / "out") == ["mix_s4.h5", "mix_s4_dicom", "mix_s9.h5", "mix_s9_dicom"]
    assert len(_dcm_files(tmp_path / "out" / "mix_s9_dicom")) == 3


# ----------------------------------------------------------------------------- ISMRMRD input


def test_ismrmrd_input_gets_header_geometry_and_a_new_series(ismrmrd_run):
    path, out = ismrmrd_run
    # HDF5 inputs always get the fastMRI file, under the input's name
    assert _entries(out) == ["raw.h5", "raw.nii.gz", "raw_dicom"]
    zooms = nib.load(out / "raw.nii.gz").header.get_zooms()
    # rows: readout 200 mm / 32, columns: phase 180 mm / 24, slices: 4 mm
    assert zooms == pytest.approx((180 / 24, 200 / 32, 4.0))
    files = _dcm_files(out / "raw_dicom")
    assert len(files) == 2
    ds = pydicom.dcmread(files[0])
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([200 / 32, 180 / 24])
    assert ds.Rows == 32 and ds.Columns == 24 and list(ds.ImageType)[0] == "DERIVED"


# ----------------------------------------------------------------------------- std map


def test_std_map_is_its_own_volume_and_series(tmp_path):
    from sgilo.pipeline.export import STD_LABEL, export_study
    from sgilo.pipeline.io.ingest import read_input
    from sgilo.pipeline.io.staging import StagedOutputs
    from sgilo.pipeline.reconstruct import StudyReconstruction

    (study,) = read_input(_nifti_input(tmp_path), acceleration=4, center_fraction=0.08)
    magnitude = np.abs(study.target)
    std = np.full_like(magnitude, 0.5)
    recon = StudyReconstruction("head", magnitude, "sgilo", 1.0, None, None, std)
    with StagedOutputs(tmp_path / "out") as stage:
        export_study(
            stage, study, recon, h5_name="head.h5", stem="head", formats=("h5", "nifti", "dicom")
        )
        stage.commit()
    assert _entries(tmp_path / "out") == [
        "head.h5",
        "head.nii.gz",
        "head_dicom",
        "head_std.nii.gz",
        "head_std_dicom",
    ]
    np.testing.assert_allclose(np.asarray(nib.load(tmp_path / "out/head_std.nii.gz").dataobj), 0.5)
    (series,) = read_dicom(tmp_path / "out" / "head_std_dicom")
    # the label comes first: a long method description is cut at the end, never the label
    assert pydicom.dcmread(series.files[0]).SeriesDescription.startswith(STD_LABEL)
    descrip = nib.load(tmp_path / "out/head_std.nii.gz").header["descrip"].item().decode()
    assert descrip.startswith(STD_LABEL)
    with h5py.File(tmp_path / "out/head.h5") as f:
        assert f["reconstruction_std"].shape == magnitude.shape
        assert "not an error map" in f["reconstruction_std"].attrs["description"]


# ----------------------------------------------------------------------------- dciodvfy


def test_dciodvfy_accepts_every_dicom_output(nifti_run, dicom_run, ismrmrd_run):
    if shutil.which("dciodvfy") is None:
        if os.environ.get("SGILO_REQUIRE_DCIODVFY") == "1":
            pytest.fail("dciodvfy is required (SGILO_REQUIRE_DCIODVFY=1) but not installed")
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    files = [f for _, out in (nifti_run, dicom_run, ismrmrd_run) for f in out.rglob("*.dcm")]
    assert len(files) == 3 + 3 + 2
    for f in files:
        run = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=60)
        errors = [
            line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")
        ]
        assert not errors, f"{f.name}: {errors}"


# ----------------------------------------------------------------------------- bad inputs


def _bad_ismrmrd(folder: Path) -> Path:
    return write_ismrmrd(folder / "nohdr.h5", np.ones((1, 8, 8), np.complex64), header=False)


def _nifti_4d(folder: Path) -> Path:
    path = folder / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2, 3), np.float32), np.eye(4)), path)
    return path


def _unknown(folder: Path) -> Path:
    path = folder / "notes.bin"
    path.write_bytes(b"\x00\x01 not an image")
    return path


@pytest.mark.parametrize(
    ("build", "extra", "words"),
    [
        (_bad_ismrmrd, UNDERSAMPLE, "header"),
        (_nifti_input, [], "--acceleration"),
        (_nifti_4d, UNDERSAMPLE, "3-D"),
        (_unknown, UNDERSAMPLE, "unknown file type"),
    ],
    ids=["ismrmrd-no-header", "image-no-acceleration", "nifti-4d", "unknown-type"],
)
def test_bad_input_one_line_no_output(tmp_path, capsys, build, extra, words):
    path = build(tmp_path)
    out = tmp_path / "out"
    assert _run([path], out, *ALL_FORMATS, *extra) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and path.name in errors[0] and words in errors[0], errors
    assert _entries(out) == []


def test_failure_during_export_leaves_nothing(tmp_path, capsys, monkeypatch):
    import sgilo.pipeline.export

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(sgilo.pipeline.export, "write_dicom_series", broken)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier file")
    assert _run([_nifti_input(tmp_path)], out, *UNDERSAMPLE, *ALL_FORMATS) == 1
    assert "disk full" in capsys.readouterr().err
    assert _entries(out) == ["keep.txt"]  # no h5/nii staged before the failure, no staging folder
