"""NIfTI-1/-2 images (``.nii`` / ``.nii.gz``): read magnitude volumes, write reconstructions.

Orientation: a volume is reoriented to RAS+ (``nibabel.as_closest_canonical``, voxel axes
x → Right, y → Anterior, z → Superior) and each axial slice ``k`` is shown in the project's
display orientation (see :func:`sgilo.pipeline.data.mni.axial_display_slice`):
``np.flipud(np.fliplr(vol[:, :, k].T))``, i.e. ``data[k, i, j] = vol[X-1-j, Y-1-i, k]``: row 0
is the most anterior, column 0 the most right (radiological convention). The transform is a
pure permutation/flip, inverted exactly by :func:`from_display`.

Writing puts a ``(slices, H, W)`` image back in RAS+ voxel order and stores it with the RAS+
affine of the input it was reconstructed from, so it overlays that input in any viewer.

Every bad input raises :class:`~sgilo.pipeline.io.types.InputError` with a one-line message naming
the file. Writes are atomic: the file appears complete under its final name or not at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from sgilo.pipeline.io.atomic import atomic_path
from sgilo.pipeline.io.formats import NIFTI_SUFFIXES
from sgilo.pipeline.io.limits import check_file, current_limits, shown_name
from sgilo.pipeline.io.types import InputError

MAX_GRID = 4096
#: xform code written when the source image had none (1 = scanner anatomical)
DEFAULT_XFORM_CODE = 1


def _error(path: Path, what: str) -> InputError:
    """An InputError whose message is one line: ``<file name>: <what>``."""
    return InputError(f"{shown_name(path)}: {' '.join(what.split())}")


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in NIFTI_SUFFIXES if name.endswith(s)), None)


def to_display(volume: np.ndarray) -> np.ndarray:
    """A RAS+ volume ``(X, Y, Z)`` as display slices ``(Z, Y, X)``:
    ``out[k] = flipud(fliplr(volume[:, :, k].T))``."""
    return np.ascontiguousarray(np.asarray(volume).transpose(2, 1, 0)[:, ::-1, ::-1])


def from_display(data: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_display`: display slices ``(Z, Y, X)`` as a RAS+ volume
    ``(X, Y, Z)``."""
    return np.ascontiguousarray(np.asarray(data)[:, ::-1, ::-1].transpose(2, 1, 0))


@dataclass
class ImageVolume:
    """A magnitude image volume read from a NIfTI file (defined here: ``types.py`` has no image
    record yet).

    Attributes:
        name: the file name without ``.nii`` / ``.nii.gz``.
        source: the input file's path.
        data: float32 ``(slices, H, W)`` = ``(Z, Y, X)`` of the RAS+ volume, in display
            orientation (:func:`to_display`).
        affine: float64 4×4 voxel → world (mm) affine of the ORIGINAL file, in its voxel order.
        ras_affine: float64 4×4 affine of the RAS+ canonical volume ``from_display(data)``;
            :func:`write_nifti` writes with it.
        zooms: voxel sizes (mm) of the RAS+ volume along x, y, z (so ``zooms[2]`` is the slice
            spacing, ``zooms[1]`` the row and ``zooms[0]`` the column spacing of ``data``).
        ras_shape: ``(X, Y, Z)``, the RAS+ volume's shape (``data.shape[::-1]``).
        axcodes: the original file's axis codes, e.g. ``("L", "P", "S")``.
        xform_code: the NIfTI code of the transform the affine came from (sform if set, else
            qform; 0 when the file had neither).
        spatial_unit: the file's spatial unit (``"mm"``, ``"meter"``, ``"micron"``, ``"unknown"``).
    """

    name: str
    source: Path
    data: np.ndarray
    affine: np.ndarray
    ras_affine: np.ndarray
    zooms: tuple[float, float, float]
    ras_shape: tuple[int, int, int]
    axcodes: tuple[str, str, str]
    xform_code: int = 0
    spatial_unit: str = "mm"

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        if self.data.ndim != 3 or self.data.dtype != np.float32:
            raise ValueError(
                f"data must be float32 (slices, H, W), got {self.data.dtype} {self.data.shape}"
            )
        if tuple(self.data.shape[::-1]) != tuple(self.ras_shape):
            raise ValueError(f"data shape {self.data.shape} does not match ras_shape")
        for name in ("affine", "ras_affine"):
            if np.shape(getattr(self, name)) != (4, 4):
                raise ValueError(f"{name} must be 4x4")

    @property
    def num_slices(self) -> int:
        """Number of axial slices."""
        return int(self.data.shape[0])

    def ras_volume(self) -> np.ndarray:
        """The RAS+ volume ``(X, Y, Z)`` (``from_display(data)``)."""
        return from_display(self.data)


# ----------------------------------------------------------------------------- reading


def read_nifti(path: str | os.PathLike[str]) -> ImageVolume:
    """Read a 3-D NIfTI volume (``.nii`` or ``.nii.gz``) and reorient it to RAS+.

    Scaling (``scl_slope`` / ``scl_inter``) is applied by nibabel. A 4-D image with one volume
    is squeezed to 3-D.

    Raises:
        InputError: missing, empty, unreadable or non-NIfTI file; truncated or corrupt data;
            rank other than 3 (or 4 with one volume); an empty or absurd size (> 4096 per axis);
            complex or non-numeric data; NaN or Inf values; a non-finite or singular affine.
    """
    return _read(Path(path), collection=False, finite=True)[0]


def read_nifti_volumes(path: str | os.PathLike[str], *, finite: bool = True) -> list[ImageVolume]:
    """Read every volume of a NIfTI image collection (training images): as :func:`read_nifti`,
    but a 2-D image is one volume of one slice ``(X, Y, 1)`` and a 4-D image ``(X, Y, Z, T)``
    gives ``T`` volumes, named ``<name>_t<t>`` when ``T > 1`` (the voxel limit counts all).

    Args:
        path: a ``.nii`` / ``.nii.gz`` file.
        finite: refuse NaN or Inf values (as :func:`read_nifti`); ``False`` keeps them.

    Raises:
        InputError: as :func:`read_nifti`, with rank 2, 3 or 4 accepted.
    """
    return _read(Path(path), collection=True, finite=finite)


def _read(path: Path, *, collection: bool, finite: bool) -> list[ImageVolume]:
    """The checks common to both readers, then :func:`_read_image`."""
    if path.is_dir():
        raise _error(path, "is a directory, not a NIfTI file")
    if _suffix(path) is None:
        raise _error(path, "not a NIfTI file name (expected .nii or .nii.gz)")
    check_file(path)  # a regular, readable, non-empty file within the byte limit
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for garbage input
        raise _error(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise _error(path, f"not a NIfTI image ({type(img).__name__})")
    try:
        return _read_image(path, img, collection=collection, finite=finite)
    except InputError:
        raise
    except Exception as exc:  # truncated / corrupt data: EOFError, OSError, zlib.error, ...
        raise _error(
            path, f"corrupt or truncated NIfTI file ({type(exc).__name__}: {exc})"
        ) from exc


def _volumes_shape(path: Path, img: nib.Nifti1Image, collection: bool) -> tuple[int, ...]:
    """The image's shape as ``(X, Y, Z)`` (one volume) or ``(X, Y, Z, T)`` (a collection of
    ``T > 1`` volumes); a 4-D image of one volume is 3-D, and for a collection a 2-D image is
    ``(X, Y, 1)``."""
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if collection and len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 and not (collection and len(shape) == 4):
        expected = "a 2-D, 3-D or 4-D image" if collection else "a 3-D volume"
        raise _error(path, f"image has shape {img.shape}; expected {expected}")
    return shape


def _read_image(
    path: Path, img: nib.Nifti1Image, *, collection: bool, finite: bool
) -> list[ImageVolume]:
    shape = _volumes_shape(path, img, collection)
    if 0 in shape:
        raise _error(path, f"image has a zero-size dimension (shape {img.shape})")
    max_voxels = current_limits().max_voxels
    if max(shape) > MAX_GRID or int(np.prod(shape)) > max_voxels:
        raise _error(
            path,
            f"image shape {img.shape} is too large (<= {MAX_GRID} per axis, "
            f"<= {max_voxels} voxels: --max-input-voxels)",
        )
    dtype = img.get_data_dtype()
    if dtype.kind == "c":
        raise _error(path, f"image is complex (dtype {dtype}); expected real magnitude data")
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise _error(path, f"image data type {dtype} is not a real scalar type")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise _error(path, "image affine is non-finite or singular")

    values = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    if finite and not np.isfinite(values).all():
        raise _error(path, "image contains non-finite values (NaN or Inf)")

    header = img.header
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    unit = header.get_xyzt_units()[0]
    suffix = _suffix(path) or ""
    name = path.name[: len(path.name) - len(suffix)]
    volumes = [values] if values.ndim == 3 else [values[..., t] for t in range(shape[3])]
    result = []
    for t, volume in enumerate(volumes):
        canonical = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
        ras = np.asarray(canonical.dataobj, dtype=np.float32)
        result.append(
            ImageVolume(
                name=name if len(volumes) == 1 else f"{name}_t{t}",
                source=path,
                data=to_display(ras),
                affine=affine,
                ras_affine=np.asarray(canonical.affine, dtype=np.float64),
                zooms=tuple(float(z) for z in canonical.header.get_zooms()[:3]),
                ras_shape=tuple(int(n) for n in ras.shape),
                axcodes=tuple(nib.aff2axcodes(affine)),
                xform_code=sform_code if sform_code > 0 else qform_code,
                spatial_unit=str(unit),
            )
        )
    return result


# ----------------------------------------------------------------------------- writing


def write_nifti(
    path: str | os.PathLike[str],
    data: np.ndarray,
    like: ImageVolume,
    *,
    description: str | None = None,
) -> Path:
    """Write display-orientation slices ``data`` (real ``(slices, H, W)``, the shape of
    ``like.data``) as a float32 NIfTI-1 volume, atomically.

    The slices are put back in RAS+ voxel order (:func:`from_display`) and stored with
    ``like.ras_affine`` as both sform and qform, so the result overlays ``like``'s source in
    any viewer. Both xform codes are ``like.xform_code`` (1 scanner, 2 aligned, 3 Talairach,
    4 MNI: the source's coordinate system) or 1 (scanner) when the source had none; the spatial
    unit is the source's. ``description`` (ASCII; cut to the header's 79 characters) goes into
    the header's ``descrip`` field. ``.nii.gz`` names are gzip-compressed. Returns the path.

    Raises:
        ValueError: a name not ending in ``.nii`` / ``.nii.gz``, or ``data`` not real, finite
            and of ``like.data``'s shape.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix is None:
        raise ValueError(f"{path.name}: a NIfTI file name must end in .nii or .nii.gz")
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"data must be real-valued, got dtype {arr.dtype}")
    if arr.shape != like.data.shape:
        raise ValueError(f"data shape {arr.shape} differs from the source's {like.data.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("data contains non-finite values (NaN or Inf)")

    affine = np.asarray(like.ras_affine, dtype=np.float64)
    img = nib.Nifti1Image(from_display(arr.astype(np.float32)), affine)
    code = like.xform_code if like.xform_code > 0 else DEFAULT_XFORM_CODE
    img.set_sform(affine, code=code)
    img.set_qform(affine, code=code)
    if description:
        text = description.encode("ascii", "replace")[:79]
        img.header["descrip"] = text
    img.header.set_data_dtype(np.float32)
    img.header.set_xyzt_units(xyz=like.spatial_unit if like.spatial_unit != "unknown" else "mm")
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0

    with atomic_path(path, suffix) as tmp:
        nib.save(img, tmp)
    return path
