"""What an input may be before anything reads it: a regular file or a folder, of bounded size.

Every reader checks its input here first (:func:`check_input`), and every dataset is checked
against the limits before it is read whole (:func:`check_dataset_size`), so that a small file
that *declares* a huge array, a named pipe, a device file or a huge sparse file is refused with
one line instead of exhausting memory or hanging.

The limits (per input; :class:`InputLimits`):

- ``max_bytes``: the input's size on disk: a file's size, or the sum of the sizes of the regular
  files in a folder (default 8 GiB; ``SGILO_MAX_INPUT_BYTES`` or ``--max-input-bytes``);
- ``max_voxels``: the k-space samples (slices × coils × H × W) or image voxels that are read
  (default 2**28, i.e. 2 GiB as complex64; ``SGILO_MAX_INPUT_VOXELS`` or
  ``--max-input-voxels``). Any other dataset read whole (ISMRMRD tables, targets, maps, headers)
  may take at most ``8 · max_voxels`` bytes in memory.

The limits in force are a context variable (:func:`input_limits`), so concurrent tasks in one
process each see their own.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from sgilo.pipeline.io.types import InputError

DEFAULT_MAX_BYTES = 8 * 2**30
DEFAULT_MAX_VOXELS = 2**28
#: most files a folder input may hold (the folder is listed before anything is read)
MAX_FOLDER_FILES = 100_000
ENV_BYTES = "SGILO_MAX_INPUT_BYTES"
ENV_VOXELS = "SGILO_MAX_INPUT_VOXELS"

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str | int) -> int:
    """A positive byte or voxel count: an integer, optionally with a binary unit suffix
    (``512M``, ``8G``, ``1.5T``; ``K``/``M``/``G``/``T``, case-insensitive, optional ``B``/``iB``).

    Raises:
        ValueError: not such a count.
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.I)
        if not match:
            raise ValueError(f"expected a size such as 1000000, 512M or 8G, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"expected a positive size, got {text!r}")
    return value


def format_bytes(n: int) -> str:
    """``n`` bytes for a message: ``3.2 GiB``, ``512 MiB``, ``100 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class InputLimits:
    """Per-input limits: ``max_bytes`` on disk, ``max_voxels`` samples or voxels read."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_voxels: int = DEFAULT_MAX_VOXELS

    @property
    def max_dataset_bytes(self) -> int:
        """Most bytes any one dataset may take in memory when read whole."""
        return 8 * self.max_voxels

    @classmethod
    def from_env(cls) -> InputLimits:
        """The limits from ``SGILO_MAX_INPUT_BYTES`` / ``SGILO_MAX_INPUT_VOXELS`` (defaults
        where unset). Raises ``ValueError`` for a malformed value."""
        limits = {}
        for field, env in (("max_bytes", ENV_BYTES), ("max_voxels", ENV_VOXELS)):
            raw = os.environ.get(env, "").strip()
            if raw:
                try:
                    limits[field] = parse_size(raw)
                except ValueError as exc:
                    raise ValueError(f"{env}: {exc}") from exc
        return cls(**limits)


_CURRENT: ContextVar[InputLimits | None] = ContextVar("sgilo_input_limits", default=None)


def current_limits() -> InputLimits:
    """The limits in force: those set by :func:`input_limits`, else from the environment."""
    return _CURRENT.get() or InputLimits.from_env()


@contextmanager
def input_limits(
    max_bytes: int | str | None = None, max_voxels: int | str | None = None
) -> Iterator[InputLimits]:
    """Put limits in force for the block; ``None`` keeps the environment's (or default) value."""
    base = current_limits()
    limits = InputLimits(
        max_bytes=base.max_bytes if max_bytes is None else parse_size(max_bytes),
        max_voxels=base.max_voxels if max_voxels is None else parse_size(max_voxels),
    )
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)


def printable(text: str) -> str:
    """``text`` as one printable line: control characters (a newline, a tab, ESC) escaped as
    ``\\n``, ``\\t``, ``\\x1b``."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown_name(path: str | os.PathLike[str]) -> str:
    """A path's file name as one printable line (:func:`printable`)."""
    return printable(Path(path).name or str(path))


def _error(path: Path, what: str) -> InputError:
    return InputError(f"{shown_name(path)}: {what}")


_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _stat(path: Path) -> os.stat_result:
    """``os.stat`` (following links) with one-line errors that say which link is broken."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _error(path, "symbolic link loop (the link points back to itself)") from exc
        if exc.errno == errno.ENAMETOOLONG:
            raise _error(path, "file name too long") from exc
        if exc.errno == errno.EACCES:
            raise _error(path, "cannot be reached (permission denied on a parent folder)") from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                target = os.readlink(path)
                raise _error(
                    path, f"broken symbolic link (to {target!r}, which does not exist)"
                ) from exc
            raise _error(path, "file or folder does not exist") from exc
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from exc


def check_file(path: str | os.PathLike[str], limits: InputLimits | None = None) -> int:
    """Check that ``path`` is a readable, non-empty regular file within ``max_bytes``; return
    its size. Nothing is opened."""
    path = Path(path)
    limits = limits or current_limits()
    st = _stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise _error(path, "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise _error(path, f"is {_kind(st.st_mode)}; only regular files are read")
    if not os.access(path, os.R_OK):
        raise _error(path, "file is not readable (permission denied)")
    if st.st_size == 0:
        raise _error(path, "file is empty (0 bytes)")
    if st.st_size > limits.max_bytes:
        raise _error(
            path,
            f"file is {format_bytes(st.st_size)}, above the per-input limit of "
            f"{format_bytes(limits.max_bytes)} (--max-input-bytes / {ENV_BYTES})",
        )
    return st.st_size


def folder_files(folder: Path, limits: InputLimits | None = None) -> list[Path]:
    """The visible regular files under ``folder`` (recursively; hidden files and folders, and
    anything that is not a regular file, e.g. a pipe or a device, skipped; symbolic links to
    folders not followed), sorted; checked against ``max_bytes`` (their total size) and
    :data:`MAX_FOLDER_FILES` while listing, before any is opened."""
    limits = limits or current_limits()
    found: list[Path] = []
    total = 0
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            p = Path(root) / name
            try:
                st = os.stat(p)
            except OSError:
                continue  # a broken link or a vanished file: not an input file
            if not stat.S_ISREG(st.st_mode):
                continue
            total += st.st_size
            found.append(p)
            if total > limits.max_bytes:
                raise _error(
                    folder,
                    f"folder holds more than {format_bytes(limits.max_bytes)} of files, the "
                    f"per-input limit (--max-input-bytes / {ENV_BYTES})",
                )
            if len(found) > MAX_FOLDER_FILES:
                raise _error(folder, f"folder holds more than {MAX_FOLDER_FILES} files")
    return sorted(found)


def check_input(path: str | os.PathLike[str], limits: InputLimits | None = None) -> str:
    """Check an input before anything reads it; return ``"file"`` or ``"folder"``.

    A file must be a readable, non-empty regular file (a link to one is fine) of at most
    ``max_bytes``; a folder must be readable and its visible regular files must total at most
    ``max_bytes``. Raises :class:`InputError` (one line naming the input) otherwise: missing,
    a broken link or a link loop, a pipe, device or socket, unreadable, empty, too large.
    """
    path = Path(path)
    limits = limits or current_limits()
    st = _stat(path)
    if stat.S_ISDIR(st.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise _error(path, "folder is not readable (permission denied)")
        folder_files(path, limits)
        return "folder"
    check_file(path, limits)
    return "file"


def check_dataset_size(
    path: Path, name: str, shape: tuple[int, ...], itemsize: int, limits: InputLimits | None = None
) -> None:
    """Refuse to read the dataset ``name`` of declared ``shape`` whole when it would take more
    than :attr:`InputLimits.max_dataset_bytes` in memory (checked from the declaration, before
    anything is allocated)."""
    limits = limits or current_limits()
    count = 1
    for n in shape:
        count *= int(n)
    size = count * int(itemsize)
    if size > limits.max_dataset_bytes:
        raise _error(
            path,
            f"dataset {name!r} of shape {tuple(shape)} would take {format_bytes(size)}, above the "
            f"limit of {format_bytes(limits.max_dataset_bytes)} (8 bytes x --max-input-voxels)",
        )
