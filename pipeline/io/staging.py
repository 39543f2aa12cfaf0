"""All-or-nothing output sets: files and folders are written into a hidden staging folder inside
the output folder, then moved to their final names together.

    with StagedOutputs(out_dir, label="scan.h5") as stage:
        write_reconstruction(stage.path("scan.h5"), ...)
        write_dicom_series(stage.path("scan_dicom"), ...)
        finals = stage.commit()

If anything raises before :meth:`StagedOutputs.commit`, the staging folder is removed and the
output folder is as it was; that includes SIGTERM and Ctrl-C (:mod:`sgilo.pipeline.interrupt`),
which are moreover held while a commit runs, so that they never leave an output set half committed.
Committing is a sequence of renames on one file system: each output appears complete under its
final name (a file by ``os.replace``; an existing folder of the same name is moved aside into
the staging folder, replaced, and deleted with the staging folder).

A process killed outright (SIGKILL, a power cut) leaves its staging folder behind. Each staging
folder holds an exclusive ``flock`` on its ``.lock`` file while it is in use (the kernel releases
it when the process dies), so :func:`remove_stale_staging` can tell dead staging folders from
live ones, whichever process or worker owns them; the first staging folder a process opens in an
output folder removes the dead ones there.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from pathlib import Path
from types import TracebackType

from sgilo.pipeline.interrupt import deferred

STAGING_PREFIX = ".sgilo-staging-"

#: the lock file inside each staging folder, locked (``flock``) by its owner while in use
LOCK_NAME = ".lock"

#: output folders whose dead staging folders this process has removed (once per folder)
_swept: set[Path] = set()


class StagedOutputs:
    """A staging folder ``<out_dir>/.sgilo-staging-<label>.<12 hex>/`` for one set of outputs;
    ``label`` (made file-name safe) names what the outputs are for, e.g. the input file name, so
    that :func:`remove_stale_staging` can clean up after a killed run."""

    def __init__(self, out_dir: str | os.PathLike[str], label: str = "outputs") -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _sweep_once(self.out_dir)
        self.names: list[str] = []
        self._lock: int | None = None
        try:
            with deferred():  # a folder and its lock, or neither
                self.folder, self._lock = _locked_folder(self.out_dir, _prefix(label))
        except BaseException:
            self.discard()
            raise

    def path(self, name: str) -> Path:
        """Where to write the output that will be committed as ``out_dir / name`` (a plain file
        or folder name, not a path)."""
        if Path(name).name != name or name in ("", ".", "..", LOCK_NAME):
            raise ValueError(f"output name {name!r} must be a plain file name")
        if name in self.names:
            raise ValueError(f"output {name!r} is staged twice")
        self.names.append(name)
        return self.folder / name

    def commit(self) -> list[Path]:
        """Move every staged output that exists to its final name, in staging order; return
        the final paths. The staging folder is removed."""
        finals = []
        with deferred():  # SIGTERM/Ctrl-C wait until every output is in place
            for i, name in enumerate(self.names):
                staged, final = self.folder / name, self.out_dir / name
                if not staged.exists():
                    continue
                if staged.is_dir() or final.is_dir():
                    _replace_folder(staged, final, aside=self.folder / f".replaced-{i}")
                else:
                    os.replace(staged, final)
                finals.append(final)
            self.discard()
        return finals

    def discard(self) -> None:
        """Remove the staging folder and whatever is still in it, then release its lock."""
        if getattr(self, "folder", None) is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()


def _prefix(label: str) -> str:
    return f"{STAGING_PREFIX}{re.sub(r'[^A-Za-z0-9_-]+', '_', label)[:64]}."


def _locked_folder(out_dir: Path, prefix: str) -> tuple[Path, int]:
    """A new folder ``out_dir/<prefix><12 hex>`` and an open descriptor of its lock file,
    locked. A cleaner (:func:`_remove_if_dead`) can delete the folder between its ``mkdir`` and
    the lock: then the lock file cannot be created, or it is unlinked once locked, and the next
    name is tried."""
    for _ in range(5):
        folder = out_dir / f"{prefix}{secrets.token_hex(6)}"
        folder.mkdir()
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # removed by a cleaner before its lock file existed
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return folder, fd
        os.close(fd)
    raise OSError(f"cannot create a staging folder in {out_dir}")


def _remove_if_dead(folder: Path) -> bool:
    """Remove a staging folder that no live process uses: its lock file, created here when
    missing (a folder from an older sgilo, or one whose creator was killed before its lock
    existed), can be locked; the folder is deleted while this process holds the lock. Returns
    whether it was removed.

    A live creator between its ``mkdir`` and its lock loses nothing (:func:`_locked_folder`):
    its ``open`` finds the folder gone, or its lock waits for this one and then finds the lock
    file unlinked, and it takes another name; a lock file it creates in a folder being deleted
    keeps the folder (``rmdir`` of a non-empty folder fails). So a lock-less folder needs no
    grace period (until 2026-12-07 one younger than 60 s was left: a re-run soon after a kill
    left its debris)."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False  # gone meanwhile, or not ours to touch
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # locked: its owner is alive
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(fd)
    return not folder.exists()


def remove_stale_staging(out_dir: str | os.PathLike[str], label: str | None = None) -> list[Path]:
    """Remove the staging folders in ``out_dir`` that no live process uses (left by a process
    killed while writing), for ``label`` or for every label; returns those removed. Staging
    folders in use (locked), in this process or any other, are never touched."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    prefix = re.escape(_prefix(label)) if label is not None else re.escape(STAGING_PREFIX) + r".*\."
    pattern = re.compile(prefix + r"[0-9a-f]{12}")
    return [
        p
        for p in sorted(out.iterdir())
        if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and _remove_if_dead(p)
    ]


def _sweep_once(out_dir: Path) -> None:
    """Remove the dead staging folders of ``out_dir`` the first time this process stages
    outputs there."""
    key = out_dir.resolve()
    if key not in _swept:
        _swept.add(key)
        remove_stale_staging(out_dir)


def _replace_folder(staged: Path, final: Path, *, aside: Path) -> None:
    """Rename ``staged`` to ``final``; an existing ``final`` is first moved to ``aside`` (inside
    the staging folder, which is deleted after)."""
    if final.exists() or final.is_symlink():
        os.replace(final, aside)
    os.replace(staged, final)
