"""Where a reconstruction's voxels are in the patient: one affine per study, and the NIfTI and
DICOM records the writers need, built from it.

Every reconstruction is ``(slices, H, W)`` in the project's display orientation. Its geometry is a
*display affine* ``A`` (float64 4×4): ``A @ (j, i, k, 1)`` is the RAS+ position (mm) of column
``j``, row ``i`` of slice ``k``. It comes from

- a NIfTI input: its RAS+ affine composed with the display flip (:func:`sgilo.pipeline.io.nifti.
  to_display`);
- a DICOM input: ``ImagePositionPatient`` of the first slice, the two
  ``ImageOrientationPatient`` directions scaled by ``PixelSpacing``, and the slice normal scaled
  by the slice spacing (else ``SliceThickness``, else 1 mm), LPS turned into RAS;
- a k-space input with acquisition geometry (an ISMRMRD file's acquisition headers; the
  study's ``affine``, :mod:`sgilo.pipeline.io.ismrmrd_geometry`): that affine;
- another k-space input: an axial grid (rows anterior → posterior, columns right → left, i.e.
  the DICOM axial orientation ``1\\0\\0\\0\\1\\0``) centred on the origin, with spacing from
  the ISMRMRD header (encoded FOV / encoded matrix: readout ``x`` along rows ``H``, phase encode
  ``y`` along columns ``W``, slice ``z``) when it matches the grid, else 1 mm.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from sgilo.pipeline.io.dicom import DicomSeries, SliceGeometry
from sgilo.pipeline.io.nifti import ImageVolume
from sgilo.pipeline.io.types import KSpaceStudy

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
DEFAULT_SPACING_MM = 1.0


def _display_flip(h: int, w: int) -> np.ndarray:
    """The map ``(j, i, k) -> (W-1-j, H-1-i, k)`` between display and RAS+ voxel indices (its
    own inverse)."""
    return np.array([[-1.0, 0, 0, w - 1], [0, -1.0, 0, h - 1], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])


def nifti_display_affine(volume: ImageVolume) -> np.ndarray:
    """The display affine of a NIfTI volume (``data[k, i, j]`` at ``A @ (j, i, k, 1)``)."""
    _, h, w = volume.data.shape
    return volume.ras_affine @ _display_flip(h, w)


def dicom_display_affine(series: DicomSeries) -> np.ndarray:
    """The display affine of a DICOM series (slices in the reader's order, ascending along the
    normal). Missing orientation/position/spacing fall back to axial / origin / 1 mm."""
    g = series.geometry[0]
    o = np.asarray(g.orientation if g.orientation else (1, 0, 0, 0, 1, 0), dtype=np.float64)
    row_dir, col_dir = o[:3], o[3:]
    row_spacing, col_spacing = g.pixel_spacing or (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM)
    step = series.slice_spacing or g.slice_thickness or DEFAULT_SPACING_MM
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # along a row: the column index j
    lps[:3, 1] = col_dir * row_spacing  # along a column: the row index i
    lps[:3, 2] = np.cross(row_dir, col_dir) * step
    lps[:3, 3] = g.position if g.position else (0.0, 0.0, 0.0)
    return LPS_TO_RAS @ lps


def kspace_display_affine(study: KSpaceStudy) -> np.ndarray:
    """The display affine of a k-space study: axial, centred, spacing from its ISMRMRD header
    when the header's encoded matrix matches the grid (readout ``x`` = ``H`` or ``2 H``, phase
    ``y`` = ``W``), else :data:`DEFAULT_SPACING_MM`."""
    from sgilo.pipeline.io.ismrmrd_header import header_geometry

    h, w = study.shape
    dr = dc = ds = DEFAULT_SPACING_MM
    geometry = header_geometry(study.ismrmrd_header) if study.ismrmrd_header else None
    if geometry is not None:
        (nx, ny, _), (sx, sy, sz) = geometry["encoded"], geometry["spacing_mm"]
        if h in (nx, nx // 2) and w == ny:
            dr, dc, ds = sx, sy, sz
    lps = np.diag([dc, dr, ds, 1.0])
    lps[:3, 3] = -lps[:3, :3] @ np.array([(w - 1) / 2, (h - 1) / 2, (study.num_slices - 1) / 2])
    return LPS_TO_RAS @ lps


def display_affine(study: KSpaceStudy) -> np.ndarray:
    """The display affine of a study, from its image source, its acquisition geometry or its
    k-space header."""
    source = study.image_source
    if isinstance(source, ImageVolume):
        return nifti_display_affine(source)
    if isinstance(source, DicomSeries):
        return dicom_display_affine(source)
    if study.affine is not None:
        return np.asarray(study.affine, dtype=np.float64)
    return kspace_display_affine(study)


def volume_like(study: KSpaceStudy, data: np.ndarray) -> ImageVolume:
    """An :class:`ImageVolume` to write ``data`` (float32 ``(slices, H, W)``, display
    orientation) with :func:`sgilo.pipeline.io.nifti.write_nifti`: the NIfTI input itself, else one
    on :func:`display_affine` (xform code scanner, mm)."""
    if isinstance(study.image_source, ImageVolume):
        return study.image_source
    data = np.asarray(data, dtype=np.float32)
    s, h, w = data.shape
    ras_affine = display_affine(study) @ _display_flip(h, w)
    zooms = tuple(float(z) for z in np.linalg.norm(ras_affine[:3, :3], axis=0))
    return ImageVolume(
        name=study.name,
        source=study.source,
        data=data,
        affine=ras_affine,
        ras_affine=ras_affine,
        zooms=zooms,
        ras_shape=(w, h, s),
        axcodes=tuple(nib.aff2axcodes(ras_affine)),
        xform_code=1,
        spatial_unit="mm",
    )


def series_like(study: KSpaceStudy, data: np.ndarray) -> DicomSeries:
    """A :class:`DicomSeries` to write ``data`` with
    :func:`sgilo.pipeline.io.dicom_write.write_dicom_series`: the DICOM input itself, else a
    header-less series (new study, empty patient module) whose per-slice geometry comes from
    :func:`display_affine` (in the study's frame of reference when it has one)."""
    if isinstance(study.image_source, DicomSeries):
        return study.image_source
    lps = LPS_TO_RAS @ display_affine(study)
    col_spacing, row_spacing, step = np.linalg.norm(lps[:3, :3], axis=0)
    orientation = tuple(float(v) for v in (*lps[:3, 0] / col_spacing, *lps[:3, 1] / row_spacing))
    geometry = [
        SliceGeometry(
            position=tuple(float(v) for v in (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]),
            orientation=orientation,
            pixel_spacing=(float(row_spacing), float(col_spacing)),
            slice_thickness=float(step),
        )
        for k in range(data.shape[0])
    ]
    return DicomSeries(
        name=study.name,
        source=Path(study.source),
        data=np.asarray(data, dtype=np.float32),
        files=[],
        geometry=geometry,
        study_uid=None,
        series_uid=None,
        frame_of_reference_uid=study.frame_of_reference_uid,
    )
