"""One run over many inputs: each input's outcome, each failure as one line, and ``run.json``.

``sgilo reconstruct`` (one input after another in the command's process) and the batch flow
(:mod:`sgilo.flows.batch`, one task per input) both go through :class:`RunTally`: an input that
fails is one line naming it (:func:`failure_line`) and the others go on; at the end the tally
writes ``run.json`` (:func:`sgilo.pipeline.provenance.run_record`) with every input's status,
and the hashes of the inputs that were read (a failed input is never opened again: it may be a
pipe or unreadable).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sgilo.pipeline.io.types import InputError
from sgilo.pipeline.provenance import now_iso, run_record, write_run_json


def failure_reason(exc: BaseException) -> str:
    """The exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def failure_line(exc: BaseException, name: str) -> str:
    """One line for an input that failed with ``exc``: a bad input's own message (it names the
    file), ``"<name>: <reason>"`` for other I/O and value errors, and
    ``"<name>: internal error (<type>: <reason>)"`` for anything else (a bug, an exhausted
    resource)."""
    reason = failure_reason(exc)
    if isinstance(exc, InputError):
        return reason
    if isinstance(exc, OSError | ValueError):
        return f"{name}: {reason}"
    return f"{name}: internal error ({type(exc).__name__}: {reason})"


def is_internal(exc: BaseException) -> bool:
    """Whether a failure is not a bad input nor I/O trouble (its traceback may help)."""
    return not isinstance(exc, OSError | ValueError)


class RunTally:
    """The outcomes of one run's inputs (path string → its ``run.json`` timing entry) and the
    hashes of the inputs that were read; :meth:`write` records them in ``out_dir/run.json``.

    Args:
        config: the run's resolved configuration (JSON-able), stored as ``run.json["config"]``.
        started: the run's start time (ISO-8601; default: now).
    """

    def __init__(self, config: Mapping[str, Any], *, started: str | None = None) -> None:
        self.config = dict(config)
        self.started = started or now_iso()
        self.timings: dict[str, dict[str, Any]] = {}
        self.hashes: dict[str, str] = {}

    @property
    def failures(self) -> int:
        """How many inputs failed so far."""
        return sum(t.get("status") == "failed" for t in self.timings.values())

    def finished(self, path: str | Path, entry: Mapping[str, Any], sha256: str | None) -> None:
        """Record an input that was reconstructed or skipped (``entry["status"]``); ``sha256``:
        its content hash, when known."""
        self.timings[str(path)] = dict(entry)
        if sha256 is not None:
            self.hashes[str(path)] = sha256

    def failed(self, path: str | Path, line: str) -> None:
        """Record an input that failed with the one-line reason ``line``."""
        self.timings[str(path)] = {"status": "failed", "error": line}

    def write(self, out_dir: Path, inputs: list[Path], models: list[Path]) -> Path:
        """Write ``out_dir/run.json`` (staged, atomic); returns its path. Inputs are listed in
        the order given; only the hashes recorded here are used (no input is opened again)."""
        record = run_record(
            self.config,
            inputs,
            models,
            started=self.started,
            timings=self.timings,
            input_hashes=self.hashes,
            hash_inputs=False,
        )
        return write_run_json(out_dir, record)
