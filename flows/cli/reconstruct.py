"""``sgilo reconstruct INPUT... --method M --out DIR``: every input in this process, one after
another; a failed input is one line on stderr and the others go on (exit 1); ``run.json`` and
``run.log`` in ``--out`` (:mod:`sgilo.pipeline.runs`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sgilo.flows.cli.parser import printable, stderr
from sgilo.flows.cli.recon_options import add_reconstruct_options, check_reconstruct_options


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reconstruct`` command."""

    def populate(rec: argparse.ArgumentParser) -> None:
        rec.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
        add_reconstruct_options(rec)

    sub.add_parser(
        "reconstruct",
        help="reconstruct fastMRI/ISMRMRD k-space files, DICOM series and NIfTI volumes",
        populate=populate,
    )


def _append_log(out: Path, message: str, *, error: bool = False) -> None:
    """``run.log`` is a record, not the channel: if it cannot be written (the disk filled up,
    the folder went away) the run goes on and the line is still on stderr."""
    from sgilo.pipeline.provenance import append_log

    try:
        append_log(out, message, error=error)
    except OSError:
        pass


def _run_config(args: argparse.Namespace) -> dict:
    """``run.json["config"]``: the command line and every parsed option (``solver_options``: the
    checked ``--config``/``--set`` settings)."""
    return {
        "command": "sgilo " + " ".join(args.argv),
        "method": args.method,
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("inputs", "argv", "command")
        },
    }


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import os
    import time
    import traceback

    from sgilo.pipeline import interrupt
    from sgilo.pipeline.io.limits import check_input, input_limits, shown_name
    from sgilo.pipeline.io.types import InputError
    from sgilo.pipeline.provenance import sha256_path
    from sgilo.pipeline.reconstruct import output_clashes, reconstruct_file
    from sgilo.pipeline.runs import RunTally, failure_line, failure_reason, is_internal

    status, prior = check_reconstruct_options(args, "sgilo reconstruct")
    if status:
        return status
    tally = RunTally(_run_config(args))

    def progress(step: int, total: int, message: str) -> None:
        if total >= 50 and (step % max(total // 10, 1) == 0 or step == total):
            stderr(f"  {message}: {step}/{total}")

    def log(message: str) -> None:
        stderr(printable(message))
        _append_log(args.out, message)

    inputs = list(dict.fromkeys(args.inputs))  # an input named twice is reconstructed once
    for path in sorted({p for p in args.inputs if args.inputs.count(p) > 1}):
        stderr(f"sgilo reconstruct: {shown_name(path)} is given more than once; once is enough")
    claimed: dict[str, str] = {}
    clashes = output_clashes(inputs)
    limits = {"max_bytes": args.max_input_bytes, "max_voxels": args.max_input_voxels}
    for i, path in enumerate(inputs, 1):
        failures = tally.failures
        interrupt.set_progress(i - 1 - failures, len(inputs), failed=failures)  # if interrupted
        interrupt.raise_if_received()  # a signal that a library swallowed: no next input
        stderr(f"[{i}/{len(inputs)}] {shown_name(path)}: {args.method}")
        t0 = time.perf_counter()
        try:
            if i - 1 in clashes:
                raise InputError(clashes[i - 1])
            with input_limits(**limits):
                check_input(path)  # before anything opens it: a regular file or folder, in limits
            result = reconstruct_file(
                path,
                args.out,
                args.method,
                acceleration=args.acceleration,
                center_fraction=args.center_fraction,
                seed=args.seed,
                mask_kind=args.mask_type,
                log=log,
                callback=progress,
                prior=prior,
                samples=args.samples,
                formats=args.format,
                anonymize=args.anonymize,
                max_input_bytes=args.max_input_bytes,
                max_input_voxels=args.max_input_voxels,
                claimed=claimed,
                solver_options=args.solver_options,
                volumes=args.volumes,
            )
        except Exception as exc:  # noqa: BLE001 - every failure is one line; the rest go on
            interrupt.raise_if_received()  # the signal as a library's error: unfinished
            line = printable(" ".join(failure_line(exc, shown_name(path)).split()))
            stderr(f"sgilo: error: {line}")
            _append_log(args.out, line, error=True)
            if is_internal(exc) and os.environ.get("SGILO_DEBUG"):
                traceback.print_exc()  # a bug or an exhausted resource: the traceback on request
            tally.failed(path, printable(failure_reason(exc)))
            continue
        entry = {
            "status": "done",
            "seconds": round(time.perf_counter() - t0, 3),
            "outputs": [p.name for p in result.outputs],
            **({"metrics": result.metrics} if result.metrics else {}),
            "diagnostics": result.diagnostics,
        }
        try:  # the input was read and checked: hash it for run.json (never a failed input)
            digest = sha256_path(path)
        except OSError:
            digest = None
        tally.finished(path, entry, digest)
    if tally.failures:
        stderr(f"sgilo reconstruct: {tally.failures} of {len(inputs)} input(s) failed")
    if args.out.is_dir():
        try:
            tally.write(args.out, inputs, [prior.path] if prior is not None else [])
        except OSError as exc:
            shown = printable(str(args.out))
            stderr(f"sgilo: error: cannot write run.json in {shown} ({exc.strerror})")
            return 1
    return 1 if tally.failures else 0
