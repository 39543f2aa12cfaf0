"""Writing torch files so that a reader never sees a partial one."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, flushed to disk, then
    ``os.replace`` onto ``path``: the file is either the old one or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def first_line(exc: BaseException | str) -> str:
    """The first line of an error message, at most 120 characters."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:120]
    return type(exc).__name__


def safe_torch_load(
    path: Path,
    error: type[ValueError],
    device: str | torch.device = "cpu",
    allowed: Sequence[type] = (),
) -> Any:
    """``torch.load(path, weights_only=True)`` (plus the ``allowed`` classes), with every failure
    raised as ``error`` carrying one line that names the file: missing, not a file, a pickle that
    needs arbitrary code (refused: checkpoints are untrusted input), truncated or corrupt."""

    def fail(what: str) -> ValueError:
        return error(f"{path}: {what}")

    if not path.exists():
        raise fail("no such file")
    if not path.is_file():
        raise fail("not a regular file")
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise fail(
                f"unpickling needs arbitrary code (it references {found.group(1)}); refused: "
                "checkpoints are untrusted input and are read with weights_only=True"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc), re.S)
        reason = detail.group(1).strip().splitlines()[0] if detail else first_line(exc)
        raise fail(f"not a torch checkpoint or corrupt ({reason[:120]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise fail(f"truncated or corrupt file ({first_line(exc)})") from None
