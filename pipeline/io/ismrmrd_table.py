"""The ISMRMRD acquisition table (``dataset/data``): check its declaration before reading it, and
sort its lines by their flags into imaging, noise and calibration lines.

Each row is one acquisition: ``head`` (the fixed acquisition header: flags, encoding counters
``idx``, sample and channel counts, geometry) and ``data`` (float32 interleaved real/imaginary
values, ``(channels, samples)`` complex).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sgilo.pipeline.io.ismrmrd_header import ismrmrd_error
from sgilo.pipeline.io.limits import check_dataset_size

#: flag bits (``ismrmrd.constants``, 1-based) used here
ACQ_IS_NOISE_MEASUREMENT = 19
ACQ_IS_PARALLEL_CALIBRATION = 20
ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING = 21
ACQ_IS_REVERSE = 22

#: acquisition flags of lines that are neither image, noise nor calibration data: skipped
SKIPPED_FLAGS = {
    23: "navigation",
    24: "phase correction",
    26: "HP feedback",
    27: "dummy scan",
    28: "RT feedback",
    29: "surface coil correction",
    30: "phase stabilisation reference",
    31: "phase stabilisation",
}

#: the acquisition header fields the reader uses
HEAD_FIELDS = (
    "flags",
    "idx",
    "number_of_samples",
    "active_channels",
    "center_sample",
    "trajectory_dimensions",
)


def flag(bit: int) -> np.uint64:
    """The mask of a 1-based ISMRMRD flag bit."""
    return np.uint64(1) << np.uint64(bit - 1)


def check_table(path: Path, table: object) -> h5py.Dataset:
    """Refuse a ``dataset/data`` that is missing, empty, not a 1-D table of acquisitions
    (compound ``head`` and ``data`` fields, with :data:`HEAD_FIELDS`) or too large for the memory
    limit; checked from its declaration, before it is read. Returns the dataset."""
    if not isinstance(table, h5py.Dataset) or table.size == 0:
        raise ismrmrd_error(path, "ISMRMRD file without acquisitions (dataset/data)")
    names = table.dtype.names or ()
    head = table.dtype["head"] if "head" in names else None
    if (
        table.ndim != 1
        or "data" not in names
        or head is None
        or not set(HEAD_FIELDS) <= set(head.names or ())
    ):
        raise ismrmrd_error(
            path,
            f"dataset/data is not an ISMRMRD acquisition table (shape {table.shape}, "
            f"fields {list(names) or 'none'})",
        )
    check_dataset_size(path, "dataset/data", table.shape, table.dtype.itemsize)
    return table


@dataclass
class LineKinds:
    """Row indices of the acquisition table by kind (int64 arrays, table order).

    ``imaging``: image lines (including ``CALIBRATION_AND_IMAGING``); ``noise``: noise
    measurements; ``calibration``: every parallel-imaging calibration line (calibration-only and
    calibration-and-imaging), the reference k-space.
    """

    imaging: np.ndarray
    noise: np.ndarray
    calibration: np.ndarray
    calibration_only: np.ndarray


def classify(path: Path, rows: np.ndarray) -> LineKinds:
    """Sort the rows of an acquisition table by their flags; lines with a
    :data:`SKIPPED_FLAGS` flag are dropped."""
    try:
        flags = rows["head"]["flags"].astype(np.uint64)
    except (KeyError, ValueError, IndexError) as exc:
        raise ismrmrd_error(path, f"not an ISMRMRD acquisition table ({exc})") from exc
    skip = np.zeros(len(rows), dtype=bool)
    for bit in SKIPPED_FLAGS:
        skip |= (flags & flag(bit)) != 0
    noise = ((flags & flag(ACQ_IS_NOISE_MEASUREMENT)) != 0) & ~skip
    cal_only = ((flags & flag(ACQ_IS_PARALLEL_CALIBRATION)) != 0) & ~skip & ~noise
    cal_img = ((flags & flag(ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)) != 0) & ~skip & ~noise
    imaging = ~skip & ~noise & ~cal_only
    return LineKinds(
        imaging=np.flatnonzero(imaging),
        noise=np.flatnonzero(noise),
        calibration=np.flatnonzero(cal_only | cal_img),
        calibration_only=np.flatnonzero(cal_only),
    )


def line_values(path: Path, rows: np.ndarray, i: int, channels: int) -> np.ndarray:
    """Row ``i``'s samples as complex64 ``(channels, samples)``, flipped along the samples when
    flagged ``ACQ_IS_REVERSE``; refuses a row whose value count disagrees with its header."""
    head = rows["head"][i]
    samples = int(head["number_of_samples"])
    data = np.asarray(rows["data"][i], dtype=np.float32)
    if data.size != 2 * channels * samples:
        raise ismrmrd_error(
            path, f"acquisition {i} holds {data.size} values, expected {2 * channels * samples}"
        )
    line = data.view(np.complex64).reshape(channels, samples)
    if int(head["flags"]) & int(flag(ACQ_IS_REVERSE)):
        line = line[:, ::-1]
    return line
