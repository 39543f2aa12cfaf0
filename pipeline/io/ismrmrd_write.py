"""Write Cartesian ISMRMRD files with the ``ismrmrd`` package's own writer (for tests, examples and
converting k-space): 2-D multi-slice or 3-D, several volumes (contrast, phase, repetition, set),
noise-measurement and parallel-calibration lines, and the acquisition geometry.

Input k-space is in the project's layout (``H`` readout, ``W`` phase encode); each sampled
phase-encode column ``k[s, :, :, ky]`` becomes one acquisition ``(channels, H)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgilo.pipeline.io.atomic import atomic_path
from sgilo.pipeline.io.ismrmrd_dimensions import VOLUME_COUNTERS


@dataclass(frozen=True)
class AcquisitionGeometry:
    """Geometry written into every acquisition header (ISMRMRD patient coordinates, LPS, mm).

    ``read_dir``, ``phase_dir``, ``slice_dir``: unit vectors; ``positions``: ``(S, 3)`` centre of
    each slice (or slab), ``None`` for a stack centred on ``centre`` spaced by the slice
    thickness along ``slice_dir``; ``table``: ``patient_table_position`` (the header
    ``position`` written is the centre minus it).
    """

    read_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)
    phase_dir: tuple[float, float, float] = (0.0, 1.0, 0.0)
    slice_dir: tuple[float, float, float] = (0.0, 0.0, 1.0)
    positions: np.ndarray | None = None
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    table: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def centres(self, slices: int, thickness: float) -> np.ndarray:
        """Patient-coordinate slice centres ``(S, 3)``."""
        if self.positions is not None:
            return np.asarray(self.positions, dtype=np.float64).reshape(slices, 3)
        offsets = (np.arange(slices) - (slices - 1) / 2) * thickness
        return np.asarray(self.centre) + offsets[:, None] * np.asarray(self.slice_dir)


def _xml_header(
    encoded: tuple[int, int, int],
    recon: tuple[int, int, int],
    coils: int,
    slices: int,
    fov: tuple[float, float, float],
    calibration_mode: str | None,
    limits: Mapping[str, int],
) -> str:
    import ismrmrd.xsd as x

    nx, ny, nz = encoded
    rx, ry, rz = recon
    space = x.encodingSpaceType
    z_fov = fov[2] * nz / rz
    parallel = None
    if calibration_mode is not None:
        parallel = x.parallelImagingType(
            accelerationFactor=x.accelerationFactorType(
                kspace_encoding_step_1=1, kspace_encoding_step_2=1
            ),
            calibrationMode=x.calibrationModeType(calibration_mode),
        )
    counters = {
        name: x.limitType(minimum=0, maximum=limits[name], center=0)
        for name in VOLUME_COUNTERS
        if limits.get(name)
    }
    enc = x.encodingType(
        encodedSpace=space(
            matrixSize=x.matrixSizeType(x=nx, y=ny, z=nz),
            fieldOfView_mm=x.fieldOfViewMm(x=fov[0] * nx / rx, y=fov[1], z=z_fov),
        ),
        reconSpace=space(
            matrixSize=x.matrixSizeType(x=rx, y=ry, z=rz),
            fieldOfView_mm=x.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]),
        ),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=x.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
            kspace_encoding_step_2=x.limitType(minimum=0, maximum=nz - 1, center=nz // 2),
            slice=x.limitType(minimum=0, maximum=slices - 1, center=0),
            **counters,
        ),
        trajectory=x.trajectoryType.CARTESIAN,
        parallelImaging=parallel,
    )
    header = x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        acquisitionSystemInformation=x.acquisitionSystemInformationType(receiverChannels=coils),
        encoding=[enc],
    )
    return x.ToXML(header)


def _as_volumes(kspace: np.ndarray | Mapping) -> dict[tuple[int, ...], np.ndarray]:
    items = kspace.items() if isinstance(kspace, Mapping) else [((0, 0, 0, 0), kspace)]
    volumes = {}
    for key, k in items:
        k = np.asarray(k)
        k = k[:, None] if k.ndim == 3 else k
        if k.ndim != 4 or k.dtype.kind != "c":
            raise ValueError(f"kspace must be complex (S, H, W) or (S, C, H, W), got {k.shape}")
        volumes[tuple(int(v) for v in key)] = k
    shapes = {k.shape for k in volumes.values()}
    if len(shapes) != 1:
        raise ValueError(f"every volume must have one shape, got {sorted(shapes)}")
    return volumes


def write_ismrmrd(
    path: str | os.PathLike[str],
    kspace: np.ndarray | Mapping[tuple[int, int, int, int], np.ndarray],
    mask: np.ndarray | None = None,
    *,
    fov_mm: tuple[float, float, float] = (256.0, 256.0, 5.0),
    oversampled: bool = False,
    noise_lines: int = 0,
    noise: np.ndarray | None = None,
    header: bool = True,
    geometry: AcquisitionGeometry | None = None,
    three_d: bool = False,
    calibration_mask: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
    calibration_mode: str | None = None,
    sample_time_us: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """Write k-space as a Cartesian ISMRMRD file, atomically.

    Args:
        kspace: complex ``(S, H, W)`` single-coil or ``(S, C, H, W)`` (``H`` readout, ``W``
            phase encode), or a mapping ``{(contrast, phase, repetition, set): array}`` of
            volumes of one shape. With ``three_d`` the first axis is the partition axis
            ``kz`` of one 3-D slab (k-space along it too).
        mask: bool ``(W,)`` of the phase-encode lines to store; all when ``None``.
        fov_mm: recon field of view (readout, phase, slice thickness or slab) in mm.
        oversampled: ``H`` is twice the recon matrix (header recon ``x = H // 2``).
        noise_lines: white noise-measurement acquisitions (seeded) written first.
        noise: complex ``(N, C, samples)`` noise-measurement acquisitions written first.
        header: write the XML header (``False`` builds a broken file for tests).
        geometry: the acquisition geometry (default: the axes, slices centred on the origin).
        three_d: a 3-D encoding (see ``kspace``).
        calibration_mask: bool ``(W,)`` lines also written as parallel-calibration lines:
            flagged ``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING`` where ``mask`` has them, else
            calibration-only lines (data from ``calibration`` if given, else ``kspace``).
        calibration: complex k-space of the calibration-only lines (the shape of a volume).
        calibration_mode: the header's ``parallelImaging.calibrationMode`` (e.g.
            ``"embedded"``, ``"separate"``); ``None`` writes no ``parallelImaging``.
        sample_time_us: dwell times (µs) of the (imaging, noise) lines.
    Returns:
        The path.
    """
    import ismrmrd

    volumes = _as_volumes(kspace)
    first = next(iter(volumes.values()))
    slices, coils, h, w = first.shape
    mask = np.ones(w, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    cal_mask = np.zeros(w, bool) if calibration_mask is None else np.asarray(calibration_mask)
    if mask.shape != (w,) or cal_mask.shape != (w,):
        raise ValueError(f"mask and calibration_mask must be ({w},)")
    nz = slices if three_d else 1
    slabs = 1 if three_d else slices
    recon = (h // 2 if oversampled else h, w, nz)
    geometry = geometry or AcquisitionGeometry()
    centres = geometry.centres(slabs, fov_mm[2])
    limits = {n: max(key[j] for key in volumes) for j, n in enumerate(VOLUME_COUNTERS)}
    path = Path(path)
    rng = np.random.default_rng(0)
    noise_data = [] if noise is None else list(np.asarray(noise))
    for _ in range(noise_lines):
        noise_data.append(rng.standard_normal((coils, h)) + 1j * rng.standard_normal((coils, h)))

    def acquisition(data: np.ndarray, s: int, kz: int, ky: int, key: tuple) -> object:
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64))
        acq.idx.kspace_encode_step_1 = int(ky)
        acq.idx.kspace_encode_step_2 = int(kz)
        acq.idx.slice = int(s)
        for name, value in zip(VOLUME_COUNTERS, key, strict=True):
            setattr(acq.idx, name, int(value))
        acq.center_sample = h // 2
        acq.sample_time_us = sample_time_us[0]
        acq.read_dir[:] = geometry.read_dir
        acq.phase_dir[:] = geometry.phase_dir
        acq.slice_dir[:] = geometry.slice_dir
        acq.position[:] = tuple(centres[s if not three_d else 0] - np.asarray(geometry.table))
        acq.patient_table_position[:] = geometry.table
        return acq

    with atomic_path(path) as tmp:
        dset = ismrmrd.Dataset(str(tmp), "dataset", mode="w")
        try:
            if header:
                xml = _xml_header((h, w, nz), recon, coils, slabs, fov_mm, calibration_mode, limits)
                dset.write_xml_header(xml.encode())
            for n in noise_data:
                acq = ismrmrd.Acquisition.from_array(np.asarray(n, dtype=np.complex64))
                acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
                acq.sample_time_us = sample_time_us[1]
                dset.append_acquisition(acq)
            for key, k in volumes.items():
                for s in range(slices):
                    slab, kz = (0, s) if three_d else (s, 0)
                    for ky in np.flatnonzero(mask | cal_mask):
                        imaging = bool(mask[ky])
                        source = k if imaging or calibration is None else calibration
                        acq = acquisition(source[s, :, :, ky], slab, kz, ky, key)
                        if cal_mask[ky]:
                            acq.set_flag(
                                ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
                                if imaging
                                else ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
                            )
                        dset.append_acquisition(acq)
        finally:
            dset.close()
    return path
