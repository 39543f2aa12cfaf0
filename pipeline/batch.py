"""Batch reconstruction without Prefect: options, input discovery, and one input start to end.

``process_input`` reconstructs one input (a file, or a DICOM series folder) into ``out_dir``
unless a *done marker* says an identical run already finished: ``out_dir/.sgilo/done/<key>.json``,
written atomically only after every output exists, recording each output's SHA-256. The key
hashes the input's content and name, the options that change the outputs, the model files'
hashes and :func:`sgilo.pipeline.provenance.code_version`. A process killed at any moment (SIGKILL
included) leaves either no marker (the input is redone, and its outputs, written atomically by
the writers, are replaced whole) or a marker whose outputs are complete.

The Prefect flows (``flows/batch.py``, ``flows/serve.py``) are thin wrappers around this module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sgilo.pipeline.io.limits import check_input, input_limits
from sgilo.pipeline.io.staging import remove_stale_staging
from sgilo.pipeline.io.types import InputError
from sgilo.pipeline.markers import MARKER_DIR, read_done, write_done, write_failed
from sgilo.pipeline.provenance import code_version, now_iso, sha256_file, sha256_path

#: file name endings that are inputs when a folder is expanded (``.nii.gz`` checked first)
INPUT_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5", ".nii.gz", ".nii", ".dcm")

#: keyword arguments of ``reconstruct_file`` that a batch sets itself, never from ``recon``
_RESERVED = frozenset({"path", "out_dir", "method", "callback", "log", "prior", "claimed"})
#: ``recon`` keys that bound what is read but do not change the outputs
_LIMIT_KEYS = frozenset({"max_input_bytes", "max_input_voxels"})


class BatchOptions(BaseModel):
    """How to reconstruct every input of a batch.

    ``recon`` holds further keyword arguments of :func:`sgilo.pipeline.reconstruct.reconstruct_file`
    (``acceleration``, ``center_fraction``, ``seed``, ``mask_kind``, ``samples``, and any the
    function gains), JSON-able values only. Generative methods load ``model`` (and ``score``) by
    path inside each task, never pickled from the parent. ``workers`` runs tasks on a Dask
    LocalCluster of that many single-threaded processes; ``dask_address`` on an existing
    cluster; neither: one at a time in the flow's process.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    recon: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    score: tuple[str, ...] = ()
    device: Literal["cpu", "cuda"] = "cpu"
    workers: int | None = Field(default=None, ge=1)
    dask_address: str | None = None
    retries: int = Field(default=2, ge=0)
    retry_delay_s: float = Field(default=2.0, ge=0)

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        from sgilo.pipeline.reconstruct import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        return method

    @field_validator("recon")
    @classmethod
    def _recon_keywords(cls, recon: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(recon) & _RESERVED)
        if reserved:
            raise ValueError(f"recon may not set {', '.join(reserved)}")
        json.dumps(recon)  # JSON-able, so it can be hashed, logged and sent to workers
        return recon

    @model_validator(mode="after")
    def _one_runner(self) -> BatchOptions:
        if self.workers is not None and self.dask_address is not None:
            raise ValueError("give workers or dask_address, not both")
        return self

    def output_config(self) -> dict[str, Any]:
        """The options that change the outputs (the cache key's configuration part): not the
        input limits, which only decide whether an input is read."""
        recon = {k: v for k, v in self.recon.items() if k not in _LIMIT_KEYS}
        return {"method": self.method, "recon": recon, "device": self.device}

    def limits(self) -> tuple[int | str | None, int | str | None]:
        """``(max_input_bytes, max_input_voxels)`` from ``recon`` (``None``: the default)."""
        return self.recon.get("max_input_bytes"), self.recon.get("max_input_voxels")

    def generative(self) -> bool:
        """Whether the method needs a prior (``model``, or the default shipped prior)."""
        from sgilo.pipeline.methods import NEEDS_PRIOR

        return self.method in NEEDS_PRIOR

    def model_paths(self) -> list[Path]:
        """The model files this batch uses: the generator (a shipped prior's by name, or the
        default prior's), its shipped score models and ``score``; ``[]`` for classical methods
        or a model that cannot be found (loading it fails with a clear error later)."""
        if not self.generative():
            return []
        from sgilo.models.registry import resolve_model

        try:
            files = resolve_model(self.model)
        except ValueError:
            return [Path(p) for p in self.score]
        return [files.generator, *files.score_models, *(Path(p) for p in self.score)]


# ----------------------------------------------------------------------------- inputs


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def is_input_file(path: Path) -> bool:
    """Whether a file's name ends in one of :data:`INPUT_SUFFIXES` (case-insensitive)."""
    return path.name.lower().endswith(INPUT_SUFFIXES)


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_series(folder: Path) -> bool:
    """Whether a folder directly holds DICOM files (``.dcm``, or the ``DICM`` preamble)."""
    return any(p.is_file() and not _is_hidden(p) and _looks_like_dicom(p) for p in folder.iterdir())


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """The inputs named by ``paths``: a file as given; a folder expands to its visible input
    files (:data:`INPUT_SUFFIXES`) and its sub-folders that are DICOM series, sorted by name.
    Other sub-folders are not searched. Duplicates are dropped, order kept."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            found.append(path)
            continue
        for entry in sorted(path.iterdir(), key=lambda p: p.name):
            if _is_hidden(entry):
                continue
            if entry.is_file() and is_input_file(entry):
                found.append(entry)
            elif entry.is_dir() and is_dicom_series(entry):
                found.append(entry)
    return list(dict.fromkeys(found))


def newest_mtime(path: Path) -> float:
    """The latest modification time of a file, or of a folder and its visible files."""
    if not path.is_dir():
        return path.stat().st_mtime
    from sgilo.pipeline.provenance import visible_files

    return max([path.stat().st_mtime] + [f.stat().st_mtime for f in visible_files(path)])


# ----------------------------------------------------------------------------- cache keys


def model_hashes(options: BatchOptions) -> dict[str, str]:
    """SHA-256 of each model file (path string → hex); missing files are left out (loading
    them fails with a clear error later)."""
    return {str(p): sha256_file(p) for p in options.model_paths() if p.is_file()}


def cache_key(
    name: str, input_sha256: str, options: BatchOptions, models: dict[str, str], code: str
) -> str:
    """The done-marker key: a hash of the input's name and content, the output configuration,
    the models' contents and the code version."""
    import hashlib

    blob = json.dumps(
        {
            "name": name,
            "input": input_sha256,
            "config": options.output_config(),
            "models": sorted(models.values()),
            "code": code,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def input_key(path: Path, options: BatchOptions, models: dict[str, str]) -> tuple[str, str]:
    """``(input_sha256, cache_key)`` for an existing input."""
    digest = sha256_path(path)
    return digest, cache_key(path.name, digest, options, models, code_version())


# ----------------------------------------------------------------------------- one input


@lru_cache(maxsize=1)
def load_prior_cached(
    model: str | None, score: tuple[str, ...], device: str, fingerprint: tuple[str, ...] = ()
) -> object:
    """The prior by name or path (``None``: the default shipped prior), with the score models
    at ``score`` if any, loaded once per process (in the task's process, never pickled);
    ``fingerprint`` (the files' hashes) makes a changed file load again."""
    from sgilo.pipeline.reconstruct import load_prior, load_score_models

    prior = load_prior(model, device=device)
    if score:
        prior.score_models = load_score_models(list(score), device=device)
    return prior


@contextmanager
def input_lock(out_dir: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock for the input file name ``name`` in ``out_dir``
    (``.sgilo/locks/<hash of name>.lock``, ``flock``; the kernel releases it when the process
    dies, SIGKILL included), so that two runs never write the same outputs at once."""
    import fcntl
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    path = Path(out_dir) / MARKER_DIR / "locks" / f"{digest}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def process_input(
    path: Path,
    out_dir: Path,
    options: BatchOptions,
    models: dict[str, str],
    *,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Reconstruct one input unless its done marker is valid; write the marker after.

    Returns a record: ``input``, ``name``, ``status`` ("done" or "skipped"), ``seconds``,
    ``outputs`` (absolute paths), ``metrics``, ``diagnostics`` (per study, what the solver ran
    with and did: :meth:`sgilo.pipeline.reconstruct.StudyReconstruction.record`), ``num_slices``,
    ``key``, ``input_sha256``.
    Raises :class:`InputError` (one line naming the input) for a bad input, after recording
    it in ``.sgilo/failed/``; other ``OSError``s are left to the caller's retry policy.
    """
    from sgilo.pipeline.reconstruct import reconstruct_file

    path, out_dir = Path(path), Path(out_dir)
    with input_limits(*options.limits()):
        check_input(path)  # before it is hashed or opened: a regular file or folder, in limits
    digest, key = input_key(path, options, models)
    with input_lock(out_dir, path.name):  # another run writing this input's outputs waits here
        done = read_done(out_dir, key)
        if done is not None:
            log(f"{path.name}: skipped (finished earlier; input sha256 {digest[:12]})")
            return {**done, "input": str(path), "status": "skipped", "seconds": 0.0}
        remove_stale_staging(out_dir, path.name)  # left by a run killed while writing it
        prior = None
        if options.generative():
            fingerprint = tuple(sorted(models.values()))
            prior = load_prior_cached(options.model, options.score, options.device, fingerprint)
        try:
            result = reconstruct_file(
                path, out_dir, options.method, **options.recon, prior=prior, log=log
            )
        except InputError as exc:
            write_failed(out_dir, key, path.name, str(exc))
            raise
        record = {
            "input": str(path),
            "name": path.name,
            "status": "done",
            "seconds": round(result.seconds, 3),
            "num_slices": result.num_slices,
            "metrics": result.metrics,
            "diagnostics": result.diagnostics,
            "key": key,
            "input_sha256": digest,
            "finished": now_iso(),
        }
        write_done(out_dir, key, record, [Path(p) for p in result.outputs])
    return {**record, "outputs": [str(Path(p).resolve()) for p in result.outputs]}


def pending_inputs(
    folder: Path,
    out_dir: Path,
    options: BatchOptions,
    models: dict[str, str],
    *,
    settle_s: float = 5.0,
    now: float | None = None,
) -> tuple[list[Path], dict[str, str]]:
    """The inputs of a watched folder to reconstruct now, and why the others wait.

    An input waits while it (or a file in its series folder) was modified less than
    ``settle_s`` seconds ago: it may still be being written. It is left out, without waiting,
    when a done marker (finished) or a failed marker (a bad input, same content) exists.
    Returns ``(pending, {name: "settling" | "done" | "failed"})``.
    """
    import time

    now = time.time() if now is None else now
    pending: list[Path] = []
    held: dict[str, str] = {}
    from sgilo.pipeline.markers import read_failed

    for path in expand_inputs([folder]):
        try:
            if now - newest_mtime(path) < settle_s:
                held[path.name] = "settling"
                continue
            _, key = input_key(path, options, models)
        except OSError:  # vanished or unreadable between the listing and now: next pass
            held[path.name] = "settling"
            continue
        if read_done(out_dir, key) is not None:
            held[path.name] = "done"
        elif read_failed(out_dir, key) is not None:
            held[path.name] = "failed"
        else:
            pending.append(path)
    return pending, held
