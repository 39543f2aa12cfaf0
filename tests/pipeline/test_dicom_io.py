"""DICOM series reading and derived-series writing, on copies of pydicom's bundled MR_small.dcm."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sgilo.pipeline.io.dicom import DicomSeries, read_dicom
from sgilo.pipeline.io.dicom_write import NOT_FOR_DIAGNOSTIC_USE, safe_file_stem, write_dicom_series
from sgilo.pipeline.io.types import InputError

MR_SMALL = Path(str(get_testdata_file("MR_small.dcm", download=False)))
GAP = 2.0


def _mr() -> pydicom.Dataset:
    return pydicom.dcmread(MR_SMALL)


def _make_series(
    folder: Path,
    n: int = 4,
    gaps: list[float] | None = None,
    series_uid: str | None = None,
    prefix: str = "img",
) -> list[float]:
    """Write an ``n``-slice series into ``folder`` in shuffled file order; return the z
    positions in slice order (slice k has InstanceNumber k + 1 and pixels + 10 k)."""
    folder.mkdir(parents=True, exist_ok=True)
    gaps = gaps if gaps is not None else [GAP] * (n - 1)
    z = [0.0, *np.cumsum(gaps).tolist()]
    series_uid = series_uid or pydicom.uid.generate_uid()
    order = np.random.default_rng(3).permutation(n)  # file names do not follow slice order
    for k in range(n):
        ds = _mr()
        x, y, z0 = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z0 + z[k]]
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.PixelData = (ds.pixel_array + 10 * k).astype(np.int16).tobytes()
        ds.save_as(folder / f"{prefix}{int(order[k])}.dcm")
    return [z0 + v for v in z]


def _raises_one_line(path: Path, name: str) -> str:
    with pytest.raises(InputError) as info:
        read_dicom(path)
    message = str(info.value)
    assert "\n" not in message and name in message, message
    return message


def test_single_file_matches_bundled_pixels():
    (series,) = read_dicom(MR_SMALL)
    assert isinstance(series, DicomSeries) and series.name == "MR_small"
    assert series.data.dtype == np.float32 and series.data.shape == (1, 64, 64)
    expected = _mr().pixel_array.astype(np.float32)
    np.testing.assert_array_equal(series.data[0], expected)
    ds = _mr()
    assert series.study_uid == ds.StudyInstanceUID
    assert series.series_uid == ds.SeriesInstanceUID
    assert series.frame_of_reference_uid == ds.FrameOfReferenceUID
    g = series.geometry[0]
    assert g.pixel_spacing == (0.3125, 0.3125) and g.slice_thickness == pytest.approx(0.8)
    assert "PixelData" not in series.headers[0] and series.headers[0].PatientID == ds.PatientID


def test_series_sorted_by_position_not_file_order(tmp_path):
    z = _make_series(tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("not dicom")
    shutil.copy(MR_SMALL, tmp_path / "s" / ".hidden.dcm")  # hidden files are skipped
    (series,) = read_dicom(tmp_path / "s")
    assert series.num_slices == 4 and series.name == "s"
    assert [g.position[2] for g in series.geometry] == pytest.approx(z)
    base = _mr().pixel_array.astype(np.float32)
    for k in range(4):
        np.testing.assert_array_equal(series.data[k], base + 10 * k)
    assert series.slice_spacing == pytest.approx(GAP)


def test_instance_number_fallback_without_positions(tmp_path):
    _make_series(tmp_path / "s")
    for f in (tmp_path / "s").glob("*.dcm"):
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    (series,) = read_dicom(tmp_path / "s")
    base = _mr().pixel_array.astype(np.float32)
    np.testing.assert_array_equal(series.data[:, 0, 0], base[0, 0] + 10 * np.arange(4))


def test_rescale_applied(tmp_path):
    ds = _mr()
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, -100
    ds.save_as(tmp_path / "r.dcm")
    (series,) = read_dicom(tmp_path / "r.dcm")
    np.testing.assert_allclose(series.data[0], ds.pixel_array * 0.5 - 100)


def test_mixed_folder_gives_two_series(tmp_path):
    _make_series(tmp_path / "mix", n=4, prefix="a")
    _make_series(tmp_path / "mix", n=3, prefix="b")
    series = read_dicom(tmp_path / "mix")
    assert sorted(s.num_slices for s in series) == [3, 4]
    assert len({s.series_uid for s in series}) == 2 and len({s.name for s in series}) == 2


def test_no_pixel_data(tmp_path):
    ds = _mr()
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    assert "no pixel data" in _raises_one_line(tmp_path / "nopix.dcm", "nopix.dcm")


def test_ct_modality_in_folder(tmp_path):
    _make_series(tmp_path / "s")
    ds = _mr()
    ds.Modality = "CT"
    ds.save_as(tmp_path / "s" / "ct.dcm")
    message = _raises_one_line(tmp_path / "s", "ct.dcm")
    assert message.startswith("s: ct.dcm: ") and "CT" in message  # names the input folder


def test_inconsistent_spacing(tmp_path):
    _make_series(tmp_path / "s", gaps=[2.0, 2.0, 3.0])
    message = _raises_one_line(tmp_path / "s", ".dcm")
    assert "inconsistent slice spacing" in message and "series" in message


def test_inconsistent_rows_columns(tmp_path):
    _make_series(tmp_path / "s", n=2, series_uid="1.2.3.4")
    ds = _mr()
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.ImagePositionPatient = [0, 0, 50]
    ds.Rows = ds.Columns = 32
    ds.PixelData = ds.PixelData[: 32 * 32 * 2]
    ds.save_as(tmp_path / "s" / "small.dcm")
    _raises_one_line(tmp_path / "s", "small.dcm")


def test_absurd_rows_checked_before_decoding(tmp_path):
    ds = _mr()
    ds.add_new(0x00280010, "UL", 100000)  # Rows, explicit VR UL so 100000 fits
    ds.save_as(tmp_path / "huge.dcm")
    assert "100000" in _raises_one_line(tmp_path / "huge.dcm", "huge.dcm")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not-dicom"])
def test_corrupt_bytes(tmp_path, damage):
    raw = MR_SMALL.read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    body = {
        "garbage": raw[:132] + noise,
        "truncated": raw[: len(raw) // 2],
        "not-dicom": noise,
    }[damage]
    (tmp_path / "bad.dcm").write_bytes(body)
    _raises_one_line(tmp_path / "bad.dcm", "bad.dcm")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "readme.txt").write_text("hello")
    _raises_one_line(tmp_path / "e", "e")


def test_write_read_back(tmp_path):
    _make_series(tmp_path / "s")
    (source,) = read_dicom(tmp_path / "s")
    recon = source.data * 0.37 + 5.25  # float values that need the rescale
    paths = write_dicom_series(tmp_path / "out", recon, source, description="SGILO R=4 seed=0")
    assert [p.parent for p in paths] == [tmp_path / "out"] * 4
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left
    written = [pydicom.dcmread(p) for p in paths]
    first = written[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.MRImageStorage
    assert first.StudyInstanceUID == source.study_uid
    assert first.PatientID == source.headers[0].PatientID
    assert first.SeriesInstanceUID != source.series_uid
    assert len({ds.SeriesInstanceUID for ds in written}) == 1
    sops = {ds.SOPInstanceUID for ds in written}
    assert len(sops) == 4 and not sops & {h.SOPInstanceUID for h in source.headers}
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
    assert first.SeriesDescription == "SGILO R=4 seed=0"
    assert NOT_FOR_DIAGNOSTIC_USE in first.ImageComments and first.BurnedInAnnotation == "NO"
    assert first.BitsAllocated == 16 and first.PixelRepresentation == 0
    for k, ds in enumerate(written):
        assert ds.InstanceNumber == k + 1
        g = source.geometry[k]
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(g.position)
        assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx(g.orientation)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx(g.pixel_spacing)
        assert float(ds.SliceThickness) == pytest.approx(g.slice_thickness)
    (back,) = read_dicom(tmp_path / "out")
    step = float(first.RescaleSlope)
    assert step <= (recon.max() - recon.min()) / 65535 * 1.001
    assert np.abs(back.data - recon).max() <= step / 2 + 1e-4 * step
    assert back.series_uid == first.SeriesInstanceUID


def test_anonymize(tmp_path):
    (source,) = read_dicom(MR_SMALL)
    (path,) = write_dicom_series(
        tmp_path, source.data, source, description="zero-filled", anonymize=True
    )
    ds = pydicom.dcmread(path)
    src = source.headers[0]
    assert str(ds.PatientName) != str(src.PatientName)
    assert ds.PatientID != src.PatientID
    assert not ds.get("PatientBirthDate")
    assert ds.StudyInstanceUID != source.study_uid
    assert "SourceImageSequence" not in ds


def test_unsafe_description_never_reaches_file_names(tmp_path):
    (source,) = read_dicom(MR_SMALL)
    out = tmp_path / "out"
    description = "../../etc/passwd\x00\\evil/\n" + "x" * 100
    (path,) = write_dicom_series(out, source.data, source, description=description)
    assert path.parent == out and list(out.iterdir()) == [path]
    for bad in ("/", "\\", "\x00", "\n", ".."):
        assert bad not in path.name
    assert not path.name.startswith(".")
    ds = pydicom.dcmread(path)
    assert len(ds.SeriesDescription) <= 64
    assert "\x00" not in ds.SeriesDescription and "\\" not in ds.SeriesDescription
    assert safe_file_stem("\x00/..") == "series"


def test_write_rejects_wrong_shape(tmp_path):
    (source,) = read_dicom(MR_SMALL)
    with pytest.raises(ValueError):
        write_dicom_series(tmp_path, np.zeros((2, 64, 64)), source, description="x")
