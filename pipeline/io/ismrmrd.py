"""ISMRMRD raw-data files (HDF5 group ``dataset`` with ``xml`` and ``data``): read Cartesian
acquisitions (2-D multi-slice or 3-D) as k-space studies, one per volume.

Reading (:func:`read_ismrmrd_volumes`), each step in its own module:

- the XML header (:mod:`~sgilo.pipeline.io.ismrmrd_header`) gives the encoded and recon matrices
  and fields of view, channels, slices, the k-space centres and the calibration mode;
- the acquisition table (:mod:`~sgilo.pipeline.io.ismrmrd_table`) is sorted by the line flags
  into imaging, noise-measurement and parallel-calibration lines (navigators, phase correction,
  dummy scans, feedback and stabilisation lines are skipped);
- noise lines give the noise covariance; every volume (and its calibration k-space) is
  pre-whitened with it and the noise std recorded (:mod:`~sgilo.pipeline.io.ismrmrd_noise`);
- imaging lines are split into volumes by contrast, phase, repetition and set
  (:mod:`~sgilo.pipeline.io.ismrmrd_dimensions`; a selection keeps some); averages are
  averaged;
- each volume's lines are placed on its grid, 3-D encodings transformed along the partitions,
  readout oversampling removed, and the result put in the fastMRI layout ``(S, C, H, W)``
  (readout rows, phase-encode columns; :mod:`~sgilo.pipeline.io.ismrmrd_assemble`);
- calibration lines (``ACQ_IS_PARALLEL_CALIBRATION`` and ``..._AND_IMAGING``) become the
  study's calibration k-space, from which the coil maps are estimated; with the header's
  calibration mode ``embedded`` the calibration-only lines are also imaging data (same
  contrast and grid) and join the volume's k-space;
- the acquisition headers' geometry gives the study's display affine
  (:mod:`~sgilo.pipeline.io.ismrmrd_geometry`).

The mask is ``None`` when a volume's sampled lines are one contiguous run (fully sampled,
possibly with partial-Fourier edges), as for fastMRI files. Every bad input raises
:class:`~sgilo.pipeline.io.types.InputError` with a one-line message naming the file; nothing is
returned for a file with any bad volume.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from sgilo.pipeline.io.fastmri import MAX_COILS, MAX_GRID, MAX_SLICES, center_run_length
from sgilo.pipeline.io.ismrmrd_assemble import place_lines
from sgilo.pipeline.io.ismrmrd_dimensions import (
    MAX_VOLUMES,
    VOLUME_COUNTERS,
    Selection,
    current_selection,
    selected,
    varying,
    volume_keys,
    volume_name,
)
from sgilo.pipeline.io.ismrmrd_geometry import acquisition_affine
from sgilo.pipeline.io.ismrmrd_header import (
    IsmrmrdHeader,
    header_geometry,
    ismrmrd_error,
    read_header,
)
from sgilo.pipeline.io.ismrmrd_noise import NoiseWhitening, noise_whitening
from sgilo.pipeline.io.ismrmrd_table import LineKinds, check_table, classify
from sgilo.pipeline.io.ismrmrd_write import write_ismrmrd
from sgilo.pipeline.io.limits import check_file, current_limits
from sgilo.pipeline.io.types import InputError, KSpaceStudy

__all__ = ["header_geometry", "is_ismrmrd", "read_ismrmrd", "read_ismrmrd_volumes", "write_ismrmrd"]


def is_ismrmrd(f: h5py.File) -> bool:
    """Whether an open HDF5 file looks like ISMRMRD (a ``dataset`` group with ``xml`` or
    ``data``)."""
    group = f.get("dataset")
    return isinstance(group, h5py.Group) and ("xml" in group or "data" in group)


def read_ismrmrd(path: str | os.PathLike[str]) -> KSpaceStudy:
    """Read an ISMRMRD file of one volume (:func:`read_ismrmrd_volumes`); a file with several
    volumes is refused (one line naming them)."""
    studies = read_ismrmrd_volumes(path)
    if len(studies) != 1:
        names = ", ".join(s.name for s in studies[:4])
        raise ismrmrd_error(
            Path(path), f"{len(studies)} volumes ({names}...); read them with read_ismrmrd_volumes"
        )
    return studies[0]


def read_ismrmrd_volumes(
    path: str | os.PathLike[str], selection: Selection | None = None
) -> list[KSpaceStudy]:
    """Read a Cartesian ISMRMRD file as one k-space study per volume (contrast, phase,
    repetition, set), in the order of their counters; ``selection`` keeps some volumes
    (:func:`~sgilo.pipeline.io.ismrmrd_dimensions.selected`; default: the one in force,
    :func:`~sgilo.pipeline.io.ismrmrd_dimensions.volume_selection`).

    Each study: ``kspace`` complex64 ``(slices, coils, H, W)`` (``H`` readout after 2×
    oversampling removal, ``W`` phase encode; 3-D encodings give ``slabs × partitions`` slices),
    ``mask`` bool ``(W,)`` or ``None`` if fully sampled, ``ismrmrd_header`` the XML text,
    ``affine`` / ``frame_of_reference_uid`` from the acquisition geometry, ``noise_std`` from
    noise scans, ``calibration`` / ``calibration_mask`` from calibration lines, ``attrs`` the
    volume's counters (``{"contrast": 0, "phase": 0, "repetition": 1, "set": 0}``).

    Raises:
        InputError: missing or non-HDF5 file, no ``dataset`` group, no or invalid XML header,
            no (imaging) acquisitions, non-Cartesian encoding, several encodings, channel or
            sample counts that differ from the header or between lines, absurd sizes or
            counts, a declared k-space above the voxel limit (refused before allocating it),
            line indices outside the encoded matrix, a slice or 3-D partition without data,
            slices sampling different lines, volumes sampling different numbers of lines, bad
            geometry, a bad noise scan, non-finite data, a selection matching no volume.
    """
    path = Path(path)
    selection = current_selection() if selection is None else selection
    check_file(path)  # a regular, readable, non-empty file within the byte limit
    try:
        if not h5py.is_hdf5(path):
            raise ismrmrd_error(path, "not an HDF5 file (ISMRMRD files are HDF5)")
        with h5py.File(path, "r") as f:
            group = f.get("dataset")
            if not isinstance(group, h5py.Group):
                raise ismrmrd_error(path, "not an ISMRMRD file (no 'dataset' group)")
            hdr = read_header(path, group)
            rows = check_table(path, group.get("data"))[()]
    except InputError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise ismrmrd_error(path, f"corrupt or truncated ISMRMRD file ({exc})") from exc
    kinds = classify(path, rows)
    return _volumes(path, hdr, rows, kinds, selection)


def _check_encoding(path: Path, hdr: IsmrmrdHeader, rows: np.ndarray, kinds: LineKinds) -> int:
    """Refuse unsupported or absurd encodings; return the channel count."""
    head = rows["head"]
    if hdr.trajectory != "cartesian" or np.any(head["trajectory_dimensions"][kinds.imaging] > 0):
        raise ismrmrd_error(
            path, f"trajectory {hdr.trajectory!r} is not supported (Cartesian only)"
        )
    if hdr.encodings != 1:
        raise ismrmrd_error(path, f"{hdr.encodings} encodings in the header; only one is supported")
    lines = np.concatenate([kinds.imaging, kinds.calibration])
    coils = np.unique(head["active_channels"][lines])
    if coils.size != 1 or (hdr.channels is not None and coils[0] != hdr.channels):
        raise ismrmrd_error(
            path,
            f"inconsistent sizes: lines have {sorted(coils.tolist())} channels, header "
            f"receiverChannels {hdr.channels}",
        )
    nx, ny, nz = hdr.encoded
    if not (0 < nx <= MAX_GRID and 0 < ny <= MAX_GRID and 0 < nz <= MAX_GRID):
        raise ismrmrd_error(path, f"absurd sizes: encoded matrix {nx} x {ny} x {nz}")
    if not 0 < int(coils[0]) <= MAX_COILS:
        raise ismrmrd_error(path, f"absurd sizes: {int(coils[0])} channels")
    if nz == 1 and np.any(head["idx"]["kspace_encode_step_2"][lines] != 0):
        raise ismrmrd_error(
            path, "inconsistent sizes: partition indices in a 2-D encoding (encoded z = 1)"
        )
    return int(coils[0])


def _volumes(
    path: Path, hdr: IsmrmrdHeader, rows: np.ndarray, kinds: LineKinds, selection: Selection | None
) -> list[KSpaceStudy]:
    if kinds.imaging.size == 0:
        raise ismrmrd_error(
            path, f"no imaging acquisitions among {len(rows)} (all noise/calibration)"
        )
    coils = _check_encoding(path, hdr, rows, kinds)
    idx = rows["head"]["idx"]
    slice_idx = idx["slice"].astype(int)
    slices = hdr.slices or int(slice_idx[kinds.imaging].max()) + 1
    nx, ny, nz = hdr.encoded
    out_z = hdr.recon[2] if 0 < hdr.recon[2] < nz else nz
    if not 0 < slices * out_z <= MAX_SLICES or slice_idx[kinds.imaging].max() >= slices:
        raise ismrmrd_error(
            path,
            f"inconsistent sizes: slice index {slice_idx[kinds.imaging].max()} of {slices} "
            f"(x {out_z} partitions; at most {MAX_SLICES} slices)",
        )
    keys = volume_keys(idx)
    unique = np.unique(keys[kinds.imaging], axis=0)
    if len(unique) > MAX_VOLUMES:
        raise ismrmrd_error(
            path, f"absurd counts: {len(unique)} volumes (contrast x phase x repetition x set)"
        )
    names = varying(keys[kinds.imaging])
    chosen = [tuple(int(v) for v in key) for key in unique if selected(tuple(key), selection)]
    if not chosen:
        raise ismrmrd_error(path, f"the volume selection {selection} matches none of the volumes")
    max_samples = current_limits().max_voxels
    total = len(chosen) * slices * coils * nz * ny * nx
    if total > max_samples:  # refused before allocating
        raise ismrmrd_error(
            path,
            f"k-space of {len(chosen)} volume(s) x {slices} slices x {coils} channels x {nx} x "
            f"{ny} x {nz} is too large (<= {max_samples} samples in all: --max-input-voxels)",
        )
    _check_same_lines(path, rows, kinds.imaging, keys, chosen)
    dwell = float(np.median(rows["head"]["sample_time_us"][kinds.imaging]))
    whitening = noise_whitening(path, rows, kinds.noise, coils, dwell)
    uid = hdr.frame_of_reference_uid or _new_uid()
    studies = []
    for key in chosen:
        name = volume_name(path.stem, key, names)
        studies.append(
            _volume(path, hdr, rows, kinds, key, name, coils, slices, whitening, uid, keys)
        )
    return studies


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def _volume(
    path: Path,
    hdr: IsmrmrdHeader,
    rows: np.ndarray,
    kinds: LineKinds,
    key: tuple[int, ...],
    name: str,
    coils: int,
    slices: int,
    whitening: NoiseWhitening | None,
    uid: str,
    keys: np.ndarray,
) -> KSpaceStudy:
    """One volume as a study (see :func:`read_ismrmrd_volumes`)."""
    what = f"{name}: " if name != path.stem else ""
    mine = np.all(keys == np.asarray(key), axis=1)
    lines = kinds.imaging[mine[kinds.imaging]]
    if hdr.calibration_mode == "embedded":
        extra = kinds.calibration_only[mine[kinds.calibration_only]]
        lines = np.sort(np.concatenate([lines, extra]))
    placed = place_lines(path, hdr, rows, lines, coils, slices, what)
    kspace = placed.kspace if whitening is None else whitening.apply(placed.kspace)
    calibration, calibration_mask = _calibration(
        path, hdr, rows, kinds, keys, key, coils, slices, whitening, what
    )
    h, w = kspace.shape[-2:]
    head = rows["head"][lines]
    affine = acquisition_affine(
        path,
        head,
        head["idx"]["slice"].astype(int),
        (slices, h, w),
        hdr.spacing_mm,
        placed.partitions,
    )
    mask: np.ndarray | None = placed.mask
    if mask.all() or _contiguous(mask):
        mask = None
    noise_std = None if whitening is None else whitening.std / float(np.sqrt(placed.averages))
    return KSpaceStudy(
        name=name,
        source=path,
        kspace=kspace,
        multicoil=coils > 1,
        mask=mask,
        acceleration=None if mask is None else mask.size / int(mask.sum()),
        num_low_frequencies=None if mask is None else center_run_length(mask),
        attrs=dict(zip(VOLUME_COUNTERS, key, strict=True)),
        ismrmrd_header=hdr.xml,
        affine=affine,
        frame_of_reference_uid=uid if affine is not None else None,
        noise_std=noise_std,
        calibration=calibration,
        calibration_mask=calibration_mask,
    )


def _calibration(
    path: Path,
    hdr: IsmrmrdHeader,
    rows: np.ndarray,
    kinds: LineKinds,
    keys: np.ndarray,
    key: tuple[int, ...],
    coils: int,
    slices: int,
    whitening: NoiseWhitening | None,
    what: str,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The calibration k-space of a volume and its ``(W,)`` mask: the calibration lines of the
    same volume key, else those of the first key that has any (a reference scan acquired once);
    ``(None, None)`` without calibration lines."""
    cal = kinds.calibration
    if cal.size == 0:
        return None, None
    mine = np.all(keys[cal] == np.asarray(key), axis=1)
    if not mine.any():
        first = np.unique(keys[cal], axis=0)[0]
        mine = np.all(keys[cal] == first, axis=1)
    placed = place_lines(path, hdr, rows, cal[mine], coils, slices, f"{what}reference scan: ")
    kspace = placed.kspace if whitening is None else whitening.apply(placed.kspace)
    return kspace, placed.mask


def _contiguous(mask: np.ndarray) -> bool:
    idx = np.flatnonzero(mask)
    return bool(mask[idx[0] : idx[-1] + 1].all())


def _check_same_lines(
    path: Path, rows: np.ndarray, imaging: np.ndarray, keys: np.ndarray, chosen: list[tuple]
) -> None:
    """Refuse volumes that sample different numbers of (slice, partition, phase-encode) lines:
    a truncated or inconsistent file, whose volumes cannot be reconstructed alike. Checked from
    the line headers, before any k-space is allocated."""
    idx = rows["head"]["idx"][imaging]
    places = np.stack(
        [
            idx[n].astype(np.int64)
            for n in ("slice", "kspace_encode_step_2", "kspace_encode_step_1")
        ],
        axis=1,
    )
    counts = []
    for key in chosen:
        mine = np.all(keys[imaging] == np.asarray(key), axis=1)
        counts.append(len(np.unique(places[mine], axis=0)))
    if len(set(counts)) <= 1:
        return
    bad = next(i for i, c in enumerate(counts) if c != counts[0])
    names = varying(keys[imaging])
    label = ", ".join(
        f"{np.unique(keys[imaging][:, VOLUME_COUNTERS.index(n)]).size} values of {n}" for n in names
    )
    raise ismrmrd_error(
        path,
        f"inconsistent dimensions: {label} sample different numbers of lines "
        f"({volume_name(path.stem, chosen[bad], names)}: {counts[bad]}, "
        f"{volume_name(path.stem, chosen[0], names)}: {counts[0]})",
    )
