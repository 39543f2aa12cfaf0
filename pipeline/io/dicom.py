"""DICOM MR image series: read single files, series folders and mixed folders.

Reading (:func:`read_dicom`) groups files by ``SeriesInstanceUID``, sorts each series' slices along
the slice normal (the cross product of the two ``ImageOrientationPatient`` vectors; by
``InstanceNumber`` when positions or orientation are missing) and applies ``RescaleSlope`` /
``RescaleIntercept``. Every bad input raises :class:`~sgilo.pipeline.io.types.InputError` with a
one-line message naming the file (and, for series-level problems, the series).

Writing derived series: :mod:`sgilo.pipeline.io.dicom_write`.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.misc import is_dicom

from sgilo.pipeline.io.limits import (
    check_file,
    check_input,
    current_limits,
    folder_files,
    shown_name,
)
from sgilo.pipeline.io.types import InputError

__all__ = ["DicomSeries", "SliceGeometry", "read_dicom", "series_number"]

MAX_GRID = 4096
#: most bytes of a DICOM file parsed as its header (pixel data is deferred); a file may be at
#: most twice this larger than its declared pixel data
MAX_HEADER_BYTES = 4 * 2**20
SPACING_TOLERANCE = 0.10
_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # DICOMDIR files: no image, skipped in folders
_FIRST_PIXEL_TAG = 0x7FE00000  # (7FE0,0008) float pixel data and later: not kept in headers


@dataclass(frozen=True)
class SliceGeometry:
    """One slice's geometry as declared in its file (``None`` where the attribute is absent).

    ``position``: ImagePositionPatient (mm, 3); ``orientation``: ImageOrientationPatient (row
    then column direction cosines, 6); ``pixel_spacing``: PixelSpacing (row spacing, column
    spacing in mm); ``slice_thickness``: SliceThickness (mm).
    """

    position: tuple[float, ...] | None = None
    orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    slice_thickness: float | None = None


@dataclass
class DicomSeries:
    """One DICOM MR image series, slices sorted along the slice normal.

    Attributes:
        name: the input's stem (file stem or folder name); when a folder holds several
            series, ``_s<SeriesNumber>`` is appended (plus ``_<index>`` if that repeats).
        source: the file or folder it was read from.
        data: float32 ``(slices, H, W)``, ``RescaleSlope · stored + RescaleIntercept``.
        files: the file of each slice (same order as ``data``).
        geometry: each slice's geometry (same order as ``data``).
        study_uid, series_uid, frame_of_reference_uid: the series-level UIDs (``None`` if
            absent).
        headers: each slice's source dataset without pixel data (same order as ``data``):
            the patient, study and acquisition attributes that export copies.
    """

    name: str
    source: Path
    data: np.ndarray
    files: list[Path]
    geometry: list[SliceGeometry]
    study_uid: str | None
    series_uid: str | None
    frame_of_reference_uid: str | None
    headers: list[Dataset] = field(default_factory=list, repr=False)

    @property
    def num_slices(self) -> int:
        """Number of slices."""
        return int(self.data.shape[0])

    @property
    def slice_spacing(self) -> float | None:
        """Median distance between slice positions along the normal (mm); ``None`` if unknown."""
        keys = _normal_positions(self.geometry)
        if keys is None or len(keys) < 2:
            return None
        return float(np.median(np.diff(keys)))


# ----------------------------------------------------------------------------- reading


def _error(path: Path, what: str) -> InputError:
    """An InputError whose message is one line: ``<file name>: <what>``."""
    return InputError(f"{shown_name(path)}: {' '.join(what.split())}")


def read_dicom(path: str | os.PathLike[str]) -> list[DicomSeries]:
    """Read DICOM MR images: one file, a series folder, or a folder with several series.

    Folders are searched recursively; hidden files and folders, anything that is not a regular
    file (pipes, devices), files without the DICOM ``DICM`` prefix and DICOMDIR files are
    skipped. Files are grouped by ``SeriesInstanceUID``; series come back ordered by
    ``SeriesNumber`` then UID.

    Reading is two passes, so that nothing large is decoded before the input is known to fit:
    first every file's header (at most :data:`MAX_HEADER_BYTES` of it is parsed, and a file
    larger than its declared pixel data allows is refused), then the series checks and the
    voxel limit (:func:`sgilo.pipeline.io.limits.current_limits`), then the pixels.

    Raises:
        InputError: missing path, a file that is not DICOM or is unreadable/corrupt, a folder
            with no DICOM files or above the input limits; per file (prefixed with the
            folder's name when ``path`` is a folder): no pixel data, modality other than
            ``MR``, declared Rows/Columns above 4096, multi-frame or multi-sample pixels, a
            header above :data:`MAX_HEADER_BYTES` or a file much larger than its pixel data,
            undecodable pixel data, malformed geometry; per series: differing Rows/Columns or
            orientation, duplicate slice positions, slice gaps that differ by more than 10 %;
            more voxels in all than the limit.
    """
    path = Path(path)
    if path.is_dir():
        check_input(path)
        files = _dicom_files(path)
        if not files:
            raise _error(path, "folder contains no DICOM files")
    else:
        check_file(path)
        files = [path]
    slices = [s for s in (_read_file(path, f) for f in files) if s]
    if not slices:
        raise _error(path, "folder contains no DICOM image files")

    groups: dict[str, list[_Slice]] = {}
    for s in slices:
        groups.setdefault(s.header.get("SeriesInstanceUID") or "", []).append(s)
    ordered = sorted(groups.items(), key=lambda kv: (series_number(kv[1][0].header), kv[0]))
    for uid, group in ordered:
        _check_series_headers(path, uid, group)
    voxels = sum(s.rows * s.cols for s in slices)
    max_voxels = current_limits().max_voxels
    if voxels > max_voxels:
        raise _error(
            path,
            f"{len(slices)} images of {voxels} voxels in all are above the limit of "
            f"{max_voxels} voxels (--max-input-voxels)",
        )
    for s in slices:
        _read_file(path, s.path, s)
    stem = path.stem if path.is_file() else path.name
    result = []
    for index, (uid, group) in enumerate(ordered):
        name = stem
        if len(ordered) > 1:
            number = series_number(group[0].header)
            name = f"{stem}_s{number}" if number >= 0 else f"{stem}_{index}"
            if any(r.name == name for r in result):  # equal SeriesNumbers: add the index
                name = f"{name}_{index}"
        result.append(_build_series(path, name, uid, group))
    return result


@dataclass
class _Slice:
    """One file's header (no pixel data), its declared size and geometry; ``pixels`` float32
    ``(rows, cols)`` once decoded."""

    path: Path
    header: Dataset
    rows: int
    cols: int
    geometry: SliceGeometry
    pixels: np.ndarray | None = None


def _dicom_files(folder: Path) -> list[Path]:
    files = []
    for p in folder_files(folder):
        try:
            if is_dicom(p):
                files.append(p)
        except OSError:
            continue
    return files


def series_number(header: Dataset) -> int:
    """``SeriesNumber`` of a header as an int; -1 when absent or not a number."""
    try:
        return int(header.get("SeriesNumber"))
    except (TypeError, ValueError):
        return -1


def _read_file(source: Path, path: Path, header: _Slice | None = None) -> _Slice | None:
    """Read one file of the input ``source`` (the file itself, or a folder holding it): its
    header, or with ``header`` (the first pass's record) its pixels. A bad file of a folder is
    reported as ``<folder>: <file>: <what>``, so the input is named."""
    try:
        if header is None:
            return _read_header(path, single=not source.is_dir())
        _decode(header)
        return header
    except InputError as exc:
        if not source.is_dir():
            raise
        raise InputError(f"{source.name}: {exc}") from exc


def _read_header(path: Path, single: bool) -> _Slice | None:
    """Parse and check one file's header; ``None`` for a DICOMDIR inside a folder.

    At most :data:`MAX_HEADER_BYTES` are parsed (pixel data is deferred, never read here), and
    the file may be at most that much larger than its declared pixel data: a huge (or sparse)
    file that merely starts like DICOM is refused after reading a few MiB."""
    if not os.access(path, os.R_OK):
        raise _error(path, "file is not readable (permission denied)")
    size = path.stat().st_size
    if size == 0:
        raise _error(path, "file is empty (0 bytes)")
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(MAX_HEADER_BYTES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(prefix), defer_size=1024)
            if "SOPClassUID" not in ds and "Modality" not in ds:
                raise _error(path, "corrupt DICOM file (no SOPClassUID or Modality found)")
            if not single and ds.get("SOPClassUID") == _DIRECTORY_STORAGE:
                return None
            return _check_header(path, ds, size)
    except InputError:
        raise
    except pydicom.errors.InvalidDicomError as exc:
        raise _error(path, f"not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types for damaged files
        raise _error(
            path, f"unreadable or corrupt DICOM file ({type(exc).__name__}: {exc})"
        ) from exc


def _check_header(path: Path, ds: Dataset, size: int) -> _Slice:
    modality = ds.get("Modality")
    if modality != "MR":
        raise _error(path, f"modality is {modality!r}, expected 'MR' (only MR images are read)")
    if "PixelData" not in ds:
        if size > MAX_HEADER_BYTES:
            raise _error(
                path,
                f"no pixel data in the first {MAX_HEADER_BYTES >> 20} MiB of a "
                f"{size}-byte file (a corrupt file, or not an image)",
            )
        raise _error(path, "no pixel data")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if not (0 < rows <= MAX_GRID and 0 < cols <= MAX_GRID):
        raise _error(path, f"image size {rows} x {cols} is zero or above {MAX_GRID}")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1 or int(ds.get("SamplesPerPixel") or 1) != 1:
        raise _error(path, "multi-frame or multi-sample images are not supported")
    pixel_bytes = rows * cols * max(1, -(-int(ds.get("BitsAllocated") or 16) // 8))
    if size > pixel_bytes + 2 * MAX_HEADER_BYTES:
        raise _error(
            path,
            f"file is {size} bytes, far more than its {rows} x {cols} image needs "
            f"({pixel_bytes} bytes of pixels): a corrupt or padded file",
        )
    header = Dataset()
    for tag in [t for t in ds.keys() if t < _FIRST_PIXEL_TAG]:
        header[tag] = ds[tag]
    return _Slice(path, header, rows, cols, _geometry(path, ds))


def _decode(s: _Slice) -> None:
    """Read the file's pixel data into ``s.pixels`` (``RescaleSlope · stored +
    RescaleIntercept``, float32), checking its shape against the header's and its values."""
    path = s.path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            stored = ds.pixel_array
    except Exception as exc:
        raise _error(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    if stored.shape != (s.rows, s.cols):
        raise _error(path, f"pixel data has shape {stored.shape}, expected ({s.rows}, {s.cols})")
    try:
        slope = float(ds.get("RescaleSlope") or 1.0)
        intercept = float(ds.get("RescaleIntercept") or 0.0)
    except (TypeError, ValueError) as exc:
        raise _error(path, f"malformed RescaleSlope/RescaleIntercept ({exc})") from exc
    with np.errstate(over="ignore", invalid="ignore"):  # an absurd rescale: refused below
        pixels = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    if not np.isfinite(pixels).all():
        raise _error(path, "pixel values are not finite after rescale")
    s.pixels = pixels


def _numbers(path: Path, ds: Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return None
    value = ds[keyword].value
    values = (
        list(value) if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    )
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise _error(path, f"{keyword} is not numeric ({values!r})") from exc
    if len(numbers) != count or not np.isfinite(numbers).all():
        raise _error(path, f"{keyword} must be {count} finite numbers, got {values!r}")
    return numbers


def _geometry(path: Path, ds: Dataset) -> SliceGeometry:
    thickness = _numbers(path, ds, "SliceThickness", 1)
    return SliceGeometry(
        position=_numbers(path, ds, "ImagePositionPatient", 3),
        orientation=_numbers(path, ds, "ImageOrientationPatient", 6),
        pixel_spacing=_numbers(path, ds, "PixelSpacing", 2),
        slice_thickness=None if thickness is None else thickness[0],
    )


def _normal_positions(geometry: list[SliceGeometry]) -> np.ndarray | None:
    """Each slice's position along the slice normal, or ``None`` if any geometry is missing."""
    if any(g.position is None or g.orientation is None for g in geometry):
        return None
    o = np.asarray(geometry[0].orientation, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    return np.array([np.dot(g.position, normal) for g in geometry])


def _instance_number(s: _Slice) -> int:
    try:
        return int(s.header.get("InstanceNumber"))
    except (TypeError, ValueError):
        return 0


def _series_label(source: Path, uid: str) -> str:
    return f"{source.name}: series {uid or '(no SeriesInstanceUID)'}"


def _check_series_headers(source: Path, uid: str, group: list[_Slice]) -> None:
    """Series checks that need only the headers: equal Rows/Columns and orientation."""
    label = _series_label(source, uid)
    first = group[0]
    for s in group[1:]:
        if (s.rows, s.cols) != (first.rows, first.cols):
            raise InputError(
                f"{label}: {s.path.name} is {s.rows} x {s.cols}, "
                f"{first.path.name} is {first.rows} x {first.cols} "
                "(rows/columns differ within the series)"
            )
        a, b = s.geometry.orientation, first.geometry.orientation
        if (a is None) != (b is None) or (
            a is not None and not np.allclose(a, b, atol=1e-4)  # type: ignore[arg-type]
        ):
            raise InputError(
                f"{label}: {s.path.name} has ImageOrientationPatient {a}, {first.path.name} "
                f"has {b} (orientation differs within the series)"
            )
    _sorted_slices(label, group)


def _sorted_slices(label: str, group: list[_Slice]) -> list[_Slice]:
    """The series' slices along the slice normal (checking their spacing), or by
    InstanceNumber when the geometry is missing."""
    keys = _normal_positions([s.geometry for s in group])
    if keys is None:
        return sorted(group, key=_instance_number)
    order = np.argsort(keys, kind="stable")
    group, keys = [group[i] for i in order], keys[order]
    _check_spacing(label, group, keys)
    return group


def _build_series(source: Path, name: str, uid: str, group: list[_Slice]) -> DicomSeries:
    first = group[0]
    group = _sorted_slices(_series_label(source, uid), group)
    header = first.header
    return DicomSeries(
        name=name,
        source=source,
        data=np.stack([s.pixels for s in group]).astype(np.float32),
        files=[s.path for s in group],
        geometry=[s.geometry for s in group],
        study_uid=header.get("StudyInstanceUID"),
        series_uid=header.get("SeriesInstanceUID"),
        frame_of_reference_uid=header.get("FrameOfReferenceUID"),
        headers=[s.header for s in group],
    )


def _check_spacing(label: str, group: list[_Slice], keys: np.ndarray) -> None:
    gaps = np.diff(keys)
    for i, gap in enumerate(gaps):
        if gap < 1e-4:
            raise InputError(
                f"{label}: {group[i].path.name} and {group[i + 1].path.name} share slice "
                f"position {keys[i]:.4g} mm along the normal (duplicate slices)"
            )
    if len(gaps) < 2:
        return
    median = float(np.median(gaps))
    deviation = np.abs(gaps - median)
    worst = int(np.argmax(deviation))
    if deviation[worst] > SPACING_TOLERANCE * median:
        raise InputError(
            f"{label}: inconsistent slice spacing: gap {gaps[worst]:.4g} mm between "
            f"{group[worst].path.name} and {group[worst + 1].path.name} differs by more than "
            f"{SPACING_TOLERANCE:.0%} from the median gap {median:.4g} mm "
            f"(gaps {gaps.min():.4g} to {gaps.max():.4g} mm)"
        )
