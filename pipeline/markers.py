"""Done and failed markers of a batch's output folder: ``DIR/.sgilo/{done,failed}/<key>.json``.

A done marker is written (atomically) only after every output of an input exists, and records
each output's size and SHA-256; :func:`read_done` trusts a marker only while every output it
lists is still there with that content. A failed marker records a bad input's one-line error, so
that a watched folder does not retry the same bad file on every pass.

Markers are written through a hidden temporary file and a rename; a process killed in between
(SIGKILL) leaves the temporary file, which :func:`remove_stale_temporaries` removes once it is old
enough that no live writer can own it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from sgilo.pipeline.provenance import now_iso, sha256_path, visible_files, write_json_atomic

MARKER_DIR = ".sgilo"

#: a marker's temporary file (``write_json_atomic``): ``.<key>.json.<12 hex>.tmp``
_TEMPORARY = re.compile(r"\..+\.json\.[0-9a-f]{12}\.tmp")


def marker_path(out_dir: Path, kind: str, key: str) -> Path:
    """``out_dir/.sgilo/<kind>/<key>.json`` (``kind``: "done" or "failed")."""
    return Path(out_dir) / MARKER_DIR / kind / f"{key}.json"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _output_entry(out_dir: Path, output: Path) -> dict[str, Any]:
    output = Path(output)
    try:
        name = output.resolve().relative_to(Path(out_dir).resolve()).as_posix()
    except ValueError:
        name = str(output.resolve())
    return {"path": name, "bytes": _size(output), "sha256": sha256_path(output)}


def _size(path: Path) -> int:
    """Bytes of a file, or of a folder's visible files (a DICOM series output)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in visible_files(path))
    return path.stat().st_size


def write_done(
    out_dir: Path, key: str, record: dict[str, Any], outputs: list[Path]
) -> dict[str, Any]:
    """Write the done marker for ``key``: ``record`` plus each output's path (relative to
    ``out_dir``), size and SHA-256. Raises ``FileNotFoundError`` if an output is missing."""
    marker = {**record, "outputs": [_output_entry(out_dir, p) for p in outputs]}
    write_json_atomic(marker_path(out_dir, "done", key), marker)
    marker_path(out_dir, "failed", key).unlink(missing_ok=True)
    return marker


def read_done(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The done marker's record with ``outputs`` as absolute path strings, or ``None`` when
    there is no readable marker or an output is missing or differs from what it recorded."""
    marker = _load(marker_path(out_dir, "done", key))
    if marker is None or not isinstance(marker.get("outputs"), list) or not marker["outputs"]:
        return None
    paths = []
    for entry in marker["outputs"]:
        try:
            path = Path(out_dir) / entry["path"]
            if _size(path) != entry["bytes"] or sha256_path(path) != entry["sha256"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
        paths.append(str(path.resolve()))
    return {**marker, "outputs": paths}


def write_failed(out_dir: Path, key: str, name: str, error: str) -> None:
    """Record that the input ``name`` (with cache key ``key``) failed with ``error``."""
    write_json_atomic(
        marker_path(out_dir, "failed", key), {"name": name, "error": error, "time": now_iso()}
    )


def read_failed(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The failed marker for ``key``, or ``None``."""
    return _load(marker_path(out_dir, "failed", key))


def remove_stale_temporaries(out_dir: Path, *, min_age_s: float = 600.0) -> list[Path]:
    """Remove the markers' temporary files left by killed processes: those in
    ``.sgilo/{done,failed}/`` older than ``min_age_s`` (a live writer holds one for
    milliseconds). Returns those removed."""
    now, removed = time.time(), []
    for kind in ("done", "failed"):
        folder = Path(out_dir) / MARKER_DIR / kind
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            try:
                if _TEMPORARY.fullmatch(p.name) and now - p.stat().st_mtime > min_age_s:
                    p.unlink()
                    removed.append(p)
            except OSError:
                continue  # gone meanwhile
    return removed
