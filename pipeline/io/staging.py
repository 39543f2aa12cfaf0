"""All-or-nothing output sets: files and folders are written into a hidden staging folder inside
the output folder, then moved to their final names together.

    with StagedOutputs(out_dir, label="scan.h5") as stage:
        write_reconstruction(stage.path("scan.h5"), ...)
        write_dicom_series(stage.path("scan_dicom"), ...)
        finals = stage.commit()

If anything raises before :meth:`StagedOutputs.commit`, the staging folder is removed and the
output folder is as it was. Committing is a sequence of renames on one file system: each output
appears complete under its final name (a file by ``os.replace``; an existing folder of the same
name is moved aside, replaced and then deleted).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path
from types import TracebackType

STAGING_PREFIX = ".sgilo-staging-"


class StagedOutputs:
    """A staging folder ``<out_dir>/.sgilo-staging-<label>.<12 hex>/`` for one set of outputs;
    ``label`` (made file-name safe) names what the outputs are for, e.g. the input file name, so
    that :func:`remove_stale_staging` can clean up after a killed run."""

    def __init__(self, out_dir: str | os.PathLike[str], label: str = "outputs") -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.folder = self.out_dir / f"{_prefix(label)}{secrets.token_hex(6)}"
        self.folder.mkdir()
        self.names: list[str] = []

    def path(self, name: str) -> Path:
        """Where to write the output that will be committed as ``out_dir / name`` (a plain file
        or folder name, not a path)."""
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"output name {name!r} must be a plain file name")
        if name in self.names:
            raise ValueError(f"output {name!r} is staged twice")
        self.names.append(name)
        return self.folder / name

    def commit(self) -> list[Path]:
        """Move every staged output that exists to its final name, in staging order; return
        the final paths. The staging folder is removed."""
        finals = []
        for name in self.names:
            staged, final = self.folder / name, self.out_dir / name
            if not staged.exists():
                continue
            if staged.is_dir() or final.is_dir():
                _replace_folder(staged, final)
            else:
                os.replace(staged, final)
            finals.append(final)
        self.discard()
        return finals

    def discard(self) -> None:
        """Remove the staging folder and whatever is still in it."""
        shutil.rmtree(self.folder, ignore_errors=True)

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


def remove_stale_staging(out_dir: str | os.PathLike[str], label: str) -> list[Path]:
    """Remove staging folders a killed run left in ``out_dir`` for ``label``. Only call it when
    no other process is writing outputs for the same label."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    pattern = re.compile(re.escape(_prefix(label)) + r"[0-9a-f]{12}")
    removed = [p for p in out.iterdir() if p.is_dir() and pattern.fullmatch(p.name)]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def _replace_folder(staged: Path, final: Path) -> None:
    """Rename ``staged`` to ``final``; an existing ``final`` is moved aside first and deleted
    after."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{secrets.token_hex(6)}")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
