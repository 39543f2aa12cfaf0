"""Write a derived DICOM MR Image Storage series (the reader: :mod:`sgilo.pipeline.io.dicom`).

:func:`write_dicom_series` produces a *derived* MR Image Storage series next to its
source: new Series/SOP Instance UIDs, the source's Study UID and patient module (or anonymized
ones), ``ImageType`` ``DERIVED\\SECONDARY\\OTHER`` (the MR Image module requires value 3),
per-slice geometry copied from the source and 16-bit unsigned pixels with a rescale that
preserves the float range. A source without headers (a synthesized series) gives a new study
with an empty patient module. Every file is marked "not for diagnostic use": ``ImageComments``
carries :data:`NOT_FOR_DIAGNOSTIC_USE` and ``BurnedInAnnotation`` is ``NO`` (the pixels hold no
burned-in text). Files are written atomically (a hidden temporary file, then ``os.replace``).
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from sgilo.pipeline.io.atomic import atomic_path
from sgilo.pipeline.io.dicom import DicomSeries, series_number

__all__ = ["NOT_FOR_DIAGNOSTIC_USE", "safe_file_stem", "write_dicom_series"]

NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE - research reconstruction"
PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
#: MR acquisition attributes copied to derived images (they describe how the data was acquired)
ACQUISITION_KEYWORDS = (
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "SequenceName",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "EchoTrainLength",
    "FlipAngle",
    "MagneticFieldStrength",
    "ImagedNucleus",
    "ImagingFrequency",
    "NumberOfAverages",
    "EchoNumbers",
    "PatientPosition",
)


def safe_file_stem(text: str, default: str = "series") -> str:
    """``text`` reduced to a safe file-name stem: ASCII letters, digits, ``.``, ``_`` and ``-``
    only (anything else, including path separators and control characters, becomes ``_``),
    no leading dots or underscores, at most 48 characters; ``default`` if nothing is left."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    stem = re.sub(r"\.{2,}", ".", stem).lstrip("._-")[:48].rstrip("._-")
    return stem or default


def _dicom_text(text: str, limit: int) -> str:
    """Text for a DICOM string value: control characters and backslashes (the DICOM value
    separator) become spaces, whitespace is collapsed, then truncated to ``limit`` characters."""
    cleaned = re.sub(r"[\x00-\x1f\x7f\\]", " ", text)
    return " ".join(cleaned.split())[:limit]


def _rescale(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 stored values and the DS-representable (slope, intercept) mapping them back to
    ``data`` within ``slope / 2``."""
    lo, hi = float(data.min()), float(data.max())
    intercept = float(format_number_as_ds(lo))
    span = hi - intercept
    slope = float(format_number_as_ds(span / 65535 * (1 + 1e-9))) if span > 0 else 1.0
    stored = np.rint((data.astype(np.float64) - intercept) / slope)
    return np.clip(stored, 0, 65535).astype(np.uint16), slope, intercept


def write_dicom_series(
    out_dir: str | os.PathLike[str],
    data: np.ndarray,
    like: DicomSeries,
    *,
    description: str,
    anonymize: bool = False,
) -> list[Path]:
    """Write ``data`` as a derived MR Image Storage series modelled on ``like``.

    Args:
        out_dir: folder for the files (created if missing); files named
            ``<safe description>_<instance:04d>.dcm`` (see :func:`safe_file_stem`) replace
            existing files of the same name.
        data: real, finite ``(slices, H, W)``, the shape of ``like.data`` (the geometry of
            each slice is copied from the source slice at the same index).
        like: the source series (patient, study, geometry and acquisition attributes).
        description: the method and its parameters; becomes ``SeriesDescription`` (control
            characters and backslashes removed, truncated to 64 characters) and, in full
            (up to 1024 characters), ``DerivationDescription``.
        anonymize: replace patient name/ID (``ANONYMOUS`` / a random ``ANON-…`` ID), empty
            birth date, sex, age and study date/time, drop accession number, referring
            physician, study ID and source-image references, and use new Study and Frame of
            Reference UIDs. Otherwise these are copied from the source.

    Returns:
        The written files, in slice order (``InstanceNumber`` 1, 2, …).
    """
    array = np.asarray(data)
    if array.dtype.kind not in "biuf" or array.shape != like.data.shape:
        raise ValueError(
            f"data must be real with the source series' shape {like.data.shape}, got "
            f"{array.dtype} {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError("data contains non-finite values (NaN or Inf)")
    stored, slope, intercept = _rescale(array)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_file_stem(_dicom_text(description, 64))
    series = _series_attributes(like, description, anonymize)
    lo, hi = float(array.min()), float(array.max())
    paths = []
    for i in range(array.shape[0]):
        ds = _slice_dataset(like, i, series, anonymize)
        ds.RescaleSlope = format_number_as_ds(slope)
        ds.RescaleIntercept = format_number_as_ds(intercept)
        ds.RescaleType = "US"
        ds.WindowCenter = format_number_as_ds((lo + hi) / 2)
        ds.WindowWidth = format_number_as_ds(max(hi - lo, 1e-6))
        if hi - lo < 1:  # a width below 1 is only valid with the LINEAR_EXACT function
            ds.VOILUTFunction = "LINEAR_EXACT"
        ds.PixelData = np.ascontiguousarray(stored[i]).tobytes()
        paths.append(_save_atomically(out / f"{stem}_{i + 1:04d}.dcm", ds))
    return paths


def _series_attributes(like: DicomSeries, description: str, anonymize: bool) -> Dataset:
    """Attributes shared by every file of the new series."""
    src = like.headers[0] if like.headers else Dataset()
    now = datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    if anonymize:
        ds.PatientName = "ANONYMOUS"
        ds.PatientID = f"ANON-{secrets.token_hex(6)}"
        for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"):
            setattr(ds, keyword, "")
        ds.StudyInstanceUID = generate_uid()
        ds.FrameOfReferenceUID = generate_uid()
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "sgilo: patient name/ID replaced, dates and UIDs removed"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = ""
    else:
        for keyword in PATIENT_KEYWORDS + STUDY_KEYWORDS:
            if keyword in src:
                setattr(ds, keyword, src[keyword].value)
        ds.StudyInstanceUID = like.study_uid or generate_uid()
        ds.FrameOfReferenceUID = like.frame_of_reference_uid or generate_uid()
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
            ds.setdefault(keyword, "")
        for keyword in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID"):
            ds.setdefault(keyword, "")
        ds.setdefault("AccessionNumber", "")
    if "PositionReferenceIndicator" in src and not anonymize:
        ds.PositionReferenceIndicator = src.PositionReferenceIndicator
    else:
        ds.PositionReferenceIndicator = ""
    for keyword in ACQUISITION_KEYWORDS:
        if keyword in src:
            setattr(ds, keyword, src[keyword].value)
    ds.setdefault("ScanningSequence", "RM")
    ds.setdefault("SequenceVariant", "NONE")
    ds.setdefault("ScanOptions", "")
    ds.setdefault("MRAcquisitionType", "")
    ds.setdefault("EchoTime", "")
    ds.setdefault("RepetitionTime", "")
    ds.setdefault("PatientPosition", "")
    ds.setdefault("EchoTrainLength", "")
    # General Series: Type 2C, empty when the source did not say (dciodvfy requires presence)
    ds.Laterality = src.get("Laterality", "")
    ds.Modality = "MR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = (series_number(src) if series_number(src) >= 0 else 0) + 1000
    ds.SeriesDescription = _dicom_text(description, 64)
    ds.DerivationDescription = _dicom_text(description, 1024)
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.Manufacturer = "sgilo"
    # value 3 is required by the MR Image module (C.8.3.1.1.1); OTHER: none of the named maps
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.ImageComments = NOT_FOR_DIAGNOSTIC_USE
    ds.BurnedInAnnotation = "NO"
    ds.SOPClassUID = MRImageStorage
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.Rows, ds.Columns = int(like.data.shape[1]), int(like.data.shape[2])
    return ds


def _slice_dataset(like: DicomSeries, i: int, series: Dataset, anonymize: bool) -> Dataset:
    ds = Dataset()
    ds.update(series)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = i + 1
    g = like.geometry[i]
    if g.position is not None:
        ds.ImagePositionPatient = [format_number_as_ds(v) for v in g.position]
    if g.orientation is not None:
        ds.ImageOrientationPatient = [format_number_as_ds(v) for v in g.orientation]
    if g.pixel_spacing is not None:
        ds.PixelSpacing = [format_number_as_ds(v) for v in g.pixel_spacing]
    if g.slice_thickness is not None:
        ds.SliceThickness = format_number_as_ds(g.slice_thickness)
    src = like.headers[i] if i < len(like.headers) else Dataset()
    for keyword in ("SliceLocation", "SpacingBetweenSlices"):
        if keyword in src:
            setattr(ds, keyword, src[keyword].value)
    if not anonymize and "SOPInstanceUID" in src and "SOPClassUID" in src:
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        ds.SourceImageSequence = Sequence([ref])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _save_atomically(path: Path, ds: Dataset) -> Path:
    """Write ``ds`` atomically (:func:`sgilo.pipeline.io.atomic.atomic_path`); on any
    failure the temporary file is removed and ``path`` is left as it was."""
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        ds.save_as(fh, enforce_file_format=True)
    return path
