"""The one place that decides what kind of file an input is.

:func:`sniff_format` names a file's kind, one of :data:`ALL_FORMATS`; every reader of files
(``sgilo reconstruct`` through :func:`detect_format`, the training-image loader
:mod:`sgilo.pipeline.data.training`) asks it, so the two never disagree about a file. Checks, in
this order (the first that holds decides):

==============  ============================================================================
``dicom``       a folder (only DICOM series come as folders; one named like an HDF5 or NIfTI
                file is refused)
``nifti``       a ``.nii`` / ``.nii.gz`` name
``ismrmrd``     HDF5 content with a ``dataset`` group (``xml`` / ``data``)
``fastmri``     any other HDF5 content, or an ``.h5`` / ``.hdf5`` / ``.hdf`` name (its reader
                then says what is wrong with it)
``dicom``       the ``DICM`` prefix, or a ``.dcm`` / ``.ima`` / ``.dicom`` name
``picture``     a ``.png`` / ``.jpg`` / ``.jpeg`` name (PNG/JPEG; training images only)
``npy``         a ``.npy`` name (a NumPy array; training images only)
==============  ============================================================================

The training-only kinds come last, after every content check, so they never take a file that
``sgilo reconstruct`` reads: :func:`detect_format` (the reconstruct inputs, :data:`FORMATS`)
refuses them with the same one line as a file of no known type.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from sgilo.pipeline.io.limits import check_input, shown_name
from sgilo.pipeline.io.types import InputError

#: what ``sgilo reconstruct`` reads: k-space files and magnitude images
FORMATS = ("fastmri", "ismrmrd", "dicom", "nifti")
#: the reconstruct formats that hold images (turned into k-space, undersampled retrospectively)
IMAGE_FORMATS = ("dicom", "nifti")
#: kinds that only the training-image loader reads
TRAINING_ONLY_FORMATS = ("picture", "npy")
ALL_FORMATS = FORMATS + TRAINING_ONLY_FORMATS

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPY_SUFFIXES = (".npy",)

_UNKNOWN = "unknown file type (expected fastMRI or ISMRMRD HDF5, DICOM, or NIfTI .nii/.nii.gz)"
_UNKNOWN_ANY = (
    "unknown file type (expected fastMRI or ISMRMRD HDF5, DICOM, NIfTI .nii/.nii.gz, PNG/JPEG "
    "or NumPy .npy)"
)


def _error(path: Path, what: str) -> InputError:
    return InputError(f"{shown_name(path)}: {' '.join(what.split())}")


def sniff_format(path: str | os.PathLike[str]) -> str:
    """The kind of ``path``, one of :data:`ALL_FORMATS` (the table in the module docstring).

    Raises:
        InputError: anything :func:`sgilo.pipeline.io.limits.check_input` refuses (missing, a
            broken link, not a regular file or folder, unreadable, empty, too large), a folder
            named like an HDF5 or NIfTI file, or a file of no known kind.
    """
    kind = _sniff(Path(path))
    if kind is None:
        raise _error(Path(path), _UNKNOWN_ANY)
    return kind


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a ``sgilo reconstruct`` input, one of :data:`FORMATS`
    (:func:`sniff_format`, with the training-only kinds refused as of no known type).

    Raises:
        InputError: as :func:`sniff_format`; and a PNG/JPEG or ``.npy`` file.
    """
    kind = _sniff(Path(path))
    if kind not in FORMATS:
        raise _error(Path(path), _UNKNOWN)
    return kind


def _sniff(path: Path) -> str | None:
    """The table in the module docstring: a kind of :data:`ALL_FORMATS`, or ``None``."""
    kind = check_input(path)  # before anything is opened: a regular file or folder, in limits
    name = path.name.lower()
    if kind == "folder":
        if name.endswith((*HDF5_SUFFIXES, *NIFTI_SUFFIXES)):
            raise _error(path, "is a folder, not a file (only DICOM series come as folders)")
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if h5py.is_hdf5(path):
        from sgilo.pipeline.io.ismrmrd import is_ismrmrd

        try:
            with h5py.File(path, "r") as f:
                return "ismrmrd" if is_ismrmrd(f) else "fastmri"
        except (OSError, RuntimeError):
            return "fastmri"  # its reader reports the corruption
    if name.endswith(HDF5_SUFFIXES):
        return "fastmri"  # its reader says: not an HDF5 file
    from pydicom.misc import is_dicom

    if name.endswith(DICOM_SUFFIXES) or is_dicom(path):
        return "dicom"
    if name.endswith(PICTURE_SUFFIXES):
        return "picture"
    if name.endswith(NPY_SUFFIXES):
        return "npy"
    return None
