"""ISMRMRD raw-data files (HDF5 group ``dataset`` with ``xml`` and ``data``): read 2-D Cartesian
acquisitions into a k-space study; write such files (for tests and examples).

Reading (:func:`read_ismrmrd`):

- the XML header (parsed with the ``ismrmrd`` package's schema classes) gives the encoded and
  recon matrices and fields of view, the number of receiver channels and slices;
- every imaging acquisition (one readout line: ``(channels, samples)``) is placed by
  ``idx.kspace_encode_step_1`` (phase encode, shifted so that the header's
  ``encodingLimits.kspace_encoding_step_1.center`` lands at ``ky = Ny // 2``) and ``idx.slice``;
  its ``center_sample`` lands at ``kx = Nx // 2``. Lines flagged ``ACQ_IS_REVERSE`` are flipped.
  Repeated lines (averages) are averaged;
- skipped by their flags: noise measurements, calibration-only lines
  (``ACQ_IS_PARALLEL_CALIBRATION``; ``..._CALIBRATION_AND_IMAGING`` lines are kept), navigators,
  phase correction, dummy scans, feedback, surface-coil correction and phase stabilisation;
- **layout**: lines are gathered as ``(slices, coils, ky, kx)`` and then transposed to the fastMRI
  layout ``(slices, coils, kx, ky)`` = ``(S, C, H, W)``: the readout is ``H`` (rows) and the
  phase encode is ``W`` (columns), so the sampled phase-encode lines become the column mask
  ``(W,)`` as in fastMRI files (whose ``kspace`` is also readout × phase encode);
- 2× readout oversampling (encoded ``x`` = 2 × recon ``x``) is removed by an inverse FFT along
  the readout, a centred crop to the recon ``x`` and a forward FFT (centred, orthonormal: the
  image values of the kept region are unchanged);
- the mask is ``None`` when the sampled lines are one contiguous run (fully sampled, possibly
  with partial-Fourier edges), as for fastMRI files.

Only 2-D Cartesian data with one contrast, phase, repetition and set is read; anything else
raises :class:`~sgilo.pipeline.io.types.InputError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import h5py
import numpy as np

from sgilo.pipeline.io.fastmri import (
    MAX_COILS,
    MAX_GRID,
    MAX_HEADER_BYTES,
    MAX_SLICES,
    center_run_length,
)
from sgilo.pipeline.io.limits import check_dataset_size, check_file, current_limits, shown_name
from sgilo.pipeline.io.types import InputError, KSpaceStudy

#: acquisition flags (bit numbers, ``ismrmrd.constants``) of lines that are not image data
SKIPPED_FLAGS = {
    19: "noise measurement",
    20: "parallel calibration only",
    23: "navigation",
    24: "phase correction",
    26: "HP feedback",
    27: "dummy scan",
    28: "RT feedback",
    29: "surface coil correction",
    30: "phase stabilisation reference",
    31: "phase stabilisation",
}
ACQ_IS_REVERSE = 22
_ONE_ONLY = ("contrast", "phase", "repetition", "set")


def _error(path: Path, what: str) -> InputError:
    """An InputError whose message is one line: ``<file name>: <what>``."""
    return InputError(f"{shown_name(path)}: {' '.join(what.split())}")


def _flag(bit: int) -> np.uint64:
    return np.uint64(1) << np.uint64(bit - 1)


def is_ismrmrd(f: h5py.File) -> bool:
    """Whether an open HDF5 file looks like ISMRMRD (a ``dataset`` group with ``xml`` or
    ``data``)."""
    group = f.get("dataset")
    return isinstance(group, h5py.Group) and ("xml" in group or "data" in group)


# ----------------------------------------------------------------------------- header


def _header(path: Path, group: h5py.Group) -> tuple[str, dict]:
    """The XML text and the fields used here: encoded/recon ``(x, y, z)`` matrices and FOVs
    (mm), receiver channels (or ``None``), number of slices (or ``None``), the phase-encode
    centre (or ``None``) and the trajectory."""
    import ismrmrd.xsd

    ds = group.get("xml")
    if not isinstance(ds, h5py.Dataset) or ds.size == 0:
        raise _error(path, "ISMRMRD file without an XML header (dataset/xml)")
    if ds.size > 1 or ds.dtype.itemsize > MAX_HEADER_BYTES or ds.dtype.kind not in "SOU":
        raise _error(
            path,
            f"dataset/xml has shape {ds.shape} and dtype {ds.dtype}: expected one string of at "
            f"most {MAX_HEADER_BYTES} bytes",
        )
    raw = ds[()]
    raw = raw.reshape(-1)[0] if isinstance(raw, np.ndarray) else raw
    xml = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        header = ismrmrd.xsd.CreateFromDocument(xml)
        enc = header.encoding[0]
    except Exception as exc:  # xsdata raises several types for bad XML
        raise _error(path, f"invalid ISMRMRD XML header ({type(exc).__name__}: {exc})") from exc
    limits = enc.encodingLimits
    system = header.acquisitionSystemInformation
    e, r = enc.encodedSpace, enc.reconSpace
    fields = {
        "encoded": (int(e.matrixSize.x), int(e.matrixSize.y), int(e.matrixSize.z)),
        "recon": (int(r.matrixSize.x), int(r.matrixSize.y), int(r.matrixSize.z)),
        "encoded_fov": (e.fieldOfView_mm.x, e.fieldOfView_mm.y, e.fieldOfView_mm.z),
        "recon_fov": (r.fieldOfView_mm.x, r.fieldOfView_mm.y, r.fieldOfView_mm.z),
        "channels": None if system is None else system.receiverChannels,
        "slices": None if limits.slice is None else int(limits.slice.maximum) + 1,
        "ky_center": None
        if limits.kspace_encoding_step_1 is None
        else int(limits.kspace_encoding_step_1.center),
        "trajectory": getattr(enc.trajectory, "value", str(enc.trajectory)),
        "encodings": len(header.encoding),
    }
    return xml, fields


def header_geometry(xml: str) -> dict | None:
    """Pixel spacing from an ISMRMRD header: ``{"encoded": (x, y, z), "spacing_mm": (dx, dy,
    dz)}`` with ``d = encoded FOV / encoded matrix`` per axis (readout x, phase y, slice z);
    ``None`` if the header cannot be parsed or a value is not positive."""
    import ismrmrd.xsd

    try:
        enc = ismrmrd.xsd.CreateFromDocument(xml).encoding[0].encodedSpace
        matrix = (int(enc.matrixSize.x), int(enc.matrixSize.y), int(enc.matrixSize.z))
        fov = (enc.fieldOfView_mm.x, enc.fieldOfView_mm.y, enc.fieldOfView_mm.z)
        spacing = tuple(float(f) / n for f, n in zip(fov, matrix, strict=True))
    except Exception:  # a header we cannot use for geometry: the caller falls back
        return None
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        return None
    return {"encoded": matrix, "spacing_mm": spacing}


# ----------------------------------------------------------------------------- reading


def read_ismrmrd(path: str | os.PathLike[str]) -> KSpaceStudy:
    """Read a 2-D Cartesian ISMRMRD file as a k-space study.

    Returns ``kspace`` complex64 ``(slices, coils, H, W)`` with ``H`` the readout (after 2×
    oversampling removal) and ``W`` the phase encode; ``mask`` bool ``(W,)`` of the sampled
    phase-encode lines (``None`` if fully sampled); ``ismrmrd_header`` the XML text;
    ``multicoil`` is true for more than one receiver channel.

    Raises:
        InputError: missing or non-HDF5 file, no ``dataset`` group, no or invalid XML header,
            no (imaging) acquisitions, non-Cartesian or 3-D encoding, several contrasts /
            phases / repetitions / sets or encodings, channel or sample counts that differ
            from the header or between lines, a declared k-space above the voxel limit
            (:mod:`sgilo.pipeline.io.limits`; refused before allocating it),
            line indices outside the encoded matrix, a slice without data, slices sampling
            different lines, non-finite data.
    """
    path = Path(path)
    check_file(path)  # a regular, readable, non-empty file within the byte limit
    try:
        if not h5py.is_hdf5(path):
            raise _error(path, "not an HDF5 file (ISMRMRD files are HDF5)")
        with h5py.File(path, "r") as f:
            group = f.get("dataset")
            if not isinstance(group, h5py.Group):
                raise _error(path, "not an ISMRMRD file (no 'dataset' group)")
            xml, hdr = _header(path, group)
            table = group.get("data")
            if not isinstance(table, h5py.Dataset) or table.size == 0:
                raise _error(path, "ISMRMRD file without acquisitions (dataset/data)")
            _check_table(path, table)
            rows = table[()]
    except InputError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise _error(path, f"corrupt or truncated ISMRMRD file ({exc})") from exc
    kspace, mask = _assemble(path, hdr, rows)
    if mask is not None and mask.all():
        mask = None
    elif mask is not None and _contiguous(mask):
        mask = None
    return KSpaceStudy(
        name=path.stem,
        source=path,
        kspace=kspace,
        multicoil=kspace.shape[1] > 1,
        mask=mask,
        acceleration=None if mask is None else mask.size / int(mask.sum()),
        num_low_frequencies=None if mask is None else center_run_length(mask),
        ismrmrd_header=xml,
    )


#: the acquisition header fields the reader uses
_HEAD_FIELDS = (
    "flags",
    "idx",
    "number_of_samples",
    "active_channels",
    "center_sample",
    "trajectory_dimensions",
)


def _check_table(path: Path, table: h5py.Dataset) -> None:
    """Refuse a ``dataset/data`` that is not a 1-D table of acquisitions (compound ``head`` and
    ``data`` fields, with the header fields used here) or that would not fit the memory limit;
    checked from its declaration, before it is read."""
    names = table.dtype.names or ()
    head = table.dtype["head"] if "head" in names else None
    if (
        table.ndim != 1
        or "data" not in names
        or head is None
        or not set(_HEAD_FIELDS) <= set(head.names or ())
    ):
        raise _error(
            path,
            f"dataset/data is not an ISMRMRD acquisition table (shape {table.shape}, "
            f"fields {list(names) or 'none'})",
        )
    check_dataset_size(path, "dataset/data", table.shape, table.dtype.itemsize)


def _contiguous(mask: np.ndarray) -> bool:
    idx = np.flatnonzero(mask)
    return bool(mask[idx[0] : idx[-1] + 1].all())


def _assemble(path: Path, hdr: dict, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Place the imaging lines of the acquisition table ``rows`` into ``(S, C, H, W)`` k-space;
    return it (oversampling removed) and the bool ``(W,)`` mask of sampled lines."""
    try:
        head = rows["head"]
        flags = head["flags"].astype(np.uint64)
        idx = head["idx"]
        samples, channels = head["number_of_samples"], head["active_channels"]
        centre, traj_dims = head["center_sample"], head["trajectory_dimensions"]
    except (KeyError, ValueError, IndexError) as exc:
        raise _error(path, f"not an ISMRMRD acquisition table ({exc})") from exc
    skip = np.zeros(len(rows), dtype=bool)
    for bit in SKIPPED_FLAGS:
        skip |= (flags & _flag(bit)) != 0
    keep = np.flatnonzero(~skip)
    if keep.size == 0:
        raise _error(path, f"no imaging acquisitions among {len(rows)} (all noise/calibration)")

    nx, ny, nz = hdr["encoded"]
    if hdr["trajectory"] != "cartesian" or np.any(traj_dims[keep] > 0):
        raise _error(path, f"trajectory {hdr['trajectory']!r} is not supported (Cartesian only)")
    if hdr["encodings"] != 1:
        raise _error(path, f"{hdr['encodings']} encodings in the header; only one is supported")
    if nz != 1 or np.any(idx["kspace_encode_step_2"][keep] != 0):
        raise _error(path, f"3-D encoding (encoded z = {nz}) is not supported (2-D only)")
    for counter in _ONE_ONLY:
        values = np.unique(idx[counter][keep])
        if values.size > 1:
            raise _error(path, f"{values.size} values of {counter}; only one is supported")
    coils = np.unique(channels[keep])
    if coils.size != 1 or (hdr["channels"] is not None and coils[0] != hdr["channels"]):
        raise _error(
            path,
            f"inconsistent sizes: lines have {sorted(coils.tolist())} channels, header "
            f"receiverChannels {hdr['channels']}",
        )
    ncoils = int(coils[0])
    slice_idx = idx["slice"][keep].astype(int)
    nslices = hdr["slices"] or int(slice_idx.max()) + 1
    if not (0 < nx <= MAX_GRID and 0 < ny <= MAX_GRID) or not 0 < ncoils <= MAX_COILS:
        raise _error(path, f"absurd sizes: encoded matrix {nx} x {ny}, {ncoils} channels")
    if not 0 < nslices <= MAX_SLICES or slice_idx.max() >= nslices:
        raise _error(path, f"inconsistent sizes: slice index {slice_idx.max()} of {nslices}")
    max_samples = current_limits().max_voxels
    if nslices * ncoils * ny * nx > max_samples:  # refused before allocating
        raise _error(
            path,
            f"k-space of {nslices} slices x {ncoils} channels x {nx} x {ny} is too large "
            f"(<= {max_samples} samples in all: --max-input-voxels)",
        )

    ky_shift = ny // 2 - (hdr["ky_center"] if hdr["ky_center"] else ny // 2)
    lines = np.zeros((nslices, ncoils, ny, nx), dtype=np.complex128)
    counts = np.zeros((nslices, ny), dtype=np.int64)
    for j, i in enumerate(keep):
        ns, c0 = int(samples[i]), int(centre[i]) or int(samples[i]) // 2
        x0, ky = nx // 2 - c0, int(idx["kspace_encode_step_1"][i]) + ky_shift
        if not (0 <= ky < ny and 0 <= x0 and x0 + ns <= nx):
            raise _error(
                path,
                f"inconsistent sizes: acquisition {i} (line {ky}, {ns} samples, centre {c0}) "
                f"does not fit the encoded matrix {nx} x {ny}",
            )
        data = np.asarray(rows["data"][i], dtype=np.float32)
        if data.size != 2 * ncoils * ns:
            raise _error(
                path, f"acquisition {i} holds {data.size} values, expected {2 * ncoils * ns}"
            )
        line = data.view(np.complex64).reshape(ncoils, ns)
        if int(flags[i]) & int(_flag(ACQ_IS_REVERSE)):
            line = line[:, ::-1]
        s = slice_idx[j]
        lines[s, :, ky, x0 : x0 + ns] += line
        counts[s, ky] += 1
    if not np.isfinite(lines).all():
        raise _error(path, "acquisitions contain non-finite values (NaN or Inf)")
    sampled = counts > 0
    empty = np.flatnonzero(~sampled.any(axis=1))
    if empty.size:
        raise _error(path, f"slice {int(empty[0])} of {nslices} has no acquisitions")
    if not (sampled == sampled[0]).all():
        raise _error(path, "slices sample different phase-encode lines (one mask is needed)")
    lines /= np.maximum(counts, 1)[:, None, :, None]
    # (S, C, ky, kx) -> fastMRI layout (S, C, kx, ky): readout rows H, phase-encode columns W
    kspace = lines.transpose(0, 1, 3, 2)
    recon_x = hdr["recon"][0]
    if nx == 2 * recon_x:
        kspace = _crop_readout(kspace, recon_x)
    return np.ascontiguousarray(kspace, dtype=np.complex64), sampled[0].copy()


def _crop_readout(kspace: np.ndarray, size: int) -> np.ndarray:
    """Remove readout oversampling: centred orthonormal inverse FFT along ``H`` (axis -2), keep
    the central ``size`` rows, FFT back. ``kspace``: complex ``(S, C, H, W)``."""
    ax = -2
    image = np.fft.fftshift(
        np.fft.ifft(np.fft.ifftshift(kspace, axes=ax), axis=ax, norm="ortho"), axes=ax
    )
    start = (kspace.shape[ax] - size) // 2
    image = image[..., start : start + size, :]
    return np.fft.fftshift(
        np.fft.fft(np.fft.ifftshift(image, axes=ax), axis=ax, norm="ortho"), axes=ax
    )


# ----------------------------------------------------------------------------- writing


def _xml_header(
    encoded: tuple[int, int], recon: tuple[int, int], coils: int, slices: int, fov: tuple
) -> str:
    import ismrmrd.xsd as x

    nx, ny = encoded
    rx, ry = recon
    space = x.encodingSpaceType
    enc = x.encodingType(
        encodedSpace=space(
            matrixSize=x.matrixSizeType(x=nx, y=ny, z=1),
            fieldOfView_mm=x.fieldOfViewMm(x=fov[0] * nx / rx, y=fov[1], z=fov[2]),
        ),
        reconSpace=space(
            matrixSize=x.matrixSizeType(x=rx, y=ry, z=1),
            fieldOfView_mm=x.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]),
        ),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=x.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
            slice=x.limitType(minimum=0, maximum=slices - 1, center=0),
        ),
        trajectory=x.trajectoryType.CARTESIAN,
    )
    header = x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        acquisitionSystemInformation=x.acquisitionSystemInformationType(receiverChannels=coils),
        encoding=[enc],
    )
    return x.ToXML(header)


def write_ismrmrd(
    path: str | os.PathLike[str],
    kspace: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    fov_mm: tuple[float, float, float] = (256.0, 256.0, 5.0),
    oversampled: bool = False,
    noise_lines: int = 0,
    header: bool = True,
) -> Path:
    """Write k-space as a 2-D Cartesian ISMRMRD file, atomically.

    Args:
        kspace: complex ``(S, H, W)`` single-coil or ``(S, C, H, W)``, in the fastMRI layout
            (``H`` readout, ``W`` phase encode). One acquisition per sampled column.
        mask: bool ``(W,)`` of the phase-encode lines to store; all when ``None``.
        fov_mm: recon field of view (readout, phase, slice thickness) in mm.
        oversampled: ``H`` is twice the recon matrix (header recon ``x = H // 2``).
        noise_lines: noise-measurement acquisitions (random, flagged) written first.
        header: write the XML header (``False`` builds a broken file for tests).
    Returns:
        The path.
    """
    import ismrmrd

    k = np.asarray(kspace)
    k = k[:, None] if k.ndim == 3 else k
    if k.ndim != 4 or k.dtype.kind != "c":
        raise ValueError(f"kspace must be complex (S, H, W) or (S, C, H, W), got {k.shape}")
    slices, coils, h, w = k.shape
    mask = np.ones(w, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (w,):
        raise ValueError(f"mask must be ({w},), got {mask.shape}")
    recon = (h // 2 if oversampled else h, w)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    rng = np.random.default_rng(0)
    try:
        dset = ismrmrd.Dataset(str(tmp), "dataset", mode="w")
        try:
            if header:
                dset.write_xml_header(_xml_header((h, w), recon, coils, slices, fov_mm).encode())
            for _ in range(noise_lines):
                noise = rng.standard_normal((coils, h)) + 1j * rng.standard_normal((coils, h))
                acq = ismrmrd.Acquisition.from_array(noise.astype(np.complex64))
                acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
                dset.append_acquisition(acq)
            for s in range(slices):
                for ky in np.flatnonzero(mask):
                    acq = ismrmrd.Acquisition.from_array(
                        np.ascontiguousarray(k[s, :, :, ky], dtype=np.complex64)
                    )
                    acq.idx.kspace_encode_step_1 = int(ky)
                    acq.idx.slice = s
                    acq.center_sample = h // 2
                    acq.read_dir[:] = (1.0, 0.0, 0.0)
                    acq.phase_dir[:] = (0.0, 1.0, 0.0)
                    acq.slice_dir[:] = (0.0, 0.0, 1.0)
                    dset.append_acquisition(acq)
        finally:
            dset.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
