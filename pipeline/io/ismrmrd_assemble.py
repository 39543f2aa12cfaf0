"""Place the readout lines of one ISMRMRD volume on its Cartesian grid and bring it to the
project's layout: complex64 ``(S, C, H, W)``, ``H`` the readout, ``W`` the phase encode.

- line ``i`` goes to phase-encode row ``ky = idx.kspace_encode_step_1 + Ny // 2 - ky_centre``
  (the header's ``encodingLimits.kspace_encoding_step_1.center``), partition
  ``kz = idx.kspace_encode_step_2 + Nz // 2 - kz_centre`` and slice (2-D) or slab (3-D)
  ``idx.slice``; its ``center_sample`` lands at ``kx = Nx // 2``. Repeated lines (averages) are
  averaged;
- **3-D** (encoded ``z = Nz > 1``): every partition must be sampled (the same phase-encode lines in
  each); a centred orthonormal inverse FFT along the partitions gives ``Nz`` 2-D slices per slab,
  cropped (centred) to the recon ``z`` when it is smaller (slice oversampling); slabs are stacked
  (slab-major);
- the ``(ky, kx)`` planes are transposed to ``(kx, ky)``: the fastMRI layout (readout rows);
- 2× readout oversampling (encoded ``x`` = 2 × recon ``x``) is removed by an inverse FFT along the
  readout, a centred crop and a forward FFT (centred, orthonormal: kept image values unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgilo.operators.fft import centred_fft_axis
from sgilo.pipeline.io.ismrmrd_header import IsmrmrdHeader, ismrmrd_error
from sgilo.pipeline.io.ismrmrd_table import line_values


@dataclass
class Placed:
    """One volume on its grid.

    Attributes:
        kspace: complex64 ``(S_out, C, H, W)``.
        mask: bool ``(W,)``, the sampled phase-encode lines (shared by all slices).
        averages: the median number of lines averaged per sampled line.
        partitions: for 3-D, ``(Nz, first, count)`` (see
            :func:`sgilo.pipeline.io.ismrmrd_geometry.slice_centres`); ``None`` for 2-D.
    """

    kspace: np.ndarray
    mask: np.ndarray
    averages: float
    partitions: tuple[int, int, int] | None


def crop_readout(kspace: np.ndarray, size: int) -> np.ndarray:
    """Remove readout oversampling: centred orthonormal inverse FFT along ``H`` (axis -2), keep
    the central ``size`` rows, FFT back. ``kspace``: complex ``(S, C, H, W)``."""
    image = centred_fft_axis(kspace, -2, inverse=True)
    start = (kspace.shape[-2] - size) // 2
    return centred_fft_axis(image[..., start : start + size, :], -2)


def place_lines(
    path: Path,
    hdr: IsmrmrdHeader,
    rows: np.ndarray,
    lines: np.ndarray,
    coils: int,
    slices: int,
    what: str = "",
) -> Placed:
    """Place the acquisition table rows ``lines`` (row indices of ``rows``) of one volume.

    Args:
        path: the file (for messages).
        hdr: the parsed header.
        rows: the acquisition table.
        lines: row indices of the volume's lines.
        coils, slices: number of channels and of slices (2-D) or slabs (3-D).
        what: a prefix naming the volume in messages (``"repetition 1: "``).

    Raises:
        InputError: a line outside the encoded matrix, a slice (or a 3-D partition) without
            lines, slices or partitions sampling different phase-encode lines, non-finite
            values.
    """
    nx, ny, nz = hdr.encoded
    head = rows["head"][lines]
    idx = head["idx"]
    samples, centre = head["number_of_samples"].astype(int), head["center_sample"].astype(int)
    ky = idx["kspace_encode_step_1"].astype(int) + ny // 2 - (hdr.ky_center or ny // 2)
    kz = np.zeros_like(ky)
    if nz > 1:
        kz = idx["kspace_encode_step_2"].astype(int) + nz // 2 - (hdr.kz_center or nz // 2)
    sl = idx["slice"].astype(int)
    grid = np.zeros((slices, coils, nz, ny, nx), dtype=np.complex64)
    counts = np.zeros((slices, nz, ny), dtype=np.int64)
    for j, i in enumerate(lines):
        ns = int(samples[j])
        c0 = int(centre[j]) or ns // 2
        x0 = nx // 2 - c0
        if not (0 <= ky[j] < ny and 0 <= x0 and x0 + ns <= nx):
            raise ismrmrd_error(
                path,
                f"{what}inconsistent sizes: acquisition {i} (line {ky[j]}, {ns} samples, centre "
                f"{c0}) does not fit the encoded matrix {nx} x {ny}",
            )
        if not 0 <= kz[j] < nz:
            raise ismrmrd_error(
                path,
                f"{what}inconsistent sizes: acquisition {i} (partition {kz[j]}) does not fit the "
                f"encoded z = {nz}",
            )
        grid[sl[j], :, kz[j], ky[j], x0 : x0 + ns] += line_values(path, rows, int(i), coils)
        counts[sl[j], kz[j], ky[j]] += 1
    if not np.isfinite(grid).all():
        raise ismrmrd_error(path, f"{what}acquisitions contain non-finite values (NaN or Inf)")
    sampled = counts > 0
    empty = np.flatnonzero(~sampled.any(axis=(1, 2)))
    if empty.size:
        raise ismrmrd_error(path, f"{what}slice {int(empty[0])} of {slices} has no acquisitions")
    if nz > 1:
        missing = np.flatnonzero(~sampled.any(axis=(0, 2)))
        if missing.size:
            raise ismrmrd_error(
                path,
                f"{what}3-D encoding (encoded z = {nz}): partition {int(missing[0])} has no "
                f"acquisitions (the partition direction must be fully sampled)",
            )
    if not (sampled == sampled[0, 0]).all():
        raise ismrmrd_error(
            path,
            f"{what}slices or partitions sample different phase-encode lines (one mask is needed)",
        )
    grid /= np.maximum(counts, 1)[:, None, :, :, None]
    partitions = None
    if nz > 1:
        grid = centred_fft_axis(grid, 2, inverse=True)
        rz = hdr.recon[2]
        count = rz if 0 < rz < nz else nz
        first = (nz - count) // 2
        grid = grid[:, :, first : first + count]
        partitions = (nz, first, count)
    # (slabs, C, z, ky, kx) -> (slabs * z, C, kx, ky): readout rows H, phase-encode columns W
    kspace = grid.transpose(0, 2, 1, 4, 3).reshape(-1, coils, nx, ny)
    if nx == 2 * hdr.recon[0]:
        kspace = crop_readout(kspace, hdr.recon[0])
    mask = sampled[0, 0].copy()
    return Placed(
        kspace=np.ascontiguousarray(kspace, dtype=np.complex64),
        mask=mask,
        averages=float(np.median(counts[sampled])),
        partitions=partitions,
    )
