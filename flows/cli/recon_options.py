"""The options of one reconstruction (method, model, undersampling, solver settings, outputs),
shared by ``sgilo reconstruct``, ``batch`` and ``serve``, and their checks before any input is
read.

``--set FIELD=VALUE`` (repeatable) and ``--config FILE.json`` (an object of fields; ``--set``
overrides it) set any field of the method's config (:mod:`sgilo.pipeline.method_settings`); the
checked settings become ``args.solver_options``, a keyword argument of
:func:`sgilo.pipeline.reconstruct.reconstruct_file` like the other options.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sgilo.flows.cli.parser import add_mirrored, parsed_by, positive_float, printable, stderr


def add_reconstruct_options(parser: argparse.ArgumentParser) -> None:
    """The options of one reconstruction, shared by every command that reconstructs inputs.
    The method names come from :data:`sgilo.pipeline.methods.METHODS` (importing it loads
    torch: these options are added only when a reconstructing command is used)."""
    from sgilo.pipeline.batch import BatchOptions
    from sgilo.pipeline.methods import METHODS
    from sgilo.pipeline.solvers.sgilo import SGILOConfig

    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--model",
        default=None,
        help="csgm/ilo/sgilo/auto prior: a shipped name (default brain-t1-128), a generator file "
        "(sgilo's generator.pt or a rosinality StyleGAN-2 file) or a folder with generator.pt and "
        "score_*.pt",
    )
    parser.add_argument(
        "--score",
        action="append",
        default=[],
        metavar="PATH",
        help="sgilo (and auto): a score_model.pt (repeat for z and block spaces); default: the "
        "prior's score models (none for a generator file: no prior step)",
    )
    add_mirrored(
        parser,
        "--samples",
        source=SGILOConfig,
        field="chains",
        type=int,
        help="sgilo (and auto): chains K; K >= 2 also writes the per-pixel std over the chains "
        "as reconstruction_std (their spread, not an error map)",
    )
    add_mirrored(parser, "--device", source=BatchOptions, field="device", choices=("cpu", "cuda"))
    parser.add_argument(
        "--seed", type=int, default=None, help="mask seed (default: from file name)"
    )
    parser.add_argument("--acceleration", type=positive_float, default=None)
    parser.add_argument("--center-fraction", type=positive_float, default=None)
    parser.add_argument("--mask-type", choices=("random", "equispaced"), default="random")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a field of the method's config, e.g. lam=3e-3 or steps=[100,100] (VALUE is JSON "
        "when it parses, else text); repeatable; overrides --config",
    )
    parser.add_argument(
        "--config",
        dest="config_file",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="a JSON object of the method's config fields (see --set)",
    )

    parser.add_argument(
        "--format",
        type=parsed_by("sgilo.pipeline.export", "parse_formats"),
        default=None,
        metavar="h5,nifti,dicom,png",
        help="outputs to write (comma-separated); default: h5, plus the input's own format for "
        "NIfTI/DICOM inputs. HDF5 inputs always get the h5 output",
    )
    parser.add_argument(
        "--anonymize",
        action="store_true",
        help="DICOM outputs: replace the patient module and study identifiers",
    )

    parser.add_argument(
        "--max-input-bytes",
        type=parsed_by("sgilo.pipeline.io.limits", "parse_size"),
        default=None,
        metavar="SIZE",
        help="refuse an input larger than this on disk (a folder: its files in all), e.g. 2G; "
        "default $SGILO_MAX_INPUT_BYTES or 8G (docs/RELIABILITY.md)",
    )
    parser.add_argument(
        "--max-input-voxels",
        type=parsed_by("sgilo.pipeline.io.limits", "parse_size"),
        default=None,
        metavar="N",
        help="refuse an input of more k-space samples or image voxels than this; default "
        "$SGILO_MAX_INPUT_VOXELS or 2**28",
    )
    parser.add_argument(
        "--volumes",
        type=parsed_by("sgilo.pipeline.io.ismrmrd_dimensions", "check_selection"),
        default=None,
        metavar="SPEC",
        help="ISMRMRD inputs: reconstruct only these volumes, e.g. 'repetition=0,1;contrast=0' "
        "(counters: contrast, phase, repetition, set); default all, one output set each",
    )


def solver_settings(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """The method's settings from ``--config`` then ``--set``, checked by the method's config:
    ``(settings, None)``, or ``({}, "<option>: <what is wrong>")``."""
    import json

    from sgilo.pipeline.method_settings import SettingError, check_settings, parse_assignment

    given: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if args.config_file is not None:
        where = f"--config {printable(str(args.config_file))}"
        try:
            loaded = json.loads(Path(args.config_file).read_text(encoding="utf-8"))
        except OSError as exc:
            return {}, f"{where}: cannot read it ({exc.strerror or type(exc).__name__})"
        except ValueError as exc:
            return {}, f"{where}: not JSON ({' '.join(str(exc).split())})"
        if not isinstance(loaded, dict):
            return {}, f"{where}: expected a JSON object of {args.method}'s fields"
        given.update(loaded)
        origin.update(dict.fromkeys(loaded, where))
    for item in args.settings:
        try:
            field, value = parse_assignment(item)
        except ValueError as exc:
            return {}, f"--set {printable(item)}: {exc}"
        given[field] = value
        origin[field] = f"--set {printable(item)}"
    try:
        return check_settings(args.method, given), None
    except SettingError as exc:
        where = origin.get(exc.field) or ("--set" if args.settings else "--config")
        return {}, f"{where}: {printable(str(exc))}"


def check_reconstruct_options(args: argparse.Namespace, command: str) -> tuple[int, object]:
    """Validate the reconstruct options, prepare ``--out`` and load the prior the method needs;
    sets ``args.solver_options`` (the checked ``--config``/``--set`` settings).

    Returns ``(0, prior_or_None)``, or ``(2, None)`` after printing a one-line usage error.
    """
    if (args.acceleration is None) != (args.center_fraction is None):
        stderr(f"{command}: --acceleration and --center-fraction go together")
        return 2, None
    if args.acceleration is not None and args.acceleration < 1:
        stderr(f"{command}: --acceleration must be at least 1, got {args.acceleration:g}")
        return 2, None
    if args.center_fraction is not None and args.center_fraction >= 1:
        stderr(f"{command}: --center-fraction must be below 1, got {args.center_fraction:g}")
        return 2, None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            stderr(f"{command}: --device cuda requested but no CUDA device is available")
            return 2, None
    prior = None
    if args.samples < 1 or (args.samples > 1 and args.method not in ("sgilo", "auto")):
        stderr(f"{command}: --samples K >= 1, and K > 1 only with --method sgilo or auto")
        return 2, None
    args.solver_options, problem = solver_settings(args)
    if problem:
        stderr(f"{command}: {problem}")
        return 2, None
    try:
        from sgilo.pipeline.io.limits import InputLimits

        InputLimits.from_env()
    except ValueError as exc:
        stderr(f"{command}: {exc}")
        return 2, None
    if args.method in ("csgm", "ilo", "sgilo", "auto"):
        from sgilo.pipeline.reconstruct import load_prior, load_score_models

        try:
            _check_model_files(args)
            prior = load_prior(args.model, device=args.device)
            if args.method in ("sgilo", "auto") and args.score:
                prior.score_models = load_score_models(args.score, device=args.device)
        except Exception as exc:  # noqa: BLE001 - any unreadable model is a usage error
            reason = " ".join(str(exc).split()) or type(exc).__name__
            stderr(f"sgilo: error: {printable(reason)}")
            return 2, None
    problem = _unusable_out(args.out)  # last: nothing is created for a call refused above
    if problem:
        stderr(f"{command}: --out {printable(str(args.out))}: {problem}")
        return 2, None
    return 0, prior


def _unusable_out(out: Path) -> str | None:
    """Why ``out`` cannot take outputs (created if missing), or ``None``. Checked by creating
    and removing a hidden file, so that a read-only folder or a full disk fails before any input
    is reconstructed."""
    import contextlib
    import os
    import secrets

    if out.exists() and not out.is_dir():
        return "exists and is not a folder"
    probe = out / f".sgilo-write-test-{secrets.token_hex(4)}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as exc:
        return f"cannot write there ({exc.strerror or type(exc).__name__})"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None


def _check_model_files(args: argparse.Namespace) -> None:
    """A ``--model``/``--score`` path must be a regular file within the input byte limit (a pipe
    or a device would hang the loader); shipped names are left to the registry."""
    from sgilo.pipeline.io.limits import check_file

    paths = [Path(p) for p in args.score]
    if args.model is not None and ("/" in args.model or Path(args.model).exists()):
        paths.insert(0, Path(args.model))
    for p in paths:
        if p.exists() or p.is_symlink():
            check_file(p)


#: reconstruct option destinations whose ``reconstruct_file`` keyword has another name
_RENAMED = {"mask_type": "mask_kind", "format": "formats"}


def reconstruct_kwargs(args: argparse.Namespace) -> dict:
    """The parsed reconstruct options that are keyword arguments of ``reconstruct_file`` (by
    name, so options added there flow through), as JSON-able values."""
    import inspect

    from sgilo.pipeline.reconstruct import reconstruct_file

    accepted = set(inspect.signature(reconstruct_file).parameters) - {
        "path",
        "out_dir",
        "method",
        "callback",
        "log",
        "prior",
        "claimed",
    }
    kwargs = {}
    for dest, value in sorted(vars(args).items()):
        name = _RENAMED.get(dest, dest)
        if name in accepted:
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            kwargs[name] = value
    return kwargs
