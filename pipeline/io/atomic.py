"""Writing a file so that a reader never sees a partial one.

The pipeline's output writers (NIfTI, DICOM, fastMRI HDF5, ISMRMRD, run.json) write through
:func:`atomic_path`: the file is made under a hidden temporary name in the destination's folder
(the same file system, so the final rename is atomic), flushed to disk, and only then renamed onto
the destination with ``os.replace``. A reader sees the old file or the whole new one; a failure
(an exception or an interrupt) removes the temporary file and leaves the destination as it was.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path ``.NAME.RANDOM.tmpSUFFIX`` beside ``path`` (its folder is created)
    for the caller to write; on a normal exit it is fsynced and ``os.replace``-d onto ``path``, on
    any exception removed. ``suffix``: for writers that choose the format by the file name (e.g.
    ``.nii.gz``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
