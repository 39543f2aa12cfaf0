"""The hostile-input corpus (docs/RELIABILITY.md): over a hundred bad inputs and bad options,
each built here from scratch (h5py, pydicom, nibabel, ismrmrd, os.mkfifo, symlinks, sparse
files; a few slices of 16x16 or 32x32, nothing committed), and two drivers:

- :func:`test_hostile_case`: ONE ``sgilo reconstruct BAD good.h5`` call per case of
  :data:`CASES`. The contract: exactly one line ``sgilo: error: <name>: <reason>`` on stderr
  naming the bad input (control characters escaped), with a reason specific to the case; no
  traceback; no hang (each call runs under a 60 s alarm); exit code 1; the good input given
  after it is still reconstructed; OUT holds ``good.h5``, ``run.json`` and ``run.log`` and
  nothing else (nothing partial, no staging folder); run.json records the bad input as failed
  and never hashed. Option cases (:data:`USAGE`) must exit 2 with one line and write nothing.
- the batch tests: ONE ``sgilo batch`` over a folder of the file cases of :data:`BAD` and a few
  good inputs, with the same contract per input (and safe output names for hostile DICOM
  names and header values).

Build the corpus into a folder to try it by hand: ``python tests/flows/test_hostile_corpus.py
DIR`` (one sub-folder per case, with the options the case adds in ``options.txt``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from sgilo.flows.cli import main
from sgilo.pipeline.batch import expand_inputs

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
    from sgilo.pipeline.io.ismrmrd import write_ismrmrd

    write_ismrmrd(path, _kspace((2, 16, 16)), header=False)


def ismrmrd_line_outside(path: Path) -> None:
    """A valid 16x16 file plus one line at phase-encode step 40."""
    import ismrmrd

    from sgilo.pipeline.io.ismrmrd import write_ismrmrd

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

    from sgilo.pipeline.io.ismrmrd import write_ismrmrd

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
    ("nan_volume.nii.gz", nifti_nan, "image contains non-finite values"),
    ("truncated_volume.nii.gz", nifti_truncated, "corrupt or truncated NIfTI file"),
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
    # a failed marker keys on the content: an input refused before it is read (empty.h5) has
    # none, so a watched folder retries it once it has content
    assert len(list((out / ".sgilo" / "failed").iterdir())) == len(BAD) - 1
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


# ----------------------------------------------------------------------------- the per-call corpus
#
# A case builds its bad input(s) in a folder and returns them; each goes before ``good.h5`` in
# one ``sgilo reconstruct`` call, with the case's extra options.


@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(folder)`` makes it and returns the inputs to pass (the last
    one is the one that must fail; earlier ones must succeed); ``reason`` must appear in its
    error line; ``options`` are added to the call."""

    id: str
    build: Callable[[Path], list[Path]]
    reason: str
    options: tuple[str, ...] = ()
    unless_root: bool = False


def _one(name: str, make: Callable[[Path], object]) -> Callable[[Path], list[Path]]:
    """A builder for a single input ``folder/name`` made by ``make(path)``."""

    def build(folder: Path) -> list[Path]:
        path = folder / name
        make(path)
        return [path]

    return build


def _h5_declared(**shapes: tuple[tuple[int, ...], str]) -> Callable[[Path], None]:
    """An HDF5 file with a real 2x16x16 ``kspace`` and datasets declared with (shape, dtype)
    but never written: a few KiB on disk, whatever they declare."""

    def make(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.create_dataset("kspace", data=_kspace((2, 16, 16)))
            for name, (shape, dtype) in shapes.items():
                f.create_dataset(name, shape=shape, dtype=dtype)

    return make


def _h5_with(**datasets: object) -> Callable[[Path], None]:
    """An HDF5 file with a real 2x16x16 ``kspace`` plus ``datasets`` (arrays, or ``"group"``)."""

    def make(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.create_dataset("kspace", data=_kspace((2, 16, 16)))
            for name, data in datasets.items():
                if isinstance(data, str) and data == "group":
                    f.create_group(name)
                else:
                    f.create_dataset(name, data=data)

    return make


def _h5_attrs(mask: bool = False, **attrs: object) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.create_dataset("kspace", data=_kspace((2, 16, 16)))
            if mask:
                m = np.zeros(16, bool)
                m[5:11] = m[::3] = True
                f.create_dataset("mask", data=m)
            f.attrs.update(attrs)

    return make


def _multicoil_maps(maps: np.ndarray) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        _h5(path, kspace=_kspace((2, 4, 16, 16)), sens_maps=maps)

    return make


def _h5_link(link: object) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f["kspace"] = link

    return make


def _ismrmrd(edit: Callable[[h5py.Group], None], kspace: np.ndarray | None = None):
    """A valid 2x16x16 ISMRMRD file (written by the project's writer), then ``edit`` applied to
    its ``dataset`` group with h5py."""

    def make(path: Path) -> None:
        from sgilo.pipeline.io.ismrmrd import write_ismrmrd

        write_ismrmrd(path, _kspace((2, 16, 16)) if kspace is None else kspace)
        with h5py.File(path, "r+") as f:
            edit(f["dataset"])

    return make


def _replace(name: str, **create: object) -> Callable[[h5py.Group], None]:
    def edit(group: h5py.Group) -> None:
        del group[name]
        group.create_dataset(name, **create)

    return edit


def _edit_header(change: Callable[[object], None]) -> Callable[[h5py.Group], None]:
    """Parse the XML header with ismrmrd.xsd, ``change`` it, write it back."""

    def edit(group: h5py.Group) -> None:
        import ismrmrd.xsd

        raw = group["xml"][()]
        raw = raw.reshape(-1)[0] if isinstance(raw, np.ndarray) else raw
        header = ismrmrd.xsd.CreateFromDocument(raw.decode() if isinstance(raw, bytes) else raw)
        change(header)
        del group["xml"]
        group.create_dataset("xml", data=ismrmrd.xsd.ToXML(header).encode())

    return edit


def _set_z(header) -> None:
    header.encoding[0].encodedSpace.matrixSize.z = 2


def _set_channels(header) -> None:
    header.acquisitionSystemInformation.receiverChannels = 3


def _set_radial(header) -> None:
    import ismrmrd.xsd

    header.encoding[0].trajectory = ismrmrd.xsd.trajectoryType.RADIAL


def _second_repetition(group: h5py.Group) -> None:
    rows = group["data"][()]
    extra = rows[:1].copy()
    extra["head"]["idx"]["repetition"] = 1
    del group["data"]
    group.create_dataset("data", data=np.concatenate([rows, extra]))


def _acquisition_dtype(path: Path) -> np.dtype:
    from sgilo.pipeline.io.ismrmrd import write_ismrmrd

    write_ismrmrd(path, _kspace((1, 16, 16)))
    with h5py.File(path, "r") as f:
        return f["dataset/data"].dtype


def _huge_table(group: h5py.Group) -> None:
    dtype = group["data"].dtype
    del group["data"]
    group.create_dataset("data", shape=(10**8,), dtype=dtype)


def _dicom(make: Callable[[Dataset], None] | None = None, **kwargs) -> Callable[[Path], None]:
    """One MR slice (kwargs: :func:`_mr_slice`), changed by ``make`` before it is saved."""

    def build(path: Path) -> None:
        ds = _mr_slice(**kwargs)
        if make is not None:
            make(ds)
        _save(ds, path)

    return build


def _set(**values: object) -> Callable[[Dataset], None]:
    def make(ds: Dataset) -> None:
        for keyword, value in values.items():
            setattr(ds, keyword, value)

    return make


def _sparse_tail(path: Path) -> None:
    """A valid 16x16 DICOM file extended to 1 GiB by a sparse hole (nothing on disk)."""
    _save(_mr_slice(), path)
    with open(path, "r+b") as fh:
        fh.truncate(2**30)


def _sparse_after_meta(path: Path) -> None:
    """The 128-byte preamble, ``DICM`` and then 1 GiB of zeros (sparse): looks like DICOM."""
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        fh.truncate(2**30)


def _truncated_dicom(path: Path) -> None:
    _save(_mr_slice(rows=32, cols=32), path)
    data = path.read_bytes()
    path.write_bytes(data[:-700])


def _series_then(edit: Callable[[Path], None]) -> Callable[[Path], None]:
    """A three-slice series folder, then ``edit(folder)``."""

    def build(folder: Path) -> None:
        _series(folder, [0.0, 2.0, 4.0])
        edit(folder)

    return build


def _duplicate_positions(folder: Path) -> None:
    _series(folder, [0.0, 2.0, 2.0])


def _orientation_differs(folder: Path) -> None:
    uid = generate_uid()
    _series(folder, [0.0, 2.0], series_uid=uid)
    ds = _mr_slice(z=4.0, series_uid=uid, instance=3)
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    _save(ds, folder / "im9.dcm")


def _folder_with(**files: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        folder.mkdir()
        for name, make in files.items():
            make(folder / name)

    return build


def _nifti_array(data: np.ndarray, affine: np.ndarray | None = None) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        image = nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine)
        nib.save(image, path)

    return build


def _nifti_declaring(shape: tuple[int, ...]) -> Callable[[Path], None]:
    """A NIfTI header declaring ``shape`` followed by 4 KiB of data."""

    def build(path: Path) -> None:
        header = nib.Nifti1Header()
        header.set_data_shape(shape)
        header.set_data_dtype(np.float32)
        header.set_sform(np.eye(4), code=1)
        path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 4096)

    return build


def _singular_nifti(path: Path) -> None:
    """A volume whose sform (code 1, so it is the affine read) maps every voxel to one point."""
    image = nib.Nifti1Image(_image((16, 16, 3)), None)
    image.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    nib.save(image, path)


def _rgb_nifti(path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)


def _plain_named_gz(path: Path) -> None:
    plain = path.with_name("plain.nii")
    _nifti(plain, _image((16, 16, 3)))
    plain.rename(path)


def _link(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"not an input\n" * 10)


def _unreadable(path: Path) -> None:
    _h5(path, kspace=_kspace((2, 16, 16)))
    path.chmod(0)


def _self_linked_folder(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here\n")
    os.symlink(".", folder / "again")


def _pair(first: str, second: str, make: Callable[[Path], None] = None):
    """Two inputs whose outputs collide: the first is reconstructed, the second refused."""

    def build(folder: Path) -> list[Path]:
        paths = [folder / first, folder / second]
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.name.lower().endswith(".nii.gz"):
                _nifti(p, _image((16, 16, 3)))
            elif not p.exists():
                _h5(p, kspace=_kspace((2, 16, 16)))
        return paths

    return build


DECLARED_HUGE = ((10**10,), "S1")

CASES: list[Case] = [
    # the batch corpus's file cases, each in its own call
    *(Case(f"batch-{name}", _one(name, build), reason) for name, build, reason in BAD),
    # fastMRI HDF5: shapes, types and declared sizes
    Case(
        "zero-dim",
        _one("zero_dim.h5", lambda p: _h5(p, kspace=np.zeros((0, 16, 16), np.complex64))),
        "zero-size dimension",
    ),
    Case(
        "all-zero",
        _one("all_zero.h5", lambda p: _h5(p, kspace=np.zeros((2, 16, 16), np.complex64))),
        "k-space is all zero",
    ),
    Case(
        "kspace-soft-link",
        _one("kspace_soft.h5", _h5_link(h5py.SoftLink("/nowhere"))),
        "no 'kspace'",
    ),
    Case(
        "kspace-group",
        _one("kspace_group.h5", lambda p: h5py.File(p, "w").create_group("kspace").file.close()),
        "no 'kspace'",
    ),
    Case(
        "kspace-external",
        _one("kspace_ext.h5", _h5_link(h5py.ExternalLink("/nonexistent.h5", "/kspace"))),
        "no 'kspace'",
    ),
    Case(
        "grid-4097",
        _one("grid.h5", lambda p: _declared(p, "kspace", (1, 16, 4097), np.complex64)),
        "too large",
    ),
    Case(
        "coils-200",
        _one("coils.h5", lambda p: _declared(p, "kspace", (1, 200, 16, 16), np.complex64)),
        "too large",
    ),
    Case(
        "kspace-over-voxel-limit",
        _one("voxels.h5", lambda p: _h5(p, kspace=_kspace((8, 64, 64)))),
        "--max-input-voxels",
        ("--max-input-voxels", "5000"),
    ),
    Case(
        "compound-kspace",
        _one(
            "compound.h5", lambda p: _h5(p, kspace=np.zeros((2, 4), [("re", "f4"), ("im", "f4")]))
        ),
        "not complex",
    ),
    Case(
        "string-kspace",
        _one("string.h5", lambda p: _h5(p, kspace=np.array([b"abc", b"def"]))),
        "not complex",
    ),
    Case(
        "huge-ismrmrd-header",
        _one("header.h5", _h5_declared(ismrmrd_header=DECLARED_HUGE)),
        "ismrmrd_header has shape",
    ),
    Case(
        "long-ismrmrd-header",
        _one("long_header.h5", _h5_declared(ismrmrd_header=((), "S33554432"))),
        "expected one string",
    ),
    Case(
        "huge-esc-target",
        _one("esc.h5", _h5_declared(reconstruction_esc=((2, 4096, 4096), "f4"))),
        "dataset 'reconstruction_esc'",
        ("--max-input-voxels", "100000"),
    ),
    Case(
        "huge-rss-target",
        _one("rss.h5", _h5_declared(reconstruction_rss=((2, 4096, 4096), "f4"))),
        "dataset 'reconstruction_rss'",
        ("--max-input-voxels", "100000"),
    ),
    Case(
        "target-slices",
        _one("target_slices.h5", _h5_with(reconstruction_esc=_image((3, 16, 16)))),
        "must be real (2, H, W)",
    ),
    Case(
        "target-complex",
        _one("target_complex.h5", _h5_with(reconstruction_esc=_kspace((2, 16, 16)))),
        "must be real",
    ),
    Case(
        "target-grid",
        _one("target_grid.h5", _h5_declared(reconstruction_esc=((2, 5000, 16), "f4"))),
        "too large",
    ),
    Case(
        "maps-shape",
        _one("maps_shape.h5", _multicoil_maps(_kspace((2, 3, 16, 16)))),
        "sens_maps must be complex",
    ),
    Case(
        "maps-nan",
        _one("maps_nan.h5", _multicoil_maps(np.full((2, 4, 16, 16), np.nan, np.complex64))),
        "sens_maps contains non-finite values",
    ),
    Case(
        "mask-values",
        _one("mask_values.h5", _h5_with(mask=np.full(16, 2, np.uint8))),
        "values other than 0 and 1",
    ),
    Case(
        "mask-empty",
        _one("mask_empty.h5", _h5_with(mask=np.zeros(16, bool))),
        "samples no columns",
    ),
    Case(
        "mask-strings",
        _one("mask_strings.h5", _h5_with(mask=np.array([b"x"] * 16))),
        "not numeric",
    ),
    Case("mask-group", _one("mask_group.h5", _h5_with(mask="group")), "'mask' is not a dataset"),
    Case(
        "acceleration-text",
        _one("accel_text.h5", _h5_attrs(acceleration="fast")),
        "attribute acceleration",
    ),
    Case(
        "acceleration-negative",
        _one("accel_negative.h5", _h5_attrs(acceleration=-4.0)),
        "is not a number >= 1",
    ),
    Case(
        "num-low-fraction",
        _one("num_low.h5", _h5_attrs(mask=True, num_low_frequency=2.5)),
        "is not an integer",
    ),
    Case(
        "undersampled-again",
        _one("undersampled.h5", _h5_attrs(mask=True)),
        "already undersampled",
    ),
    Case("text-as-h5", _one("text.h5", _garbage), "not an HDF5 file"),
    # ISMRMRD
    Case(
        "ismrmrd-huge-xml",
        _one("xml_huge.mrd.h5", _ismrmrd(_replace("xml", shape=(10**9,), dtype="S1"))),
        "dataset/xml has shape",
    ),
    Case(
        "ismrmrd-numeric-xml",
        _one("xml_int.mrd.h5", _ismrmrd(_replace("xml", data=np.int64(7)))),
        "dataset/xml has shape",
    ),
    Case(
        "ismrmrd-bad-xml",
        _one("xml_bad.mrd.h5", _ismrmrd(_replace("xml", data=b"<ismrmrdHeader><oops"))),
        "invalid ISMRMRD XML header",
    ),
    Case(
        "ismrmrd-data-not-table",
        _one("data_array.mrd.h5", _ismrmrd(_replace("data", data=np.ones((4, 4), np.float32)))),
        "not an ISMRMRD acquisition table",
    ),
    Case(
        "ismrmrd-data-wrong-fields",
        _one(
            "data_fields.mrd.h5",
            _ismrmrd(_replace("data", data=np.zeros(3, [("head", "f4"), ("data", "f4")]))),
        ),
        "not an ISMRMRD acquisition table",
    ),
    Case(
        "ismrmrd-huge-table",
        _one("table_huge.mrd.h5", _ismrmrd(_huge_table)),
        "dataset 'dataset/data'",
    ),
    Case(
        "ismrmrd-empty-table",
        _one(
            "table_empty.mrd.h5",
            _ismrmrd(lambda g: _replace("data", shape=(0,), dtype=g["data"].dtype)(g)),
        ),
        "without acquisitions",
    ),
    Case(
        "ismrmrd-two-repetitions",
        _one("repetitions.mrd.h5", _ismrmrd(_second_repetition)),
        "2 values of repetition",
    ),
    Case(
        "ismrmrd-nan",
        _one(
            "nan.mrd.h5",
            _ismrmrd(lambda g: None, kspace=np.full((2, 16, 16), np.nan, np.complex64)),
        ),
        "non-finite",
    ),
    Case(
        "ismrmrd-channels",
        _one("channels.mrd.h5", _ismrmrd(_edit_header(_set_channels))),
        "receiverChannels 3",
    ),
    Case("ismrmrd-3d", _one("enc3d.mrd.h5", _ismrmrd(_edit_header(_set_z))), "3-D encoding"),
    Case(
        "ismrmrd-radial",
        _one("radial.mrd.h5", _ismrmrd(_edit_header(_set_radial))),
        "Cartesian only",
    ),
    # DICOM files
    Case("dicom-sparse-1gib", _one("sparse.dcm", _sparse_tail), "far more than its 16 x 16"),
    Case("dicom-sparse-zeros", _one("zeros.dcm", _sparse_after_meta), "DICOM"),
    Case(
        "dicom-multiframe",
        _one("frames.dcm", _dicom(_set(NumberOfFrames=2))),
        "multi-frame or multi-sample",
    ),
    Case(
        "dicom-rgb",
        _one("rgb.dcm", _dicom(_set(SamplesPerPixel=3))),
        "multi-frame or multi-sample",
    ),
    Case("dicom-rows-zero", _one("rows0.dcm", _dicom(_set(Rows=0))), "zero or above 4096"),
    Case("dicom-truncated", _one("truncated.dcm", _truncated_dicom), "cannot decode"),
    Case(
        "dicom-preamble-only",
        _one("preamble.dcm", lambda p: p.write_bytes(b"\0" * 128 + b"DICM")),
        "DICOM",
    ),
    Case(
        "dicom-orientation-count",
        _one(
            "orientation.dcm",
            _dicom(_set(ImageOrientationPatient=[1.0, 0.0, 0.0])),
        ),
        "ImageOrientationPatient must be 6 finite numbers",
    ),
    Case(
        "dicom-position-count",
        _one("position.dcm", _dicom(_set(ImagePositionPatient=[0.0, 1.0]))),
        "ImagePositionPatient must be 3 finite numbers",
    ),
    Case(
        "dicom-rescale-infinite",
        _one("rescale.dcm", _dicom(_set(RescaleSlope="1e308", RescaleIntercept="1e308"))),
        "not finite after rescale",
    ),
    Case("dicom-empty", _one("empty.dcm", lambda p: p.write_bytes(b"")), "file is empty"),
    # DICOM folders
    Case("folder-empty", _one("empty_folder", lambda p: p.mkdir()), "no DICOM files"),
    Case(
        "folder-text-only",
        _one("text_folder", _folder_with(**{"a.txt": _garbage, "b.dat": _garbage})),
        "no DICOM files",
    ),
    Case(
        "folder-pipe-only",
        _one("pipe_folder", _folder_with(**{"a.dcm": lambda p: os.mkfifo(p)})),
        "no DICOM files",
    ),
    Case(
        "folder-self-link",
        _one("loop_folder", _self_linked_folder),
        "no DICOM files",
    ),
    Case("series-duplicates", _one("duplicates", _duplicate_positions), "duplicate slices"),
    Case(
        "series-orientation",
        _one("orientation", _orientation_differs),
        "orientation differs within the series",
    ),
    Case(
        "series-over-bytes",
        _one("big_series", lambda p: _series(p, [0.0, 2.0, 4.0], rows=128, cols=128)),
        "per-input limit",
        ("--max-input-bytes", "64K"),
    ),
    Case(
        "series-over-voxels",
        _one("many_voxels", lambda p: _series(p, [0.0, 2.0, 4.0], rows=64, cols=64)),
        "above the limit of 5000 voxels",
        ("--max-input-voxels", "5000"),
    ),
    Case(
        "series-truncated-slice",
        _one("bad_slice", _series_then(lambda f: _truncated_dicom(f / "im1.dcm"))),
        "im1.dcm: cannot decode",
    ),
    Case(
        "series-huge-slice",
        _one(
            "huge_slice",
            _series_then(
                lambda f: _save(
                    _mr_slice(rows=60000, cols=60000, pixels=_image((16, 16))), f / "im1.dcm"
                )
            ),
        ),
        "60000 x 60000",
    ),
    Case("folder-named-h5", _one("folder.h5", lambda p: p.mkdir()), "is a folder, not a file"),
    Case(
        "folder-named-nifti",
        _one("folder.nii.gz", lambda p: p.mkdir()),
        "is a folder, not a file",
    ),
    # NIfTI
    Case(
        "nifti-complex",
        _one("complex.nii.gz", _nifti_array(_kspace((16, 16, 3)))),
        "image is complex",
    ),
    Case(
        "nifti-declares-huge",
        _one("declared.nii", _nifti_declaring((4096, 4096, 4096))),
        "is too large",
    ),
    Case(
        "nifti-declares-5d",
        _one("declared5d.nii", _nifti_declaring((16, 16, 3, 2, 1000))),
        "expected a 3-D volume",
    ),
    Case(
        "nifti-singular-affine",
        _one("singular.nii.gz", _singular_nifti),
        "affine is non-finite or singular",
    ),
    Case("nifti-rgb", _one("rgb.nii.gz", _rgb_nifti), "not a real scalar type"),
    Case("nifti-not-gzipped", _one("plain.nii.gz", _plain_named_gz), "NIfTI"),
    Case(
        "nifti-over-voxels",
        _one("voxels.nii.gz", _nifti_array(_image((64, 64, 8)))),
        "--max-input-voxels",
        ("--max-input-voxels", "5000"),
    ),
    Case("nifti-empty", _one("empty.nii", lambda p: p.write_bytes(b"")), "file is empty"),
    # the file system
    Case("missing", lambda folder: [folder / "missing.h5"], "does not exist"),
    Case("broken-link", _one("broken.h5", _link("nowhere.h5")), "broken symbolic link"),
    Case("link-loop", _one("loop.h5", _link("loop.h5")), "symbolic link loop"),
    Case("fifo-h5", _one("pipe.h5", os.mkfifo), "a named pipe (FIFO)"),
    Case("fifo-nifti", _one("pipe.nii.gz", os.mkfifo), "a named pipe (FIFO)"),
    Case("fifo-dicom", _one("pipe.dcm", os.mkfifo), "a named pipe (FIFO)"),
    Case("dev-zero", _one("zero.h5", _link("/dev/zero")), "a character device"),
    Case("dev-null-dicom", _one("null.dcm", _link("/dev/null")), "a character device"),
    Case("socket", _one("socket.h5", _socket), "a socket"),
    Case(
        "over-byte-limit",
        _one("big.h5", lambda p: _h5(p, kspace=_kspace((8, 64, 64)))),
        "above the per-input limit of 64 KiB",
        ("--max-input-bytes", "64K"),
    ),
    Case("newline-name", _one("bad\nname.h5", _garbage), "not an HDF5 file"),
    Case("escape-name", _one("\x1b[31mred.h5", _garbage), "not an HDF5 file"),
    Case("tab-name", _one("tab\tname.nii", _garbage), "not a readable NIfTI file"),
    Case("unknown-type", _one("notes.txt", _garbage), "unknown file type"),
    Case("unknown-binary", _one("blob.bin", corrupt_h5), "unknown file type"),
    Case(
        "unreadable",
        _one("locked.h5", _unreadable),
        "permission denied",
        unless_root=True,
    ),
    # outputs that would collide within one call
    Case("same-name-two-folders", _pair("a/scan.h5", "b/scan.h5"), "would overwrite those of"),
    Case("h5-and-nifti-same-stem", _pair("scan.h5", "scan.nii.gz"), "would overwrite those of"),
    Case("names-differ-in-case", _pair("Scan.h5", "b/scan.h5"), "would overwrite those of"),
]


def _declared(path: Path, name: str, shape: tuple[int, ...], dtype: object) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(name, shape=shape, dtype=dtype)


def _text_file(path: Path) -> Path:
    path.write_text("not a checkpoint\n")
    return path


def _torch_file(obj: object) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        import torch

        torch.save(obj, path)
        return path

    return build


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _model_option(make: Callable[[Path], Path], name: str) -> Callable[[Path], list[str]]:
    return lambda d: ["--method", "ilo", "--model", str(make(d / name))]


#: bad options: (id, options built from a scratch folder, reason, environment). The call must
#: exit 2 with one line naming what is wrong, before anything is read or written.
USAGE: list[tuple[str, Callable[[Path], list[str]], str, dict[str, str]]] = [
    ("out-is-a-file", lambda d: ["--out", str(_text_file(d / "file"))], "not a folder", {}),
    (
        "out-under-a-file",
        lambda d: ["--out", str(_text_file(d / "file") / "sub")],
        "cannot write there",
        {},
    ),
    ("out-in-proc", lambda d: ["--out", "/proc/sgilo-out"], "cannot write there", {}),
    *(
        (
            f"model-{name}",
            _model_option(make, name),
            reason,
            {},
        )
        for name, make, reason in [
            ("text.pt", _text_file, "not a torch checkpoint"),
            ("pipe.pt", _fifo, "a named pipe (FIFO)"),
            ("folder.pt", _folder, "is a folder, not a file"),
            ("empty.pt", _empty, "file is empty"),
            ("list.pt", _torch_file([1, 2, 3]), "expected a dict"),
            ("dict.pt", _torch_file({"weights": 1}), "no 'g_ema' entry"),
            ("missing.pt", lambda p: p, "no such model file"),
        ]
    ),
    (
        "score-text",
        lambda d: ["--method", "sgilo", "--score", str(_text_file(d / "score.pt"))],
        "not a torch checkpoint",
        {},
    ),
    ("acceleration-alone", lambda d: ["--acceleration", "4"], "go together", {}),
    (
        "acceleration-nan",
        lambda d: ["--acceleration", "nan", "--center-fraction", "0.08"],
        "finite",
        {},
    ),
    (
        "acceleration-below-one",
        lambda d: ["--acceleration", "0.5", "--center-fraction", "0.08"],
        "--acceleration",
        {},
    ),
    (
        "center-fraction-above-one",
        lambda d: ["--acceleration", "4", "--center-fraction", "1.5"],
        "--center-fraction",
        {},
    ),
    ("format-unknown", lambda d: ["--format", "h5,jpeg"], "unknown output format", {}),
    ("samples-without-sgilo", lambda d: ["--samples", "3"], "--samples", {}),
    ("method-unknown", lambda d: ["--method", "magic"], "invalid choice", {}),
    ("max-bytes-text", lambda d: ["--max-input-bytes", "lots"], "expected a size", {}),
    ("max-voxels-zero", lambda d: ["--max-input-voxels", "0"], "positive size", {}),
    ("env-max-bytes", lambda d: [], "SGILO_MAX_INPUT_BYTES", {"SGILO_MAX_INPUT_BYTES": "big"}),
]


# ----------------------------------------------------------------------------- the per-call driver


class _Hang(Exception):
    pass


def _call(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """``sgilo`` in this process under a 60 s alarm: (exit code, stderr, seconds)."""

    def alarm(signum, frame):
        raise _Hang(f"sgilo {' '.join(argv)!r} ran past 60 s")

    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    t0 = time.perf_counter()
    try:
        with (
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(io.StringIO()),
            _environment(env or {}),
        ):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue(), time.perf_counter() - t0


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _shown(path: Path) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path.name)


RECONSTRUCT = ["--method", "zero-filled", "--acceleration", "4", "--center-fraction", "0.08"]


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.h5"
    _h5(path, kspace=_kspace((4, 32, 32)))
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, good_file: Path, tmp_path: Path):
    if case.unless_root and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = case.build(inputs)
    bad = paths[-1]
    out = tmp_path / "out"
    argv = ["reconstruct", *map(str, paths), str(good_file), *RECONSTRUCT, *case.options]
    code, stderr, _ = _call([*argv, "--out", str(out)])

    assert "Traceback" not in stderr and 'File "' not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("sgilo: error: ")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"sgilo: error: {_shown(bad)}: "), errors
    assert case.reason in errors[0], errors[0]
    assert code == 1
    # the good input (and a clash's first input) after it were reconstructed; nothing else
    written = {good_file.name, *(p.name for p in paths[:-1])}
    assert {p.name for p in out.iterdir()} == written | {"run.json", "run.log"}
    with h5py.File(out / "good.h5", "r") as f:
        recon = f["reconstruction"][()]
    assert recon.shape == (4, 32, 32) and np.isfinite(recon).all()
    record = json.loads((out / "run.json").read_text())
    statuses = [record["timings"][str(p)]["status"] for p in [*paths, good_file]]
    assert statuses == ["done"] * (len(paths) - 1) + ["failed", "done"]
    hashes = {row["path"]: row["sha256"] for row in record["inputs"]}
    assert hashes[str(bad)] is None  # a failed input is never opened again


@pytest.mark.parametrize(
    ("options", "reason", "env"),
    [u[1:] for u in USAGE],
    ids=[u[0] for u in USAGE],
)
def test_bad_option(options, reason, env, good_file: Path, tmp_path: Path):
    out = tmp_path / "out"
    extra = options(tmp_path)
    argv = ["reconstruct", str(good_file), "--method", "zero-filled"]
    argv += [*extra, *([] if "--out" in extra else ["--out", str(out)])]
    code, stderr, _ = _call(argv, env)
    assert code == 2
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert reason in lines[0], lines[0]
    assert not out.exists()


def test_corpus_size():
    """The issue asks for at least 100 cases (inputs and options)."""
    assert len(CASES) + len(USAGE) >= 100
    assert len({c.id for c in CASES} | {u[0] for u in USAGE}) == len(CASES) + len(USAGE)


def build_corpus(root: Path) -> None:
    """Build every input case into ``root/<case id>/`` (with ``options.txt`` where the case adds
    options), for trying the corpus by hand."""
    for case in CASES:
        folder = root / case.id
        folder.mkdir(parents=True)
        case.build(folder)
        if case.options:
            (folder / "options.txt").write_text(" ".join(case.options) + "\n")


if __name__ == "__main__":
    import sys

    build_corpus(Path(sys.argv[1]))


def test_same_input_twice_is_reconstructed_once(good_file: Path, tmp_path: Path):
    """An input named twice in one call (a shell glob plus the file, say) is reconstructed once,
    with a note; it is not an error."""
    out = tmp_path / "out"
    code, stderr, _ = _call(
        ["reconstruct", str(good_file), str(good_file), *RECONSTRUCT, "--out", str(out)]
    )
    assert code == 0, stderr
    assert "given more than once" in stderr and "sgilo: error" not in stderr
    assert stderr.count("[1/1] good.h5") == 1
    assert {p.name for p in out.iterdir()} == {"good.h5", "run.json", "run.log"}
