"""ISMRMRD acquisition geometry → display affine → NIfTI sform/qform and DICOM geometry.

The k-space here is simulated from point sources at known patient positions with the MR signal
model ``s(k) = Σ ρ(r) exp(-2πi k·r)`` (``k`` in cycles/mm along read and phase encode), so the
test does not reuse the reader's formula: the reconstructed peak, mapped through the affine the
reader builds, must land at the patient position the headers imply (LPS in the file, RAS in
NIfTI, LPS again in DICOM)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest

from sgilo.pipeline.export import zero_filled
from sgilo.pipeline.io.dicom_write import write_dicom_series
from sgilo.pipeline.io.geometry import display_affine, series_like, volume_like
from sgilo.pipeline.io.ismrmrd import read_ismrmrd, write_ismrmrd
from sgilo.pipeline.io.ismrmrd_write import AcquisitionGeometry
from sgilo.pipeline.io.nifti import write_nifti
from sgilo.pipeline.io.types import InputError

H, W, S = 32, 24, 3  # recon readout, phase encode, slices
FOV = (192.0, 144.0, 5.0)  # recon FOV: 6 mm pixels both ways, 5 mm slices
DX, DY = FOV[0] / H, FOV[1] / W
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _oblique() -> AcquisitionGeometry:
    read = np.array([1.0, 0.3, 0.2])
    read /= np.linalg.norm(read)
    phase = np.cross([0.1, 0.2, 1.0], read)
    phase /= np.linalg.norm(phase)
    normal = np.cross(read, phase)
    centre = np.array([12.0, -30.0, 40.0])  # patient coordinates of the middle slice
    table = np.array([0.0, 0.0, 25.0])
    positions = centre + (np.arange(S) - 1)[:, None] * 6.0 * normal  # 6 mm gaps (5 mm thick)
    return AcquisitionGeometry(
        read_dir=tuple(read),
        phase_dir=tuple(phase),
        slice_dir=tuple(normal),
        positions=positions,
        table=tuple(table),
    )


#: per slice, the point source's offset from the slice centre in pixels (read, phase)
OFFSETS = [(5, -3), (-7, 4), (2, 9)]


def _point_kspace(oversampling: int = 2) -> np.ndarray:
    """Complex ``(S, 2, oversampling · H, W)``: one point per slice at :data:`OFFSETS`, two coils
    with constant sensitivities, readout oversampled (encoded FOV x = oversampling · FOV x)."""
    hx = oversampling * H
    mx = (np.arange(hx) - hx // 2)[:, None] / (oversampling * FOV[0])  # cycles / mm
    my = (np.arange(W) - W // 2)[None, :] / FOV[1]
    k = np.empty((S, 2, hx, W), dtype=np.complex64)
    for s, (u, v) in enumerate(OFFSETS):
        phase = np.exp(-2j * np.pi * (mx * u * DX + my * v * DY))
        k[s, 0], k[s, 1] = phase, (0.5 - 0.7j) * phase
    return k


def _expected_lps(geometry: AcquisitionGeometry, s: int) -> np.ndarray:
    """Patient (LPS) position of slice ``s``'s point: slice centre (header position + table)
    plus its offset along read and phase."""
    u, v = OFFSETS[s]
    centre = np.asarray(geometry.positions[s])  # the writer stores position = centre - table
    return centre + u * DX * np.asarray(geometry.read_dir) + v * DY * np.asarray(geometry.phase_dir)


@pytest.fixture()
def oblique(tmp_path):
    geometry = _oblique()
    path = write_ismrmrd(
        tmp_path / "oblique.h5", _point_kspace(), fov_mm=FOV, oversampled=True, geometry=geometry
    )
    return read_ismrmrd(path), geometry


def test_affine_maps_the_reconstructed_point_to_its_patient_position(oblique):
    study, geometry = oblique
    assert study.kspace.shape == (S, 2, H, W) and study.frame_of_reference_uid
    image = zero_filled(study)
    affine = display_affine(study)
    np.testing.assert_allclose(affine, study.affine)
    for s in range(S):
        i, j = np.unravel_index(np.argmax(image[s]), image[s].shape)
        ras = (affine @ [j, i, s, 1.0])[:3]
        np.testing.assert_allclose(ras, LPS_TO_RAS @ _expected_lps(geometry, s), atol=1e-3)
    # voxel sizes: 6 mm in plane, the 6 mm slice gap (not the 5 mm thickness) between slices
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [DY, DX, 6.0], atol=1e-4)


def test_patient_table_position_moves_the_volume(tmp_path):
    geometry = _oblique()
    moved = AcquisitionGeometry(**{**geometry.__dict__, "table": (0.0, 0.0, -40.0)})
    a = read_ismrmrd(
        write_ismrmrd(
            tmp_path / "a.h5", _point_kspace(), fov_mm=FOV, oversampled=True, geometry=geometry
        )
    )
    b = read_ismrmrd(
        write_ismrmrd(
            tmp_path / "b.h5", _point_kspace(), fov_mm=FOV, oversampled=True, geometry=moved
        )
    )
    # same patient positions written (position = centre - table): same affine
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    with h5py.File(tmp_path / "b.h5", "r+") as f:  # now the header position alone stays
        rows = f["dataset/data"][()]
        rows["head"]["patient_table_position"][:, 2] += 10.0
        f["dataset/data"][...] = rows
    c = read_ismrmrd(tmp_path / "b.h5")
    np.testing.assert_allclose(c.affine[:3, 3] - b.affine[:3, 3], [0, 0, 10.0], atol=1e-4)


def test_nifti_and_dicom_outputs_carry_the_geometry(oblique, tmp_path):
    study, geometry = oblique
    image = zero_filled(study)
    nifti = write_nifti(tmp_path / "o.nii.gz", image, volume_like(study, image))
    img = nib.load(nifti)
    np.testing.assert_allclose(img.get_sform(), img.get_qform(), atol=1e-4)
    assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 1
    vol = np.asarray(img.dataobj)
    files = write_dicom_series(
        tmp_path / "dcm", image, series_like(study, image), description="test"
    )
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert datasets[0].FrameOfReferenceUID == study.frame_of_reference_uid
    for s, ds in enumerate(datasets):
        expected = _expected_lps(geometry, s)
        # NIfTI: the brightest voxel of slice s, through the sform, is the point (RAS)
        x, y = np.unravel_index(np.argmax(vol[..., s]), vol.shape[:2])
        np.testing.assert_allclose(
            (img.affine @ [x, y, s, 1.0])[:3], LPS_TO_RAS @ expected, atol=1e-3
        )
        # DICOM: IPP + column index · row cosine · column spacing + row index · ... (LPS)
        pixels = ds.pixel_array
        r, c = np.unravel_index(np.argmax(pixels), pixels.shape)
        o = np.asarray(ds.ImageOrientationPatient, float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        position = np.asarray(ds.ImagePositionPatient, float)
        lps = position + c * col_spacing * o[:3] + r * row_spacing * o[3:]
        np.testing.assert_allclose(lps, expected, atol=1e-3)
        np.testing.assert_allclose([row_spacing, col_spacing], [DX, DY], atol=1e-6)
        assert float(ds.SliceThickness) == pytest.approx(6.0)
        np.testing.assert_allclose(o[:3], geometry.phase_dir, atol=1e-6)  # along a row: phase
        np.testing.assert_allclose(o[3:], geometry.read_dir, atol=1e-6)  # down a column: read


def test_single_slice_steps_by_the_slice_thickness(tmp_path):
    geometry = AcquisitionGeometry(slice_dir=(0.0, 0.6, 0.8), phase_dir=(0.0, 0.8, -0.6))
    k = _point_kspace(oversampling=1)[:1]
    study = read_ismrmrd(write_ismrmrd(tmp_path / "one.h5", k, fov_mm=FOV, geometry=geometry))
    np.testing.assert_allclose(study.affine[:3, 2], LPS_TO_RAS @ [0.0, 0.6 * 5.0, 0.8 * 5.0])


def test_lines_without_directions_fall_back_to_the_axial_grid(tmp_path):
    path = write_ismrmrd(tmp_path / "bare.h5", _point_kspace(oversampling=1), fov_mm=FOV)
    with h5py.File(path, "r+") as f:
        rows = f["dataset/data"][()]
        for name in ("read_dir", "phase_dir", "slice_dir", "position"):
            rows["head"][name] = 0
        f["dataset/data"][...] = rows
    study = read_ismrmrd(path)
    assert study.affine is None and study.frame_of_reference_uid is None
    # the header-spacing axial grid of pipeline/io/geometry.py
    np.testing.assert_allclose(np.abs(np.diag(display_affine(study))[:3]), [DY, DX, FOV[2]])


def _edit_rows(path: Path, name: str, value: object, lines: slice = slice(None)) -> None:
    with h5py.File(path, "r+") as f:
        rows = f["dataset/data"][()]
        rows["head"][name][lines] = value
        f["dataset/data"][...] = rows


@pytest.mark.parametrize(
    ("name", "value", "lines", "reason"),
    [
        ("read_dir", np.nan, slice(None), "non-finite position or direction"),
        ("read_dir", (0.0, 1.0, 0.0), slice(None), "not orthonormal"),
        ("read_dir", (2.0, 0.0, 0.0), slice(None), "not orthonormal"),
        ("phase_dir", (1.0, 0.0, 0.0), slice(0, 5), "different read/phase/slice directions"),
        ("position", (0.0, 0.0, 3.0), slice(None), "not equally spaced"),
    ],
)
def test_bad_geometry_is_one_line(tmp_path, name, value, lines, reason):
    path = write_ismrmrd(tmp_path / "bad.h5", _point_kspace(oversampling=1), fov_mm=FOV)
    _edit_rows(path, name, value, lines)
    with pytest.raises(InputError) as info:
        read_ismrmrd(path)
    message = str(info.value)
    assert "\n" not in message and "bad.h5" in message and reason in message, message


# ----------------------------------------------------------------------------- ISMRMRD's tools

TOOLS = ("ismrmrd_generate_cartesian_shepp_logan", "ismrmrd_recon_cartesian_2d")
_MISSING = [t for t in TOOLS if shutil.which(t) is None]


@pytest.mark.skipif(
    bool(_MISSING), reason=f"ISMRMRD tools not installed ({', '.join(_MISSING)}; apt ismrmrd-tools)"
)
def test_orientation_agrees_with_ismrmrd_recon_cartesian_2d(tmp_path):
    """The generator's file reconstructed by ISMRMRD's own 2-D recon (``dataset/cpp``, an image
    ``[phase][readout]``): our zero-filled image in display layout is that image transposed
    (readout rows, phase-encode columns), and so is the generator's ``phantom``. The generator
    writes no acquisition geometry (zero direction vectors) and ismrmrd 1.8's recon writes none
    into its image header, so the study falls back to the header-spacing axial grid."""
    raw = tmp_path / "testdata.h5"
    run = {"cwd": tmp_path, "check": True, "capture_output": True, "timeout": 120}
    subprocess.run([TOOLS[0], "-m", "64", "-c", "4", "-O", "2", "-o", str(raw)], **run)
    subprocess.run([TOOLS[1], str(raw)], **run)  # appends its image to the file
    study = read_ismrmrd(raw)
    ours = zero_filled(study)[0]
    with h5py.File(raw, "r") as f:
        theirs = np.asarray(f["dataset/cpp/data"][()]).reshape(64, 64)
        phantom = f["dataset/phantom"][0]
        header = f["dataset/cpp/header"][0]
    phantom = np.abs(phantom["real"] + 1j * phantom["imag"])
    assert ours.shape == (64, 64) and tuple(header["matrix_size"][:2]) == (64, 64)
    assert np.corrcoef(ours.ravel(), theirs.T.ravel())[0, 1] > 0.99
    assert np.corrcoef(ours.ravel(), phantom.T.ravel())[0, 1] > 0.95
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] < 0.9  # the layout matters
    assert study.affine is None
    spacing = float(header["field_of_view"][0]) / 64  # 300 mm / 64 both ways
    np.testing.assert_allclose(np.abs(np.diag(display_affine(study))[:2]), [spacing, spacing])
