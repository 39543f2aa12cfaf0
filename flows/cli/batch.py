"""``sgilo batch`` (many inputs as a Prefect flow, finished ones skipped) and ``sgilo serve``
(new studies of a watched folder, on a schedule): the reconstruct options plus where the tasks
run (:class:`sgilo.pipeline.batch.BatchOptions`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sgilo.flows.cli.parser import add_mirrored, one_line, positive_float, stderr
from sgilo.flows.cli.recon_options import (
    add_reconstruct_options,
    check_reconstruct_options,
    reconstruct_kwargs,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` and ``serve`` commands."""

    def populate_batch(batch: argparse.ArgumentParser) -> None:
        batch.add_argument("inputs", nargs="+", type=Path, metavar="INPUT_OR_FOLDER")
        add_reconstruct_options(batch)
        _add_runner_options(batch)

    sub.add_parser(
        "batch",
        help="reconstruct many inputs as a Prefect flow (skips finished work; --workers N)",
        description="Reconstruct files and folders of studies (.h5, .hdf5, .nii, .nii.gz, .dcm and "
        "DICOM series folders; hidden files skipped) as a Prefect flow. Finished inputs are "
        "skipped on a re-run; OUT gets run.json (provenance) and run.log. See docs/BATCH.md.",
        populate=populate_batch,
    )

    def populate_serve(serve: argparse.ArgumentParser) -> None:
        serve.add_argument("--watch", type=Path, required=True, metavar="FOLDER")
        add_reconstruct_options(serve)
        _add_runner_options(serve)
        when = serve.add_mutually_exclusive_group()
        when.add_argument("--cron", default=None, help='cron schedule (default "*/5 * * * *")')
        when.add_argument("--interval", type=positive_float, default=None, help="every S seconds")
        from sgilo.pipeline.batch import pending_inputs

        add_mirrored(
            serve,
            "--settle",
            source=pending_inputs,
            field="settle_s",
            type=float,
            metavar="S",
            help="leave studies modified in the last S seconds for the next pass (still being "
            "written)",
        )
        serve.add_argument("--name", default="sgilo-watch", help="deployment name")
        serve.add_argument("--once", action="store_true", help="one pass now, no server needed")

    sub.add_parser(
        "serve",
        help="reconstruct new studies dropped into a folder, on a schedule (Prefect deployment)",
        description="Serve a Prefect deployment that reconstructs the new studies of --watch "
        "into --out on a cron schedule (default every 5 minutes). Needs a running Prefect "
        "server (`prefect server start --host 127.0.0.1`, then PREFECT_API_URL); --once runs one "
        "pass without a server. See docs/BATCH.md.",
        populate=populate_serve,
    )


def _add_runner_options(parser: argparse.ArgumentParser) -> None:
    from sgilo.pipeline.batch import BatchOptions

    where = parser.add_mutually_exclusive_group()
    add_mirrored(
        where,
        "--workers",
        source=BatchOptions,
        field="workers",
        type=int,
        help="run on a Dask LocalCluster of N processes (with --device cuda: one per GPU, "
        "round-robin when N exceeds the GPUs)",
    )
    add_mirrored(
        where,
        "--dask-address",
        source=BatchOptions,
        field="dask_address",
        metavar="ADDR",
        help="run on an existing Dask cluster",
    )


def _batch_options(args: argparse.Namespace, command: str) -> dict | None:
    """The batch options from the command line, validated; ``None`` after a usage error."""
    from pydantic import ValidationError

    from sgilo.pipeline.batch import BatchOptions

    if args.workers is not None and args.workers < 1:
        stderr(f"{command}: --workers must be at least 1")
        return None
    status, _prior = check_reconstruct_options(args, command)  # validates; tasks load their own
    if status:
        return None
    try:
        options = BatchOptions(
            method=args.method,
            recon=reconstruct_kwargs(args),
            model=args.model,
            score=tuple(str(p) for p in args.score),
            device=args.device,
            workers=args.workers,
            dask_address=args.dask_address,
        )
    except ValidationError as exc:
        stderr(f"{command}: {one_line(exc)}")
        return None
    return options.model_dump(mode="json")


def _report_batch(result: dict, command: str) -> int:
    for line in result["failed"]:
        stderr(f"sgilo: error: {line}")
    print(f"{command}: {result['summary']}", flush=True)
    return 1 if result["failed"] else 0


def cmd_batch(args: argparse.Namespace) -> int:
    from sgilo.pipeline.batch import expand_inputs

    options = _batch_options(args, "sgilo batch")
    if options is None:
        return 2
    inputs = expand_inputs(args.inputs)
    if not inputs:
        stderr("sgilo batch: no inputs (.h5, .hdf5, .nii, .nii.gz, .dcm, DICOM series) found")
        return 2
    from sgilo.flows.batch import batch_flow

    return _report_batch(
        batch_flow([str(p) for p in inputs], str(args.out), options), "sgilo batch"
    )


def prefect_api_url() -> str | None:
    """The configured Prefect server's API address (``None``: no server)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.watch.is_dir():
        stderr(f"sgilo serve: --watch {args.watch}: not a folder")
        return 2
    options = _batch_options(args, "sgilo serve")
    if options is None:
        return 2
    parameters = {
        "watch": str(args.watch.absolute()),
        "out_dir": str(args.out.absolute()),
        "options": options,
        "settle_s": args.settle,
    }
    if args.once:
        from sgilo.flows.serve import watch_flow

        return _report_batch(watch_flow(**parameters), "sgilo serve")
    if not prefect_api_url():
        stderr(
            "sgilo serve: no Prefect server: run `prefect server start --host 127.0.0.1` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` (or use --once)"
        )
        return 2
    from sgilo.flows.serve import serve_watch

    cron = args.cron or (None if args.interval else "*/5 * * * *")
    serve_watch(parameters, name=args.name, cron=cron, interval=args.interval)
    return 0
