"""The bad-input corpus of issue 5 ("Reliability"): ONE `sgilo batch` over a folder of bad inputs
and a few good ones, all built here with h5py, pydicom, nibabel and ismrmrd (a few slices of
16x16 or 32x32).

Every bad input must give exactly one line ``sgilo: error: <name>: <reason>`` on stderr with a
reason specific to what is wrong (each case in :data:`BAD` checks its own), no traceback, and
leave nothing in the output folder: OUT holds the good inputs' outputs, ``run.json``,
``run.log`` and ``.sgilo`` and nothing else (no staging folder, no temporary file, no half-written
DICOM series). Absurd declared sizes are refused before anything is allocated.

The good inputs: fastMRI k-space; a DICOM series whose PatientName and SeriesDescription hold
path separators and control characters; a DICOM file whose own name holds a control character
and shell characters (outputs must get safe names and stay inside OUT); and a folder mixing two
series of different sizes, which docs/FORMATS.md reads as one study per series
(``<folder>_s<SeriesNumber>``).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from flows.cli import main
from pipeline.batch import expand_inputs

EVIL = "../../evil\x01name"
EVIL_FILE = "evil\x01 name$(x).dcm"


# ----------------------------------------------------------------------------- builders


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A disc plus a little noise, float32 ``(slices, H, W)``."""
    rng = np.random.default_rng(seed)
    h, w = shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2).astype(np.float32)
    return disc * 100 + 10 * rng.random(shape, np.float32)


def _kspace(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Fully sampled k-space of :func:`_image`: complex64 ``shape``."""
    ax = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(_image(shape, seed), axes=ax)), axes=ax)
    return k.astype(np.complex64)


def _h5(path: Path, **datasets: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)


def _mr_slice(
    *,
    rows: int = 16,
    cols: int = 16,
    z: float = 0.0,
    series_uid: str = "",
    series_number: int = 1,
    instance: int = 1,
    modality: str = "MR",
    pixels: np.ndarray | None = None,
    patient: str = "Test^Patient",
    description: str = "corpus",
) -> Dataset:
    """One DICOM image slice, built from scratch; ``pixels=None`` gives a ``rows x cols``
    disc, an empty array no PixelData at all."""
    ds = Dataset()
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality = modality
    ds.PatientName, ds.PatientID = patient, "corpus-1"
    ds.SeriesDescription = description
    ds.SeriesNumber, ds.InstanceNumber = series_number, instance
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    if pixels is None:
        pixels = _image((rows, cols), seed=instance)
    if pixels.size:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _series(folder: Path, zs: list[float], prefix: str = "im", **kwargs) -> None:
    """DICOM files ``<prefix><i>.dcm`` of one series in ``folder``, one slice per position in
    ``zs`` (kwargs: :func:`_mr_slice`)."""
    uid = kwargs.pop("series_uid", "") or generate_uid()
    for i, z in enumerate(zs):
        ds = _mr_slice(z=z, series_uid=uid, instance=i + 1, **kwargs)
        _save(ds, folder / f"{prefix}{i}.dcm")


def series_rows(folder: Path) -> None:
    """One series (one SeriesInstanceUID): two 16x16 slices and a 32x32 one."""
    _series(folder, [0.0, 2.0], series_uid="1.2.826.0.1.3680043.8.498.3")
    ds = _mr_slice(rows=32, cols=32, z=4.0, series_uid="1.2.826.0.1.3680043.8.498.3", instance=3)
    _save(ds, folder / "im2.dcm")


def series_with_ct(folder: Path) -> None:
    """Two MR slices and a CT image in one folder."""
    _series(folder, [0.0, 2.0])
    _save(_mr_slice(modality="CT"), folder / "im9.dcm")


def _nifti(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), path)


def truncated_h5(path: Path) -> None:
    _h5(path, kspace=_kspace((4, 32, 32)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_h5(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(4096))


def no_kspace_h5(path: Path) -> None:
    _h5(path, image=_image((2, 16, 16)))


def huge_kspace_h5(path: Path) -> None:
    """Each axis within the reader's limits, 2**43 samples (64 TiB) in all; never written,
    so the file is a few KiB."""
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", shape=(2048, 128, 4096, 4096), dtype=np.complex64)


def mask_length_h5(path: Path) -> None:
    _h5(path, kspace=_kspace((2, 16, 16)), mask=np.ones(12, dtype=bool))


def non_finite_h5(value: float) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        k = _kspace((2, 16, 16))
        k[1, 3, 5] = value
        _h5(path, kspace=k)

    return build


def dicom_file(**kwargs) -> Callable[[Path], None]:
    return lambda path: _save(_mr_slice(**kwargs), path)


def ismrmrd_without_header(path: Path) -> None:
    from pipeline.io.ismrmrd import write_ismrmrd

    write_ismrmrd(path, _kspace((2, 16, 16)), header=False)


def ismrmrd_line_outside(path: Path) -> None:
    """A valid 16x16 file plus one line at phase-encode step 40."""
    import ismrmrd

    from pipeline.io.ismrmrd import write_ismrmrd

    write_ismrmrd(path, _kspace((2, 16, 16)))
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        acq = ismrmrd.Acquisition.from_array(np.ones((1, 16), np.complex64))
        acq.idx.kspace_encode_step_1 = 40
        acq.center_sample = 8
        dset.append_acquisition(acq)
    finally:
        dset.close()


def ismrmrd_huge_matrix(path: Path) -> None:
    """A header declaring a 4096 x 4096 matrix and 2048 slices (each within the per-axis
    limits; 2**35 samples in all) over 16x16 lines."""
    import ismrmrd
    import ismrmrd.xsd

    from pipeline.io.ismrmrd import write_ismrmrd

    write_ismrmrd(path, _kspace((2, 16, 16)))
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        header = ismrmrd.xsd.CreateFromDocument(dset.read_xml_header())
        enc = header.encoding[0]
        for space in (enc.encodedSpace, enc.reconSpace):
            space.matrixSize.x = space.matrixSize.y = 4096
        enc.encodingLimits.slice.maximum = 2047
        enc.encodingLimits.kspace_encoding_step_1.center = 8
        dset.write_xml_header(ismrmrd.xsd.ToXML(header).encode())
    finally:
        dset.close()


def nifti_4d(path: Path) -> None:
    _nifti(path, _image((16, 16, 3, 2)))


def nifti_nan(path: Path) -> None:
    data = _image((16, 16, 3))
    data[4, 4, 1] = np.nan
    _nifti(path, data)


def nifti_truncated(path: Path) -> None:
    _nifti(path, _image((16, 16, 3)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD: list[tuple[str, Callable[[Path], None], str]] = [
    # HDF5 / fastMRI
    ("truncated.h5", truncated_h5, "corrupt or truncated HDF5 file"),
    ("corrupt.h5", corrupt_h5, "not an HDF5 file"),
    ("empty.h5", lambda p: p.write_bytes(b""), "file is empty (0 bytes)"),
    ("no_kspace.h5", no_kspace_h5, "no 'kspace' dataset (datasets found: image)"),
    ("rank2.h5", lambda p: _h5(p, kspace=_kspace((16, 16))), "kspace has rank 2"),
    ("rank5.h5", lambda p: _h5(p, kspace=_kspace((1, 2, 2, 16, 16))), "kspace has rank 5"),
    (
        "real.h5",
        lambda p: _h5(p, kspace=_image((2, 16, 16))),
        "kspace is not complex (dtype float32)",
    ),
    (
        "integer.h5",
        lambda p: _h5(p, kspace=_image((2, 16, 16)).astype(np.int16)),
        "kspace is not complex (dtype int16)",
    ),
    ("nan.h5", non_finite_h5(np.nan), "kspace contains non-finite values"),
    ("inf.h5", non_finite_h5(np.inf), "kspace contains non-finite values"),
    ("mask_length.h5", mask_length_h5, "mask has shape (12,), expected (16,)"),
    ("huge_kspace.h5", huge_kspace_h5, "is too large"),
    # DICOM files
    ("rows60000.dcm", dicom_file(rows=60000, cols=60000, pixels=_image((16, 16))), "60000 x"),
    ("no_pixels.dcm", dicom_file(pixels=np.zeros(0)), "no pixel data"),
    ("ct.dcm", dicom_file(modality="CT"), "modality is 'CT', expected 'MR'"),
    ("short_pixels.dcm", dicom_file(rows=32, cols=32, pixels=_image((16, 16))), "cannot decode"),
    ("garbage.dcm", lambda p: p.write_bytes(b"x" * 300), "DICOM file"),
    # DICOM series folders
    ("series_rows", series_rows, "rows/columns differ within the series"),
    ("series_spacing", lambda p: _series(p, [0.0, 2.0, 4.0, 9.0]), "inconsistent slice spacing"),
    ("series_ct", series_with_ct, "im9.dcm: modality is 'CT'"),
    # ISMRMRD
    ("no_header.mrd.h5", ismrmrd_without_header, "ISMRMRD file without an XML header"),
    ("line_outside.mrd.h5", ismrmrd_line_outside, "does not fit the encoded matrix 16 x 16"),
    ("huge_matrix.mrd.h5", ismrmrd_huge_matrix, "too large"),
    # NIfTI
    ("volumes.nii.gz", nifti_4d, "expected a 3-D volume"),
    ("nan.nii.gz", nifti_nan, "image contains non-finite values"),
    ("truncated.nii.gz", nifti_truncated, "corrupt or truncated NIfTI file"),
    ("text.nii", lambda p: p.write_text("not NIfTI\n"), "not a readable NIfTI file"),
    # not an input type (folder expansion skips .txt: passed explicitly)
    ("notes.txt", lambda p: p.write_text("hello\n"), "unknown file type"),
]


def _good(folder: Path) -> dict[str, set[str]]:
    """Write the good inputs; return each one's expected top-level output names."""
    _h5(folder / "good_kspace.h5", kspace=_kspace((4, 32, 32)))
    _series(folder / "good_series", [0.0, 2.0, 4.0], patient=EVIL, description=EVIL)
    _save(_mr_slice(rows=32, cols=32, patient=EVIL, description=EVIL), folder / EVIL_FILE)
    mixed = folder / "mixed_series"
    _series(mixed, [0.0, 2.0], prefix="a", series_number=1)
    _series(mixed, [0.0, 3.0], prefix="b", rows=32, cols=32, series_number=2)

    def outputs(stem: str, h5: str | None = None) -> set[str]:
        return {h5 or f"{stem}.h5", f"{stem}.nii.gz", f"{stem}_dicom"}

    return {
        "good_kspace.h5": outputs("good_kspace", "good_kspace.h5"),
        "good_series": outputs("good_series"),
        EVIL_FILE: outputs("evil_name_x"),
        "mixed_series": outputs("mixed_series_s1") | outputs("mixed_series_s2"),
    }


# ----------------------------------------------------------------------------- the one batch


@pytest.fixture(scope="module")
def run(prefect_api, tmp_path_factory) -> dict:
    """Build the corpus, run `sgilo batch` once over it; the exit code, stderr, stdout, the
    folders and the expected good outputs."""
    root = tmp_path_factory.mktemp("corpus")
    folder = root / "in" / "deep"  # EVIL climbs two levels: from here or OUT, into root
    folder.mkdir(parents=True)
    for name, build, _ in BAD:
        build(folder / name)
    good = _good(folder)
    expanded = expand_inputs([folder])
    explicit = [p for p in sorted(folder.iterdir()) if p not in expanded]
    assert [p.name for p in explicit] == ["notes.txt"]  # folders skip unknown suffixes
    before = {p for p in root.rglob("*")}
    out = folder.parent / "out"
    argv = ["batch", str(folder), *map(str, explicit), "--method", "zero-filled"]
    argv += ["--acceleration", "4", "--center-fraction", "0.08", "--format", "h5,nifti,dicom"]
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        code = main([*argv, "--out", str(out)])
    created = {p for p in root.rglob("*")} - before
    return {
        "code": code,
        "stderr": err.getvalue(),
        "stdout": std.getvalue(),
        "out": out,
        "root": root,
        "good": good,
        "created": created,
    }


def test_exit_code_and_summary(run):
    assert run["code"] == 1
    summary = run["stdout"].strip().splitlines()[-1]
    n = len(BAD) + len(run["good"])
    assert summary.startswith(f"sgilo batch: {len(run['good'])} reconstructed, 0 skipped")
    assert f"{len(BAD)} failed, of {n} input(s)" in summary


def test_stderr_is_one_line_per_bad_input(run):
    """sgilo's own lines (Prefect's console log shares stderr); no traceback anywhere."""
    assert "Traceback" not in run["stderr"] and 'File "' not in run["stderr"]
    errors = [line for line in run["stderr"].splitlines() if line.startswith("sgilo: error: ")]
    assert len(errors) == len(BAD), errors


@pytest.mark.parametrize(("name", "build", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gives_its_own_reason(run, name, build, reason):
    prefix = f"sgilo: error: {name}: "
    mine = [line for line in run["stderr"].splitlines() if line.startswith(prefix)]
    assert len(mine) == 1, run["stderr"]
    assert reason in mine[0], mine[0]


def test_out_holds_only_the_good_outputs(run):
    out = run["out"]
    expected = set().union(*run["good"].values()) | {"run.json", "run.log", ".sgilo"}
    assert {p.name for p in out.iterdir()} == expected
    assert {p.name for p in (out / ".sgilo").iterdir()} <= {"done", "failed", "locks"}
    assert len(list((out / ".sgilo" / "done").iterdir())) == len(run["good"])
    assert len(list((out / ".sgilo" / "failed").iterdir())) == len(BAD)
    hidden = [p for p in out.rglob(".*") if not p.relative_to(out).parts[0] == ".sgilo"]
    assert not hidden, hidden  # no staging folders, temporary or moved-aside files


def test_good_outputs_are_complete(run):
    out = run["out"]
    studies = {  # output stem -> (slices, H, W)
        "good_kspace": (4, 32, 32),
        "good_series": (3, 16, 16),
        "evil_name_x": (1, 32, 32),
        "mixed_series_s1": (2, 16, 16),
        "mixed_series_s2": (2, 32, 32),
    }
    for stem, shape in studies.items():
        with h5py.File(out / f"{stem}.h5", "r") as f:
            recon = f["reconstruction"][()]
        assert recon.shape == shape and recon.dtype == np.float32 and np.isfinite(recon).all()
        assert recon.max() > 0
        volume = nib.load(out / f"{stem}.nii.gz")
        assert volume.shape == shape[::-1]
        files = sorted((out / f"{stem}_dicom").iterdir())
        assert len(files) == shape[0]
        for k, path in enumerate(files):
            ds = pydicom.dcmread(path)
            assert ds.pixel_array.shape == shape[1:] and ds.InstanceNumber == k + 1


def test_hostile_names_stay_safe_and_inside_out(run):
    out, root = run["out"], run["root"]
    safe = re.compile(r"[A-Za-z0-9._-]+")
    for path in out.rglob("*"):
        assert safe.fullmatch(path.name), repr(path.name)
    # "../../evil" from OUT (root/in/out) or from the inputs (root/in/deep) lands in root
    outside = [p for p in run["created"] if out not in p.parents and p != out]
    assert not outside, outside
    strays = [p for p in root.rglob("*evil*") if out not in p.parents]
    assert [p.name for p in strays] == [EVIL_FILE]  # the input itself
    # the source's patient name is kept (not anonymized), but never as a path
    ds = pydicom.dcmread(next((out / "good_series_dicom").iterdir()))
    assert "evil" in str(ds.PatientName)
