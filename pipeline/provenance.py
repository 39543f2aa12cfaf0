"""Provenance of a run: what went in, what code and libraries made it, and when.

``run_record(config, inputs, models)`` collects the resolved configuration, package versions,
the Python version, the git revision of the code (``"unknown"`` outside a git checkout), a hash
of the code itself, SHA-256 hashes of the inputs and model files, start/end times and per-input
timings; ``write_run_json(out_dir, record)`` writes it as ``out_dir/run.json`` atomically.

No patient identifiers: records and logs name inputs by their path and content hash only. They
never read or copy DICOM header values (PatientName, PatientID, birth dates, accession numbers);
name files and series folders without identifiers if the names themselves must not be logged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from sgilo.pipeline.io.atomic import atomic_path

#: the packages whose versions every run records (absent ones are recorded as ``None``)
PACKAGES: tuple[str, ...] = (
    "sgilo",
    "torch",
    "numpy",
    "sigpy",
    "h5py",
    "pydicom",
    "nibabel",
    "pydantic",
    "prefect",
    "prefect-dask",
    "distributed",
)

#: the source packages whose files make up :func:`code_version`
CODE_PACKAGES: tuple[str, ...] = ("operators", "models", "pipeline")

_CHUNK = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def visible_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (recursively), sorted by relative path, hidden ones skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def sha256_path(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, or of a folder: over its visible files' relative paths and hashes in
    sorted order (so a DICOM series folder hashes the same wherever it lies)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in visible_files(path):
        digest.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions by distribution name; ``None`` for a package that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git_dir(root: Path) -> Path | None:
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot_git.read_text().strip()
        if text.startswith("gitdir:"):
            target = Path(text.removeprefix("gitdir:").strip())
            return target if target.is_absolute() else (root / target).resolve()
    return None


def git_revision(root: Path = ROOT) -> str:
    """The commit the code at ``root`` is checked out at, read from ``.git`` without running
    git; ``"unknown"`` when ``root`` is not a git checkout (e.g. an installed wheel)."""
    try:
        git = _git_dir(root)
        if git is None:
            return "unknown"
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head  # a detached HEAD holds the commit itself
        ref = head.removeprefix("ref:").strip()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        pass
    return "unknown"


@cache
def code_version(root: Path = ROOT) -> str:
    """A hash of the reconstruction code (the ``.py`` files of :data:`CODE_PACKAGES`): it
    changes with any edit, committed or not, so cached results never outlive the code that
    made them."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for f in sorted((root / package).rglob("*.py")):
            digest.update(f"{f.relative_to(root).as_posix()}\0{sha256_file(f)}\n".encode())
    return digest.hexdigest()[:16]


def run_record(
    config: Mapping[str, Any],
    inputs: list[Path],
    models: list[Path],
    *,
    started: str | None = None,
    timings: Mapping[str, Mapping[str, Any]] | None = None,
    input_hashes: Mapping[str, str] | None = None,
    hash_inputs: bool = True,
) -> dict[str, Any]:
    """Everything needed to say how a run's outputs were made.

    Args:
        config: the resolved configuration (JSON-able).
        inputs: the input files or folders; hashed with :func:`sha256_path` unless
            ``input_hashes`` (path string → hex) already has them. With ``hash_inputs=False``
            only ``input_hashes`` is used (the others get ``None``): a caller that hashed the
            inputs it read never opens a failed input again (it may be a pipe, or unreadable).
        models: model files (generators, score models); hashed.
        started: the run's start time (ISO-8601; default now); ``finished`` is now.
        timings: per-input records (path string → ``{"status", "seconds", ...}``).

    Returns a JSON-able dict with keys ``config``, ``inputs``, ``models``, ``timings``,
    ``versions``, ``python``, ``platform``, ``git_revision``, ``code_version``, ``started``,
    ``finished``. Input/model hashes are ``None`` for paths that do not exist.
    """
    known = dict(input_hashes or {})

    def hashed(
        paths: list[Path], precomputed: Mapping[str, str], compute: bool = True
    ) -> list[dict[str, Any]]:
        rows = []
        for p in paths:
            key = str(p)
            digest = precomputed.get(key)
            if digest is None and compute and Path(p).exists():
                digest = sha256_path(p)
            rows.append({"path": key, "sha256": digest})
        return rows

    return {
        "config": json.loads(json.dumps(dict(config), default=str)),
        "inputs": hashed(inputs, known, hash_inputs),
        "models": hashed(models, {}),
        "timings": {k: dict(v) for k, v in (timings or {}).items()},
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "git_revision": git_revision(),
        "code_version": code_version(),
        "started": started or now_iso(),
        "finished": now_iso(),
    }


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (:func:`sgilo.pipeline.io.atomic.atomic_path`):
    readers see the old file or the whole new one, never a part."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return path


def write_run_json(out_dir: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``out_dir/run.json`` atomically, staged like the outputs
    (:mod:`sgilo.pipeline.io.staging`): a kill while it is written leaves a staging folder that the
    next run into ``out_dir`` removes, never a temporary file. Returns its path."""
    from sgilo.pipeline.io.staging import StagedOutputs

    with StagedOutputs(out_dir, label="run.json") as stage:
        write_json_atomic(stage.path("run.json"), dict(record))
        (final,) = stage.commit()
    return final


def append_log(out_dir: str | os.PathLike[str], message: str, *, error: bool = False) -> None:
    """Append one time-stamped line to ``out_dir/run.log`` (file names, statuses and figures
    only: callers never pass DICOM header values)."""
    from datetime import datetime

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    with open(Path(out_dir) / "run.log", "a", encoding="utf-8") as fh:
        fh.write(f"{stamp} {'ERROR' if error else 'INFO'} {' '.join(message.split())}\n")
