"""Where the voxels of an ISMRMRD volume are in the patient: the display affine from the
acquisition headers.

ISMRMRD acquisition headers carry, per line, ``position`` (the centre of the excited slice or
slab, mm), the unit vectors ``read_dir``, ``phase_dir``, ``slice_dir`` and
``patient_table_position`` (mm), in the scanner's patient coordinates: DICOM's LPS (x → patient
left, y → posterior, z → superior). The patient-coordinate centre of a slice is taken as
``position + patient_table_position``.

Our k-space is ``(S, C, H, W)`` with ``H`` the readout and ``W`` the phase encode, and images come
from the centred FFT, so pixel ``(i, j)`` of slice ``k`` (row ``i``, column ``j``) lies at

    c_k + (i - H // 2) · dx · read_dir + (j - W // 2) · dy · phase_dir

with ``c_k`` the centre of slice ``k``, ``dx``, ``dy`` the encoded FOV / encoded matrix along the
readout and phase encode. For 3-D encodings partition ``p`` of ``Nz`` (before the recon crop)
lies at ``c + (p - Nz // 2) · dz · slice_dir``, ``dz`` = encoded z FOV / ``Nz``. The slice centres
must be equally spaced (one affine per volume); a single 2-D slice steps by the slice thickness
(encoded z FOV) along ``slice_dir``.

The display affine ``A`` (RAS+, :mod:`sgilo.pipeline.io.geometry`) maps ``(j, i, k, 1)`` to
``diag(-1, -1, 1, 1)`` (LPS → RAS) times the position above.

Files without geometry (all direction vectors zero, as a minimal writer leaves them) give
``None`` (the axial fallback of :mod:`sgilo.pipeline.io.geometry`); inconsistent geometry is
refused with an :class:`~sgilo.pipeline.io.types.InputError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sgilo.pipeline.io.ismrmrd_header import ismrmrd_error

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: tolerance on |direction| - 1 and on dot products of the direction vectors (float32 headers)
DIRECTION_TOLERANCE = 1e-2
#: tolerance on slice gaps relative to the median gap (as the DICOM reader's)
SPACING_TOLERANCE = 0.10
_DIRS = ("read_dir", "phase_dir", "slice_dir")


def _directions(path: Path, head: np.ndarray) -> np.ndarray | None:
    """The ``(3, 3)`` read, phase, slice directions shared by the lines ``head`` (rows), or
    ``None`` when they are all zero."""
    dirs = np.stack([np.asarray(head[d], dtype=np.float64) for d in _DIRS], axis=1)  # (n, 3, 3)
    pos = np.asarray(head["position"], dtype=np.float64)
    table = np.asarray(head["patient_table_position"], dtype=np.float64)
    if not (np.isfinite(dirs).all() and np.isfinite(pos).all() and np.isfinite(table).all()):
        raise ismrmrd_error(path, "bad geometry: non-finite position or direction in the lines")
    if not dirs.any():
        return None
    first = dirs[0]
    if np.abs(dirs - first).max() > DIRECTION_TOLERANCE:
        raise ismrmrd_error(
            path, "bad geometry: the lines of one volume have different read/phase/slice directions"
        )
    norms = np.linalg.norm(first, axis=1)
    gram = first @ first.T
    off = np.abs(gram - np.diag(np.diag(gram))).max()
    if np.abs(norms - 1).max() > DIRECTION_TOLERANCE or off > DIRECTION_TOLERANCE:
        raise ismrmrd_error(
            path,
            f"bad geometry: read/phase/slice directions are not orthonormal "
            f"(lengths {np.round(norms, 3).tolist()}, largest dot product {off:.3g})",
        )
    return first / norms[:, None]


def slice_centres(
    head: np.ndarray,
    slice_index: np.ndarray,
    slices: int,
    partitions: tuple[int, int, int] | None,
    slice_dir: np.ndarray,
    dz: float,
) -> np.ndarray:
    """Patient-coordinate centres (LPS, mm) of the output slices: float64 ``(S_out, 3)``.

    Args:
        head: the volume's imaging lines' acquisition headers.
        slice_index: their ``idx.slice``.
        slices: number of slices (2-D) or slabs (3-D).
        partitions: for 3-D, ``(Nz, first, count)``: the encoded partitions and the recon crop
            (output slices ``first .. first + count - 1`` of each slab); ``None`` for 2-D.
        slice_dir: unit slice direction (3,).
        dz: partition spacing (mm; 3-D only).
    """
    centres = []
    for s in range(slices):
        line = np.flatnonzero(slice_index == s)[0]
        c = np.asarray(head["position"][line], np.float64) + np.asarray(
            head["patient_table_position"][line], np.float64
        )
        if partitions is None:
            centres.append(c)
            continue
        nz, first, count = partitions
        for p in range(first, first + count):
            centres.append(c + (p - nz // 2) * dz * slice_dir)
    return np.asarray(centres)


def acquisition_affine(
    path: Path,
    head: np.ndarray,
    slice_index: np.ndarray,
    grid: tuple[int, int, int],
    spacing: tuple[float, float, float],
    partitions: tuple[int, int, int] | None = None,
) -> np.ndarray | None:
    """The display affine (float64 4×4, RAS+) of one volume, or ``None`` without geometry.

    Args:
        path: the file (for messages).
        head: acquisition headers of the volume's imaging lines.
        slice_index: their ``idx.slice``.
        grid: ``(slices or slabs, H, W)``.
        spacing: ``(dx, dy, dz)`` mm: readout, phase encode, and the slice thickness (2-D) or
            partition spacing (3-D).
        partitions: see :func:`slice_centres`.

    Raises:
        InputError: non-finite, non-orthonormal or differing directions; unequally spaced or
            coincident slices.
    """
    dirs = _directions(path, head)
    if dirs is None:
        return None
    read_dir, phase_dir, slice_dir = dirs
    slices, h, w = grid
    dx, dy, dz = spacing
    centres = slice_centres(head, slice_index, slices, partitions, slice_dir, dz)
    if len(centres) == 1:
        step = slice_dir * dz
    else:
        gaps = np.diff(centres, axis=0)
        step = gaps.mean(axis=0)
        length = float(np.linalg.norm(step))
        worst = float(np.linalg.norm(gaps - step, axis=1).max())
        if length < 1e-4 or worst > SPACING_TOLERANCE * length:
            raise ismrmrd_error(
                path,
                f"bad geometry: slice centres are not equally spaced (mean gap {length:.4g} mm, "
                f"a gap differs by {worst:.4g} mm)",
            )
    lps = np.eye(4)
    lps[:3, 0] = phase_dir * dy  # column index j: phase encode
    lps[:3, 1] = read_dir * dx  # row index i: readout
    lps[:3, 2] = step
    lps[:3, 3] = centres[0] - (w // 2) * lps[:3, 0] - (h // 2) * lps[:3, 1]
    return LPS_TO_RAS @ lps
