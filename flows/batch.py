"""`sgilo batch` as a Prefect flow: one task per input, each one call into
:mod:`sgilo.pipeline.batch`.

Tasks run one at a time in the flow's own thread by default (the main thread under ``sgilo
batch``, where SIGTERM and Ctrl-C are raised: see :mod:`sgilo.pipeline.interrupt`), on a new
local Dask cluster of ``options["workers"]`` single-threaded worker processes (one per GPU with
``device="cuda"``: :mod:`sgilo.flows.dask_cluster`), or on the Dask cluster at
``options["dask_address"]``; a task's record names the Dask worker that ran it. A task retries
``OSError``s (transient I/O trouble) but never a bad input
(:class:`sgilo.pipeline.io.types.InputError`), which is reported in one line while the batch goes
on. Finished inputs are skipped through done markers on disk (see
:mod:`sgilo.pipeline.markers`), so a re-run after a crash or SIGKILL redoes only unfinished
work; the staging folders a killed run left are removed when the next run starts. The flow
writes ``run.json`` (:mod:`sgilo.pipeline.provenance`, itself staged) and appends to
``run.log`` in the output folder, and publishes a progress artifact while it runs and a summary
artifact at the end. An interrupted run (SIGTERM, Ctrl-C) leaves a line in ``run.log``, and
``run.json`` of the previous run.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import types
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import task_run as current_task_run

from sgilo.flows.dask_cluster import task_runner
from sgilo.pipeline import interrupt
from sgilo.pipeline.batch import BatchOptions, model_hashes, process_input
from sgilo.pipeline.io.staging import remove_stale_staging
from sgilo.pipeline.io.types import InputError
from sgilo.pipeline.markers import remove_stale_temporaries
from sgilo.pipeline.reconstruct import output_clashes
from sgilo.pipeline.runs import RunTally, failure_line


def _detach_temporary_server() -> None:
    """Without ``PREFECT_API_URL`` Prefect starts a temporary API server as a child process;
    start it in its own session and, on Linux, ending with this process (``PR_SET_PDEATHSIG``).
    A Ctrl-C in the terminal then reaches sgilo alone, which still reports the interrupted run
    to the server (instead of retrying a server that the same Ctrl-C stopped), and a SIGKILLed
    ``sgilo batch`` does not leave the server running. Does nothing when a server is
    configured."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    import subprocess

    from prefect.server.api import server

    start = getattr(server.SubprocessASGIServer, "_run_uvicorn_command", None)
    if start is None or getattr(start, "detached", False) or not hasattr(server, "subprocess"):
        return  # another Prefect version: its temporary server as it comes

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("start_new_session", True)
        # the parent-death signal follows the thread that starts the child: the main thread only
        if (
            sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
        ):
            import ctypes  # loaded here: the child, between fork and exec, must not import

            prctl = ctypes.CDLL(None, use_errno=True).prctl
            kwargs.setdefault("preexec_fn", functools.partial(_die_with_parent, prctl, os.getpid()))
        return subprocess.Popen(*args, **kwargs)

    def run_detached(self: Any) -> subprocess.Popen[Any]:
        server.subprocess = types.SimpleNamespace(Popen=popen)  # seen by this call only
        try:
            return start(self)
        finally:
            server.subprocess = subprocess

    run_detached.detached = True  # type: ignore[attr-defined]
    server.SubprocessASGIServer._run_uvicorn_command = run_detached  # type: ignore[method-assign]


def _die_with_parent(prctl: Callable[..., int], parent: int) -> None:
    """In a child before ``exec``: get SIGTERM when the parent (its main thread) ends."""
    prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent is already gone
        os._exit(1)


_detach_temporary_server()


def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: an ``OSError`` that is not a bad input (I/O trouble may pass)."""
    try:
        state.result()
    except InputError:
        return False
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is not transient
        return False
    return False


def _task_name() -> str:
    return Path(str(current_task_run.parameters.get("path", "input"))).name


@task(
    name="reconstruct-input",
    task_run_name=_task_name,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_is_transient,
    cache_policy=NO_CACHE,
)
def reconstruct_input(
    path: str, out_dir: str, options: dict[str, Any], models: dict[str, str]
) -> dict[str, Any]:
    """Reconstruct one input (or skip it when its done marker is valid); returns its record,
    with ``worker`` (the Dask worker's name) when it ran on a Dask worker."""
    logger = get_run_logger()
    record = process_input(
        Path(path), Path(out_dir), BatchOptions(**options), models, log=logger.info
    )
    worker = dask_worker_name()
    return record if worker is None else {**record, "worker": worker}


def dask_worker_name() -> str | None:
    """The name of the Dask worker running this code (``dask worker --name``, else its address);
    ``None`` outside a Dask worker."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):  # no distributed, or not in a worker
        return None


def sequential(options: BatchOptions) -> bool:
    """Whether the batch runs one input at a time in the flow's thread (no Dask)."""
    return options.workers is None and options.dask_address is None


class RunLog:
    """Lines to ``run.log`` in the output folder (appended, time-stamped) and to Prefect's log.

    Only file names, hashes, statuses and figures are logged: never DICOM header values."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "run.log"
        self.logger = get_run_logger()

    def __call__(self, message: str, *, error: bool = False) -> None:
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {'ERROR' if error else 'INFO'} {message}\n")
        (self.logger.error if error else self.logger.info)(message)


def summary_markdown(records: list[dict[str, Any]], out_dir: Path) -> str:
    """The run-summary artifact: one row per input (status, seconds, metrics, output links)."""
    lines = [
        f"# sgilo batch: {out_dir}",
        "",
        "| input | status | seconds | metrics | outputs |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in (r.get("metrics") or {}).items())
        links = " ".join(f"[{Path(p).name}]({Path(p).as_uri()})" for p in r.get("outputs", []))
        detail = r.get("error", "").replace("|", "\\|")
        status = r["status"] + (f": {detail}" if detail else "")
        lines.append(
            f"| {r['name']} | {status} | {r.get('seconds', 0):.2f} | {metrics} | {links} |"
        )
    return "\n".join(lines) + "\n"


def _failure(path: Path, error: str) -> dict[str, Any]:
    return {"input": str(path), "name": path.name, "status": "failed", "error": error}


def _name_clashes(paths: list[Path]) -> dict[int, dict[str, Any]]:
    """Failure records for inputs whose outputs an earlier input of the batch would write (the
    same output stem: ``a/scan.h5`` and ``b/scan.h5``, or ``scan.h5`` and ``scan.nii.gz``;
    :func:`sgilo.pipeline.reconstruct.output_clashes`)."""
    return {i: _failure(paths[i], why) for i, why in output_clashes(paths).items()}


def _run_tasks(
    paths: list[Path], out: Path, opts: BatchOptions, models: dict[str, str], log: RunLog
) -> list[dict[str, Any]]:
    """Run one task per input; records in input order. The progress artifact (and the count
    an interrupted command reports) is updated as each input finishes."""
    records = _name_clashes(paths)
    for record in records.values():
        log(record["error"], error=True)
    progress = create_progress_artifact(
        0.0, key="sgilo-batch-progress", description=f"sgilo batch into {out}"
    )
    task = reconstruct_input.with_options(
        retries=opts.retries, retry_delay_seconds=opts.retry_delay_s
    )
    payload = opts.model_dump(mode="json")
    todo = [i for i in range(len(paths)) if i not in records]

    def parameters(i: int) -> dict[str, Any]:
        return {"path": str(paths[i]), "out_dir": str(out), "options": payload, "models": models}

    def finished(i: int, outcome: dict[str, Any] | Exception) -> None:
        failed = isinstance(outcome, Exception)
        records[i] = _failure(paths[i], failure_line(outcome, paths[i].name)) if failed else outcome
        _note_progress(records, len(paths))  # before the log line: a signal may follow it
        if failed:
            log(records[i]["error"], error=True)
        else:
            log(f"{paths[i].name}: {outcome['status']} in {outcome['seconds']:.2f} s")
        update_progress_artifact(progress, 100.0 * len(records) / len(paths))

    _note_progress(records, len(paths))
    if sequential(opts):
        # in this thread (the main thread under `sgilo batch`), so that SIGTERM and Ctrl-C
        # stop the input being reconstructed at once and its staging folder is removed
        for i in todo:
            interrupt.raise_if_received()  # a signal that a library swallowed: no next input
            try:
                outcome = task(**parameters(i))
            except Exception as exc:  # noqa: BLE001 - every failure becomes one line
                interrupt.raise_if_received()  # the signal as a library's error: unfinished
                outcome = exc
            finished(i, outcome)
    else:
        try:
            # what the workers print after SIGTERM/Ctrl-C is dropped: the command ends in one line
            with interrupt.quiet_children(), task_runner(opts) as runner:
                futures = {runner.submit(task, parameters=parameters(i)): i for i in todo}
                for future in as_completed(list(futures)):
                    try:
                        outcome = future.result()
                    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
                        interrupt.raise_if_received()
                        outcome = exc
                    finished(futures[future], outcome)
                    interrupt.raise_if_received()
        except BaseException:
            # interrupted: the cluster is shut down; remove what its killed workers staged
            remove_stale_staging(out)
            raise
    update_progress_artifact(progress, 100.0)
    return [records[i] for i in range(len(paths))]


def _note_progress(records: dict[int, dict[str, Any]], total: int) -> None:
    failed = sum(r["status"] == "failed" for r in records.values())
    interrupt.set_progress(len(records) - failed, total, failed=failed)


@flow(name="sgilo-batch")
def batch_flow(inputs: list[str], out_dir: str, options: dict[str, Any]) -> dict[str, Any]:
    """Reconstruct every input into ``out_dir``; a bad input is reported and the rest go on.

    ``options`` are :class:`sgilo.pipeline.batch.BatchOptions` fields. Writes ``run.json`` and
    appends to ``run.log``. Returns ``{"records": [...], "failed": [one line per failed
    input], "summary": str}``; records are in input order.
    """
    with interrupt.handlers_in_place():  # Prefect's flow run installs its own SIGTERM handler
        return _batch(inputs, out_dir, options)


def _batch(inputs: list[str], out_dir: str, options: dict[str, Any]) -> dict[str, Any]:
    opts = BatchOptions(**options)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)  # left by a killed run (never one that a live run is using)
    remove_stale_temporaries(out)
    log = RunLog(out)
    models = model_hashes(opts)
    paths = [Path(p).absolute() for p in inputs]
    tally = RunTally(
        {
            "inputs": [str(p) for p in paths],
            "out_dir": str(out),
            "options": opts.model_dump(mode="json"),
        }
    )
    log(f"batch of {len(paths)} input(s): {opts.method} into {out}")
    try:
        records = _run_tasks(paths, out, opts, models, log) if paths else []
    except BaseException as exc:
        signum = interrupt.received() or interrupt.signal_of(exc)
        if signum is not None:
            log(
                interrupt.message(signum).removeprefix("sgilo: ") + " (run.json: the previous run)",
                error=True,
            )
        raise
    failed = [r["error"] for r in records if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    summary = (
        f"{counts['done']} reconstructed, {counts['skipped']} skipped (finished earlier), "
        f"{counts['failed']} failed, of {len(paths)} input(s); outputs in {out}"
    )
    for r in records:
        entry = {k: r[k] for k in ("status", "seconds", "error", "diagnostics", "worker") if k in r}
        tally.finished(r["input"], entry, r.get("input_sha256"))
    tally.write(out, paths, opts.model_paths())  # a failed input is never opened again
    create_markdown_artifact(
        summary_markdown(records, out), key="sgilo-batch-summary", description=summary
    )
    log(summary)
    return {"records": records, "failed": failed, "summary": summary}
