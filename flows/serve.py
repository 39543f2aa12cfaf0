"""`sgilo serve`: a watched folder reconstructed on a schedule, as a Prefect deployment.

Each run of :func:`watch_flow` lists the studies in the watched folder, leaves out those still
being written (modified in the last ``settle_s`` seconds), finished (a valid done marker) or
known bad (a failed marker for the same content), and runs :func:`sgilo.flows.batch.batch_flow` on
the rest. :func:`serve_watch` serves the flow on a running Prefect server with a cron or
interval schedule; scheduled runs execute in this process's runner. Under ``sgilo serve
--once``, SIGTERM and Ctrl-C end the pass as they end ``sgilo batch``
(:mod:`sgilo.pipeline.interrupt`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from sgilo.flows.batch import batch_flow
from sgilo.pipeline import interrupt
from sgilo.pipeline.batch import BatchOptions, model_hashes, pending_inputs


@flow(name="sgilo-watch", log_prints=True)
def watch_flow(
    watch: str, out_dir: str, options: dict[str, Any], settle_s: float = 5.0
) -> dict[str, Any]:
    """One pass over the watched folder: reconstruct the new, settled studies into
    ``out_dir``. Returns the batch result (``records``, ``failed``, ``summary``) plus ``held``
    (input name → "settling", "done" or "failed") for the inputs left out."""
    with interrupt.handlers_in_place():  # Prefect's flow run installs its own SIGTERM handler
        return _watch_pass(watch, out_dir, options, settle_s)


def _watch_pass(
    watch: str, out_dir: str, options: dict[str, Any], settle_s: float
) -> dict[str, Any]:
    logger = get_run_logger()
    opts = BatchOptions(**options)
    pending, held = pending_inputs(
        Path(watch), Path(out_dir), opts, model_hashes(opts), settle_s=settle_s
    )
    counts = {s: sum(v == s for v in held.values()) for s in ("settling", "done", "failed")}
    logger.info(
        "%s: %d new; %d still being written, %d finished earlier, %d bad (unchanged)",
        watch,
        len(pending),
        counts["settling"],
        counts["done"],
        counts["failed"],
    )
    if not pending:
        return {"records": [], "failed": [], "summary": "nothing new", "held": held}
    result = batch_flow([str(p) for p in pending], out_dir, options)
    return {**result, "held": held}


def serve_watch(
    parameters: dict[str, Any],
    *,
    name: str = "sgilo-watch",
    cron: str | None = None,
    interval: float | None = None,
) -> None:
    """Serve :func:`watch_flow` as deployment ``sgilo-watch/<name>`` with ``parameters`` on
    the Prefect server at ``PREFECT_API_URL``, on ``cron`` or every ``interval`` seconds; runs
    until interrupted."""
    from prefect.deployments.runner import EntrypointType

    watch_flow.serve(
        name=name,
        cron=cron,
        interval=interval,
        parameters=parameters,
        description=f"reconstruct new studies in {parameters['watch']} into "
        f"{parameters['out_dir']}",
        tags=["sgilo"],
        limit=1,  # one pass at a time: a late run waits instead of racing the running one
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
