"""`sgilo batch` as a Prefect flow: one task per input, each one call into :mod:`pipeline.batch`.

Tasks run one at a time in the flow's process by default, on a Dask LocalCluster with
``options["workers"]`` single-threaded worker processes, or on the Dask cluster at
``options["dask_address"]``. A task retries ``OSError``s (transient I/O trouble) but never a
bad input (:class:`pipeline.io.types.InputError`), which is reported in one line while the batch
goes on. Finished inputs are skipped through done markers on disk (see :mod:`pipeline.markers`),
so a re-run after a crash or SIGKILL redoes only unfinished work. The flow writes ``run.json``
(:mod:`pipeline.provenance`) and appends to ``run.log`` in the output folder, and publishes a
progress artifact while it runs and a summary artifact at the end.
"""

from __future__ import annotations

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
from prefect.client.orchestration import get_client
from prefect.futures import as_completed
from prefect.runtime import task_run as current_task_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pipeline.batch import BatchOptions, model_hashes, process_input
from pipeline.io.types import InputError
from pipeline.provenance import now_iso, run_record, write_run_json
from pipeline.runtime import cache_dir


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
    """Reconstruct one input (or skip it when its done marker is valid); returns its record."""
    logger = get_run_logger()
    return process_input(
        Path(path), Path(out_dir), BatchOptions(**options), models, log=logger.info
    )


def task_runner(options: BatchOptions) -> TaskRunner:
    """The task runner for ``options``: Dask (a new LocalCluster, or an existing cluster's
    address) or one task at a time in this process."""
    if options.workers is None and options.dask_address is None:
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if options.dask_address is not None:
        return DaskTaskRunner(address=options.dask_address)
    scratch = cache_dir() / "dask"
    scratch.mkdir(parents=True, exist_ok=True)
    # workers report to this flow's Prefect API (on a temporary server they would start their own)
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": options.workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": ":0",
            "local_directory": str(scratch),
            "env": {"PREFECT_API_URL": api_url},
        },
    )


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


def _one_line(exc: BaseException, name: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, InputError) else f"{name}: {text}"


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
    """Failure records for inputs whose file name an earlier input has (same output names)."""
    seen: dict[str, int] = {}
    clashes = {}
    for i, p in enumerate(paths):
        if p.name in seen:
            first = seen[p.name] + 1
            clashes[i] = _failure(p, f"{p.name}: same file name as input {first}; outputs collide")
        else:
            seen[p.name] = i
    return clashes


def _run_tasks(
    paths: list[Path], out: Path, opts: BatchOptions, models: dict[str, str], log: RunLog
) -> list[dict[str, Any]]:
    """Run one task per input on the options' task runner; records in input order. The
    progress artifact is updated as each input finishes."""
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
    with task_runner(opts) as runner:
        futures = {
            runner.submit(
                task,
                parameters={
                    "path": str(p),
                    "out_dir": str(out),
                    "options": payload,
                    "models": models,
                },
            ): i
            for i, p in enumerate(paths)
            if i not in records
        }
        for future in as_completed(list(futures)):
            i = futures[future]
            try:
                records[i] = future.result()
                log(f"{paths[i].name}: {records[i]['status']} in {records[i]['seconds']:.2f} s")
            except Exception as exc:  # noqa: BLE001 - every failure becomes one line
                records[i] = _failure(paths[i], _one_line(exc, paths[i].name))
                log(records[i]["error"], error=True)
            update_progress_artifact(progress, 100.0 * len(records) / len(paths))
    update_progress_artifact(progress, 100.0)
    return [records[i] for i in range(len(paths))]


@flow(name="sgilo-batch")
def batch_flow(inputs: list[str], out_dir: str, options: dict[str, Any]) -> dict[str, Any]:
    """Reconstruct every input into ``out_dir``; a bad input is reported and the rest go on.

    ``options`` are :class:`pipeline.batch.BatchOptions` fields. Writes ``run.json`` and
    appends to ``run.log``. Returns ``{"records": [...], "failed": [one line per failed
    input], "summary": str}``; records are in input order.
    """
    opts = BatchOptions(**options)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out)
    started = now_iso()
    models = model_hashes(opts)
    paths = [Path(p).absolute() for p in inputs]
    log(f"batch of {len(paths)} input(s): {opts.method} into {out}")
    records = _run_tasks(paths, out, opts, models, log) if paths else []
    failed = [r["error"] for r in records if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    summary = (
        f"{counts['done']} reconstructed, {counts['skipped']} skipped (finished earlier), "
        f"{counts['failed']} failed, of {len(paths)} input(s); outputs in {out}"
    )
    timings = {
        r["input"]: {k: r[k] for k in ("status", "seconds", "error") if k in r} for r in records
    }
    hashes = {r["input"]: r["input_sha256"] for r in records if "input_sha256" in r}
    config = {
        "inputs": [str(p) for p in paths],
        "out_dir": str(out),
        "options": opts.model_dump(mode="json"),
    }
    record = run_record(
        config, paths, opts.model_paths(), started=started, timings=timings, input_hashes=hashes
    )
    write_run_json(out, record)
    create_markdown_artifact(
        summary_markdown(records, out), key="sgilo-batch-summary", description=summary
    )
    log(summary)
    return {"records": records, "failed": failed, "summary": summary}
