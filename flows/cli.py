"""The `sgilo` command line (top layer: it starts Prefect flows and calls pipeline/ directly).

    sgilo demo [--out DIR] [--slices N] [--quick]
    sgilo reconstruct INPUT... --method M --out DIR [--model NAME|PATH] [--seed N]
                      [--acceleration R --center-fraction F] [--mask-type random|equispaced]
                      [--format h5,nifti,dicom,png] [--anonymize] [--samples K] [--device D]
    sgilo batch INPUT_OR_FOLDER... --method M --out DIR [reconstruct options]
                [--workers N | --dask-address ADDR]
    sgilo serve --watch FOLDER --out DIR --method M [reconstruct options]
                [--cron "*/5 * * * *" | --interval S] [--settle S] [--once]
    sgilo tune-classical [--slices N] [--methods M,…] [--values V,…] [--out FILE]
    sgilo bench [--smoke] [--out DIR] [--methods M,...] [--model NAME|PATH] [--device D]
    sgilo bench --suite natural [--smoke] [--out DIR] [--methods M,...] [--tasks T,...]
    sgilo scaling [--sizes 64,128,256] [--batches 1,2,4,8,16] [--steps N] [--out FILE.md]
    sgilo evaluate-prior [--model NAME|PATH] --out DIR
    sgilo train-gan --data SRC [--data SRC ...] --out DIR [--resume] [--steps N] ...
    sgilo train-score --generator PATH --space z|K --out DIR [--resume] [--steps N] ...
                      [--latents FILE]
    sgilo invert-training --model NAME|PATH --data SRC [--data SRC ...] --space K --out FILE
                          [--limit N] [--steps 100,50,...] [--batch B] [--include-skip]
    sgilo sample --generator PATH [--score PATH --block K] --out FILE.png [--n N] [--seed S]

Heavy libraries (torch, sigpy, prefect) are imported inside the commands so that ``sgilo --help``
is fast. Exit codes: 0 success; 1 when any input failed (each failure is one line on stderr naming
the file); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

METHODS = ("zero-filled", "cg-sense", "l1-wavelet", "tv", "csgm", "ilo", "sgilo")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    if not value == value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _parsed_by(module: str, function: str) -> Callable[[str], object]:
    """An argparse type that parses with ``module.function`` (imported when an option is given,
    so ``sgilo --help`` stays fast), its ``ValueError`` shown as a usage error."""

    def parse(text: str) -> object:
        import importlib

        try:
            return getattr(importlib.import_module(module), function)(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def add_reconstruct_options(parser: argparse.ArgumentParser) -> None:
    """The options of one reconstruction (method, model, undersampling, outputs), shared by every
    command that reconstructs inputs."""
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--model",
        default=None,
        help="csgm/ilo/sgilo prior: a shipped name (default brain-t1-128) or a generator file "
        "(sgilo's generator.pt or a rosinality StyleGAN-2 file)",
    )
    parser.add_argument(
        "--score",
        action="append",
        default=[],
        metavar="PATH",
        help="sgilo: a score_model.pt (repeat for z and block spaces); default: the shipped "
        "prior's score models (none for a generator file: no prior step)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=1,
        help="sgilo: chains K; K >= 2 also writes the per-pixel std as reconstruction_std",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--seed", type=int, default=None, help="mask seed (default: from file name)"
    )
    parser.add_argument("--acceleration", type=_positive_float, default=None)
    parser.add_argument("--center-fraction", type=_positive_float, default=None)
    parser.add_argument("--mask-type", choices=("random", "equispaced"), default="random")

    parser.add_argument(
        "--format",
        type=_parsed_by("sgilo.pipeline.export", "parse_formats"),
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
        type=_parsed_by("sgilo.pipeline.io.limits", "parse_size"),
        default=None,
        metavar="SIZE",
        help="refuse an input larger than this on disk (a folder: its files in all), e.g. 2G; "
        "default $SGILO_MAX_INPUT_BYTES or 8G (docs/RELIABILITY.md)",
    )
    parser.add_argument(
        "--max-input-voxels",
        type=_parsed_by("sgilo.pipeline.io.limits", "parse_size"),
        default=None,
        metavar="N",
        help="refuse an input of more k-space samples or image voxels than this; default "
        "$SGILO_MAX_INPUT_VOXELS or 2**28",
    )


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2): scripts and logs
    get ``sgilo reconstruct: error: <what>`` instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        text = _printable(" ".join(message.split()))
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sgilo",
        description="MRI reconstruction with generative priors (SGILO, ILO, CSGM) and classical "
        "baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end demo on bundled MNI152 validation slices")
    demo.add_argument("--out", type=Path, default=Path("sgilo-demo"), help="output folder")
    demo.add_argument("--slices", type=int, default=4, help="validation slices to use (1-16)")
    demo.add_argument("--seed", type=int, default=0)

    rec = sub.add_parser(
        "reconstruct",
        help="reconstruct fastMRI/ISMRMRD k-space files, DICOM series and NIfTI volumes",
    )
    rec.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    add_reconstruct_options(rec)
    add_batch_parsers(sub)

    gan = sub.add_parser(
        "train-gan",
        help="train a StyleGAN-2 prior on MNI training slices and/or folders of images",
        description="Train a StyleGAN-2 on magnitude images. --data takes 'mni-train' (the "
        "bundled MNI152 training slices) or a folder of PNG/JPEG, NIfTI or DICOM files; repeat it "
        "to mix sources. With --channels 3 it trains an RGB prior on 'natural-train' (patches of "
        "scikit-image's bundled photographs) and/or folders of PNG/JPEG. Checkpoints go to "
        "--out every --checkpoint-every steps; run the same "
        "command with --resume (and a larger --steps if you like) to continue exactly.",
    )
    gan.add_argument("--data", action="append", required=True, metavar="SRC")
    gan.add_argument("--out", type=Path, required=True)
    gan.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    gan.add_argument("--resolution", type=int, default=128)
    gan.add_argument(
        "--channels",
        "--image-channels",
        dest="image_channels",
        type=int,
        choices=(1, 2, 3),
        default=1,
        help="1: magnitude; 2: real/imaginary with phase augmentation; 3: RGB (natural images)",
    )
    gan.add_argument("--style-dim", type=int, default=256)
    gan.add_argument("--channel-max", type=int, default=128)
    gan.add_argument(
        "--channel-base",
        type=int,
        default=2048,
        help="channels at side r: clamp(2·base/r, channel-min, channel-max)",
    )
    gan.add_argument(
        "--channel-min",
        type=int,
        default=32,
        help="fewest channels at any side (the high-resolution blocks; the main cost on a CPU)",
    )
    gan.add_argument("--batch", type=int, default=8)
    gan.add_argument("--steps", type=int, default=10_000)
    gan.add_argument("--checkpoint-every", type=int, default=500)
    gan.add_argument(
        "--max-minutes",
        type=_positive_float,
        default=None,
        help="a time budget: stop (with a checkpoint) after this many minutes; --resume goes on",
    )
    gan.add_argument("--seed", type=int, default=0)
    gan.add_argument("--device", choices=("cpu", "cuda"), default="cpu")

    score = sub.add_parser(
        "train-score",
        help="train a latent score model on a generator's latents (z or a block output)",
        description="Train a VP-SDE score model on latents of GAN samples: 'z' (the w+ rows' "
        "Gaussianized latents) or the output of synthesis block K; with --latents, on ILO "
        "inversions of training images (`sgilo invert-training`). Resumable with --resume.",
    )
    score.add_argument("--generator", type=Path, required=True, help="a generator.pt")
    score.add_argument("--space", required=True, help="'z' or a block index")
    score.add_argument("--out", type=Path, required=True)
    score.add_argument("--resume", action="store_true")
    score.add_argument("--steps", type=int, default=20_000)
    score.add_argument("--batch", type=int, default=128)
    score.add_argument("--hidden", type=int, default=None, help="network width (default 128)")
    score.add_argument("--depth", type=int, default=None, help="network depth (default 4)")
    score.add_argument("--seed", type=int, default=0)
    score.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    score.add_argument(
        "--latents",
        type=Path,
        default=None,
        metavar="FILE",
        help="train on these block-K latents (from `sgilo invert-training`) instead of GAN "
        "samples; the file's block and shape must match --space and the generator",
    )

    inv = sub.add_parser(
        "invert-training",
        help="ILO inversions of training images: block-K latents for `train-score --latents`",
        description="Fit each training image with ILO (a denoising problem on the generator's "
        "grid) and save the output of synthesis block K at the end of the round that optimises "
        "it. --data as for train-gan ('mni-train', folders or files; 'natural-train' for an "
        "RGB prior). Progress goes to stderr.",
    )
    inv.add_argument("--model", required=True, help="a shipped prior name or a generator file")
    inv.add_argument("--data", action="append", required=True, metavar="SRC")
    inv.add_argument("--space", type=int, required=True, help="the block index K")
    inv.add_argument("--out", type=Path, required=True, help="the latents file to write (.pt)")
    inv.add_argument("--limit", type=int, default=None, help="at most N images, evenly spaced")
    inv.add_argument(
        "--steps",
        default=None,
        help="Adam steps per ILO round, comma-separated, at least K+2 of them "
        "(default 100,50,50,25,...)",
    )
    inv.add_argument("--batch", type=int, default=8, help="images fitted together")
    inv.add_argument(
        "--include-skip",
        action="store_true",
        help="append the skip image to the features as extra channels",
    )
    inv.add_argument("--seed", type=int, default=0)
    inv.add_argument("--device", choices=("cpu", "cuda"), default="cpu")

    show = sub.add_parser(
        "sample",
        help="a sample sheet: GAN samples, and with --score the same samples after the latent "
        "score model denoised their block-K output",
    )
    show.add_argument("--generator", type=Path, required=True)
    show.add_argument("--score", type=Path, default=None, help="a score_model.pt for block K")
    show.add_argument("--block", type=int, default=None)
    show.add_argument("--t", type=float, default=0.05, help="denoiser time (VP-SDE t)")
    show.add_argument("--steps", type=int, default=3, help="denoising steps")
    show.add_argument("--n", type=int, default=8)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", type=Path, required=True, help="PNG file")

    bench = sub.add_parser(
        "bench",
        help="benchmark: methods x {single-coil, 8-coil} x {4x, 8x} on held-out MNI slices",
        description="Quality (PSNR/SSIM/NMSE) and cost (s/slice, peak memory) of every method "
        "on simulated acquisitions of the MNI152 validation slices; writes BENCHMARKS.md, "
        "benchmarks.json and plots to --out (default docs/). --smoke: 2 slices, few steps.",
    )
    bench.add_argument("--out", type=Path, default=Path("docs"))
    bench.add_argument("--smoke", action="store_true", help="a quick check of the machinery")
    bench.add_argument(
        "--fresh",
        action="store_true",
        help="measure every cell again (default: reuse the cells a previous run of the same "
        "conditions, model and code finished)",
    )
    bench.add_argument("--slices", type=int, default=None, help="validation slices (1-16)")
    bench.add_argument(
        "--methods",
        default=None,
        help="comma-separated (default: all; generative ones need a prior)",
    )
    bench.add_argument("--model", default=None, help="prior name or generator file")
    bench.add_argument("--samples", type=int, default=1, help="SGILO chains")
    bench.add_argument(
        "--settings",
        default=None,
        help="comma-separated setting labels (default: single-coil and 8-coil at 4x and 8x)",
    )
    bench.add_argument("--threads", type=int, default=2, help="torch threads per method")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument(
        "--suite",
        choices=("mri", "natural"),
        default="mri",
        help="mri (default): BENCHMARKS.md; natural: the ILO/SGILO papers' RGB tasks "
        "(inpainting, denoising, super-resolution, CS, colorization), BENCHMARKS_NATURAL.md",
    )
    bench.add_argument("--tasks", default=None, help="natural suite: comma-separated task labels")
    bench.add_argument("--images", type=int, default=None, help="natural suite: patches (1-64)")

    sc = sub.add_parser(
        "scaling",
        help="seconds per slice of ILO against image size and batch (docs/SPEED.md)",
        description="Times ILO (a short fixed schedule) on single-coil 8x MNI training slices "
        "for each operator grid (batch 1) and each batch (at the prior's resolution); writes the "
        "table into --out (between scaling markers) and the plot to --plot.",
    )
    sc.add_argument("--model", default=None, help="prior name or generator file")
    sc.add_argument("--sizes", default="64,128,256", help="operator grid sides, comma-separated")
    sc.add_argument("--batches", default="1,2,4,8,16", help="slices per batch, comma-separated")
    sc.add_argument("--steps", type=int, default=20, help="ILO steps per round")
    sc.add_argument("--rounds", type=int, default=4, help="ILO rounds")
    sc.add_argument("--threads", type=int, default=1, help="torch threads")
    sc.add_argument("--out", type=Path, default=Path("docs/SPEED.md"))
    sc.add_argument("--plot", type=Path, default=Path("docs/images/scaling.png"))

    ev = sub.add_parser(
        "evaluate-prior",
        help="validation figures of a prior: inversion PSNR on held-out MNI slices, sliced "
        "Wasserstein distance and nearest-training PSNR of its samples, and a sample sheet",
    )
    ev.add_argument("--model", default=None, help="a shipped name or a generator file")
    ev.add_argument("--slices", type=int, default=16, help="validation slices to invert (1-16)")
    ev.add_argument("--samples", type=int, default=256)
    ev.add_argument("--methods", default="csgm,ilo", help="inversion methods, comma-separated")
    ev.add_argument("--out", type=Path, required=True, help="folder for report.json/md, grid.png")
    ev.add_argument("--seed", type=int, default=0)

    tg = sub.add_parser(
        "tune-generative",
        help="sweep one parameter of csgm/ilo/sgilo on MNI training slices (never validation)",
    )
    tg.add_argument("--method", required=True, choices=("csgm", "ilo", "sgilo"))
    tg.add_argument("--param", required=True, help="a config field, e.g. lam, radius_fraction")
    tg.add_argument(
        "--values", required=True, help="comma-separated; JSON values, steps as 300-200-100"
    )
    tg.add_argument("--model", default=None, help="prior name or generator file")
    tg.add_argument("--slices", type=int, default=4, help="training slices (evenly spaced)")
    tg.add_argument(
        "--settings",
        default="single-coil 8x",
        help="comma-separated setting labels (single-coil 4x, single-coil 8x, 8-coil 4x, ...)",
    )
    tg.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a fixed config field for every run (repeatable)",
    )
    tg.add_argument("--samples", type=int, default=1, help="sgilo chains")
    tg.add_argument("--out", type=Path, default=None, help="write the Markdown table here")

    tune = sub.add_parser("tune-classical", help="choose ℓ1-wavelet/TV λ on MNI training slices")
    tune.add_argument("--slices", type=int, default=12)
    tune.add_argument(
        "--methods", default=None, help="comma-separated subset, e.g. l1-wavelet (default: all)"
    )
    tune.add_argument(
        "--values", default=None, help="comma-separated values to sweep (default: built-in grid)"
    )
    tune.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    return parser


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_reconstruct_options(args: argparse.Namespace, command: str) -> tuple[int, object]:
    """Validate the reconstruct options, prepare ``--out`` and load the prior the method needs.

    Returns ``(0, prior_or_None)``, or ``(2, None)`` after printing a one-line usage error.
    """
    if (args.acceleration is None) != (args.center_fraction is None):
        _stderr(f"{command}: --acceleration and --center-fraction go together")
        return 2, None
    if args.acceleration is not None and args.acceleration < 1:
        _stderr(f"{command}: --acceleration must be at least 1, got {args.acceleration:g}")
        return 2, None
    if args.center_fraction is not None and args.center_fraction >= 1:
        _stderr(f"{command}: --center-fraction must be below 1, got {args.center_fraction:g}")
        return 2, None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _stderr(f"{command}: --device cuda requested but no CUDA device is available")
            return 2, None
    prior = None
    if args.samples < 1 or (args.samples > 1 and args.method != "sgilo"):
        _stderr(f"{command}: --samples K >= 1, and K > 1 only with --method sgilo")
        return 2, None
    try:
        from sgilo.pipeline.io.limits import InputLimits

        InputLimits.from_env()
    except ValueError as exc:
        _stderr(f"{command}: {exc}")
        return 2, None
    if args.method in ("csgm", "ilo", "sgilo"):
        from sgilo.pipeline.reconstruct import load_prior, load_score_models

        try:
            _check_model_files(args)
            prior = load_prior(args.model, device=args.device)
            if args.method == "sgilo" and args.score:
                prior.score_models = load_score_models(args.score, device=args.device)
        except Exception as exc:  # noqa: BLE001 - any unreadable model is a usage error
            reason = " ".join(str(exc).split()) or type(exc).__name__
            _stderr(f"sgilo: error: {_printable(reason)}")
            return 2, None
    problem = _unusable_out(args.out)  # last: nothing is created for a call refused above
    if problem:
        _stderr(f"{command}: --out {_shown(args.out)}: {problem}")
        return 2, None
    return 0, prior


def _shown(path: Path) -> str:
    return _printable(str(path))


def _printable(text: str) -> str:
    """``text`` on one line, control characters escaped
    (:func:`sgilo.pipeline.io.limits.printable`)."""
    from sgilo.pipeline.io.limits import printable

    return printable(text)


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


def _append_log(out: Path, message: str, *, error: bool = False) -> None:
    """``run.log`` is a record, not the channel: if it cannot be written (the disk filled up,
    the folder went away) the run goes on and the line is still on stderr."""
    from sgilo.pipeline.provenance import append_log

    try:
        append_log(out, message, error=error)
    except OSError:
        pass


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import os
    import time
    import traceback

    from sgilo.pipeline import interrupt
    from sgilo.pipeline.io.limits import check_input, input_limits, shown_name
    from sgilo.pipeline.io.types import InputError
    from sgilo.pipeline.provenance import now_iso, run_record, sha256_path, write_run_json
    from sgilo.pipeline.reconstruct import output_clashes, reconstruct_file

    status, prior = check_reconstruct_options(args, "sgilo reconstruct")
    if status:
        return status
    started = now_iso()

    def progress(step: int, total: int, message: str) -> None:
        if total >= 50 and (step % max(total // 10, 1) == 0 or step == total):
            _stderr(f"  {message}: {step}/{total}")

    def log(message: str) -> None:
        _stderr(_printable(message))
        _append_log(args.out, message)

    def fail(message: str) -> None:
        line = _printable(" ".join(message.split()))
        _stderr(f"sgilo: error: {line}")
        _append_log(args.out, line, error=True)

    inputs = list(dict.fromkeys(args.inputs))  # an input named twice is reconstructed once
    for path in sorted({p for p in args.inputs if args.inputs.count(p) > 1}):
        _stderr(f"sgilo reconstruct: {shown_name(path)} is given more than once; once is enough")
    failures = 0
    timings: dict[str, dict] = {}
    hashes: dict[str, str] = {}
    claimed: dict[str, str] = {}
    clashes = output_clashes(inputs)
    limits = {"max_bytes": args.max_input_bytes, "max_voxels": args.max_input_voxels}
    for i, path in enumerate(inputs, 1):
        interrupt.set_progress(i - 1 - failures, len(inputs), failed=failures)  # if interrupted
        _stderr(f"[{i}/{len(inputs)}] {shown_name(path)}: {args.method}")
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
            )
            timings[str(path)] = {
                "status": "done",
                "seconds": round(time.perf_counter() - t0, 3),
                "outputs": [p.name for p in result.outputs],
                **({"metrics": result.metrics} if result.metrics else {}),
            }
        except Exception as exc:  # noqa: BLE001 - every failure is one line; the rest go on
            failures += 1
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, InputError):
                fail(reason)
            elif isinstance(exc, OSError | ValueError):
                fail(f"{shown_name(path)}: {reason}")
            else:  # a bug or an exhausted resource: still one line, the traceback on request
                fail(f"{shown_name(path)}: internal error ({type(exc).__name__}: {reason})")
                if os.environ.get("SGILO_DEBUG"):
                    traceback.print_exc()
            timings[str(path)] = {"status": "failed", "error": _printable(reason)}
            continue
        try:  # the input was read and checked: hash it for run.json (never a failed input)
            hashes[str(path)] = sha256_path(path)
        except OSError:
            pass
    if failures:
        _stderr(f"sgilo reconstruct: {failures} of {len(inputs)} input(s) failed")
    if args.out.is_dir():
        config = {
            "command": "sgilo " + " ".join(args.argv),
            "method": args.method,
            "options": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()
                if k not in ("inputs", "argv", "command")
            },
        }
        models = [prior.path] if prior is not None else []
        record = run_record(
            config,
            inputs,
            models,
            started=started,
            timings=timings,
            input_hashes=hashes,
            hash_inputs=False,
        )
        try:
            write_run_json(args.out, record)
        except OSError as exc:
            _stderr(f"sgilo: error: cannot write run.json in {_shown(args.out)} ({exc.strerror})")
            return 1
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sgilo.flows.demo import demo_flow
    from sgilo.pipeline.demo import DemoConfig

    if not 1 <= args.slices <= 16:
        _stderr("sgilo demo: --slices must be between 1 and 16")
        return 2
    config = DemoConfig(num_slices=args.slices, seed=args.seed)
    summary = demo_flow(out_dir=str(args.out), config=config)
    print(summary)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from sgilo.pipeline.research.tuning import markdown_table, run

    only = None if args.methods is None else tuple(m.strip() for m in args.methods.split(","))
    try:
        values = None if args.values is None else tuple(float(v) for v in args.values.split(","))
        rows, best = run(num_slices=args.slices, only=only, values=values)
    except ValueError as exc:
        _stderr(f"sgilo tune-classical: {exc}")
        return 2
    table = markdown_table(rows)
    print(table)
    print("best λ_rel per method:", best)
    if args.out:
        args.out.write_text(table)
    return 0


def cmd_train_gan(args: argparse.Namespace) -> int:
    import torch

    from sgilo.models.stylegan2.generator import GeneratorConfig
    from sgilo.models.stylegan2.train import TrainConfig, train_gan
    from sgilo.pipeline.training_data import load_training_images

    if args.device == "cuda" and not torch.cuda.is_available():
        _stderr("sgilo train-gan: --device cuda requested but no CUDA device is available")
        return 2
    try:
        channels = 3 if args.image_channels == 3 else 1
        images, summary = load_training_images(args.data, args.resolution, channels=channels)
        generator = GeneratorConfig(
            resolution=args.resolution,
            style_dim=args.style_dim,
            image_channels=args.image_channels,
            channel_base=args.channel_base,
            channel_max=args.channel_max,
            channel_min=min(args.channel_min, args.channel_max),
        )
        config = TrainConfig(
            generator=generator,
            batch_size=args.batch,
            total_steps=args.steps,
            checkpoint_every=args.checkpoint_every,
            sample_every=args.checkpoint_every,
            seed=args.seed,
            phase_augmentation=args.image_channels == 2,
        )
    except ValueError as exc:
        _stderr(f"sgilo train-gan: error: {' '.join(str(exc).split())}")
        return 2
    for source, info in summary["sources"].items():
        _stderr(f"data: {source}: {info['images']} images")
    for skipped in summary["skipped"]:
        _stderr(f"data: skipped {skipped['path']}: {skipped['reason']}")

    def progress(p: dict) -> None:
        losses = " ".join(f"{k} {v:.3f}" for k, v in p["losses"].items() if v is not None)
        _stderr(
            f"step {p['step']}/{p['total']}  kimg {p['kimg']:.2f}  {losses}  "
            f"{p['images_per_s']:.1f} img/s"
        )

    try:
        result = train_gan(
            config,
            torch.from_numpy(images),
            args.out,
            resume=args.resume,
            progress=progress,
            device=args.device,
            max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
        )
    except (FileExistsError, ValueError) as exc:
        _stderr(f"sgilo train-gan: error: {' '.join(str(exc).split())}")
        return 2
    # the Gaussianized-latent statistics (ALGORITHMS.md §3), fitted once per generator and stored
    from sgilo.models.stylegan2.checkpoint import fit_latent_stats, load_generator, save_generator

    g_ema, info = load_generator(args.out / "generator.pt")
    stats = fit_latent_stats(
        g_ema, n=100_000, generator_rng=torch.Generator().manual_seed(args.seed)
    )
    save_generator(args.out / "generator.pt", g_ema, latent_stats=stats, extra=info.extra)
    _stderr(f"done: step {result.step}, {result.images_seen} images seen; {args.out}")
    return 0


def cmd_train_score(args: argparse.Namespace) -> int:
    import torch

    from sgilo.models.score.network import default_network_config
    from sgilo.models.score.sources import gan_latent_source
    from sgilo.models.score.train import ScoreTrainConfig, train_score
    from sgilo.models.stylegan2.checkpoint import CheckpointError, load_generator

    if args.device == "cuda" and not torch.cuda.is_available():
        _stderr("sgilo train-score: --device cuda requested but no CUDA device is available")
        return 2
    try:
        generator, info = load_generator(args.generator, device=args.device)
        space: str | int = "z" if args.space == "z" else int(args.space)
        if args.latents is not None:
            from sgilo.models.score.sources import TensorSource
            from sgilo.pipeline.inversions import check_inversions, load_inversions
            from sgilo.pipeline.provenance import sha256_file

            latents, record = load_inversions(args.latents)
            check_inversions(
                latents, record, generator, space, sha256_file(args.generator), args.latents
            )
            source = TensorSource(latents.to(args.device))
            _stderr(f"training on {latents.shape[0]} inverted latents from {args.latents}")
        else:
            source = gan_latent_source(generator, space, latent_stats=info.latent_stats)
        sample = source(2, torch.Generator().manual_seed(0))
        config = ScoreTrainConfig(
            network=default_network_config(
                tuple(sample.shape[1:]),
                **{k: v for k, v in (("hidden", args.hidden), ("depth", args.depth)) if v},
            ),
            space=f"block{space}" if space != "z" else "z",
            batch=args.batch,
            steps=args.steps,
            seed=args.seed,
        )
    except (CheckpointError, ValueError) as exc:
        _stderr(f"sgilo train-score: error: {' '.join(str(exc).split())}")
        return 2

    def progress(record: dict) -> None:
        _stderr(
            " ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
            )
        )

    try:
        train_score(
            config, source, args.out, resume=args.resume, progress=progress, device=args.device
        )
    except (FileExistsError, ValueError) as exc:
        _stderr(f"sgilo train-score: error: {' '.join(str(exc).split())}")
        return 2
    _stderr(f"done: {args.out / 'score_model.pt'}")
    return 0


def cmd_invert_training(args: argparse.Namespace) -> int:
    import time

    import torch

    from sgilo.pipeline.inversions import (
        DEFAULT_STEPS,
        evenly_spaced,
        inversion_rounds,
        invert_images,
        save_inversions,
    )
    from sgilo.pipeline.methods import load_prior
    from sgilo.pipeline.provenance import sha256_file
    from sgilo.pipeline.training_data import load_training_images

    if args.device == "cuda" and not torch.cuda.is_available():
        _stderr("sgilo invert-training: --device cuda requested but no CUDA device is available")
        return 2
    try:
        steps = None
        if args.steps is not None:
            try:
                steps = tuple(int(s) for s in args.steps.replace("-", ",").split(","))
            except ValueError:
                raise ValueError(
                    f"--steps must be integers, e.g. 100,50,50, got {args.steps!r}"
                ) from None
        if args.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {args.batch}")
        prior = load_prior(args.model, device=args.device)
        config = prior.generator.config
        channels = 3 if int(config.image_channels) == 3 else 1
        images, _ = load_training_images(args.data, int(config.resolution), channels=channels)
        images = images[evenly_spaced(len(images), args.limit)]
        _stderr(f"inverting {len(images)} images at block {args.space} with {prior.path}")
        t0 = time.perf_counter()

        def progress(done: int, total: int, message: str) -> None:
            _stderr(f"invert-training: {message}")

        latents = invert_images(
            images,
            prior,
            args.space,
            batch=args.batch,
            steps=steps,
            include_skip=args.include_skip,
            seed=args.seed,
            progress=progress,
        )
        seconds = time.perf_counter() - t0
        rounds = inversion_rounds(prior.generator, args.space)
        info = {
            "space": args.space,
            "generator_sha256": sha256_file(prior.path),
            "sources": [str(s) for s in args.data],
            "limit": args.limit,
            "steps": list((steps or DEFAULT_STEPS)[:rounds]),
            "include_skip": bool(args.include_skip),
            "seed": args.seed,
            "seconds_per_image": round(seconds / len(images), 3),
        }
        save_inversions(args.out, latents, info)
    except ValueError as exc:
        _stderr(f"sgilo invert-training: error: {' '.join(str(exc).split())}")
        return 2
    per = seconds / len(images)
    _stderr(f"done: {tuple(latents.shape)} latents, {per:.1f} s/image; {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    if args.suite == "natural":
        from sgilo.pipeline.research.natural_bench import run_cli

        return run_cli(
            out=args.out,
            smoke=args.smoke,
            methods=args.methods,
            tasks=args.tasks,
            model=args.model,
            images=args.images,
            samples=args.samples,
            threads=args.threads,
            device=args.device,
            command="sgilo " + " ".join(shlex.quote(a) for a in args.argv),
            log=_stderr,
        )
    from sgilo.pipeline.methods import GENERATIVE, METHODS, load_prior
    from sgilo.pipeline.research.bart import bart_available
    from sgilo.pipeline.research.bench import (
        REFERENCE,
        BenchConfig,
        default_methods,
        run_bench,
        smoke_config,
        write_outputs,
    )

    methods = default_methods() if args.methods is None else args.methods.split(",")
    known = [*METHODS, REFERENCE]
    unknown = [m for m in methods if m not in known]
    if unknown:
        _stderr(f"sgilo bench: unknown method(s) {', '.join(unknown)}; from {', '.join(known)}")
        return 2
    if REFERENCE in methods and not bart_available():
        _stderr(f"sgilo bench: {REFERENCE} needs the bart command (Debian package 'bart')")
        return 2
    if any(m in GENERATIVE for m in methods):
        try:
            load_prior(args.model)
        except ValueError as exc:
            if args.methods is not None:
                _stderr(f"sgilo bench: error: {' '.join(str(exc).split())}")
                return 2
            _stderr(f"sgilo bench: no prior ({' '.join(str(exc).split())}): classical only")
            methods = [m for m in methods if m not in GENERATIVE]
    fields = {"methods": methods, "model": args.model, "samples": args.samples}
    fields["threads"] = args.threads
    fields["device"] = args.device
    if args.settings is not None:
        from sgilo.pipeline.experiment import DEFAULT_SETTINGS

        known = {s.label: s for s in DEFAULT_SETTINGS}
        labels = [t.strip() for t in args.settings.split(",") if t.strip()]
        if not labels or any(t not in known for t in labels):
            _stderr(f"sgilo bench: --settings from {', '.join(known)}")
            return 2
        fields["settings"] = [
            (known[t].coils, known[t].acceleration, known[t].center_fraction) for t in labels
        ]
    if args.slices is not None:
        fields["num_slices"] = args.slices
    try:
        config = smoke_config(**fields) if args.smoke else BenchConfig(**fields)
    except ValueError as exc:
        _stderr(f"sgilo bench: error: {' '.join(str(exc).split())}")
        return 2
    command = "sgilo " + " ".join(shlex.quote(a) for a in args.argv)

    def report(rows: list, panels: dict, total: int) -> None:
        write_outputs(rows, panels, config, args.out, command, total)

    work = None
    if args.fresh:
        import shutil

        from sgilo.pipeline.research.bench import work_dir

        work = work_dir(config)
        shutil.rmtree(work, ignore_errors=True)
    rows, panels = run_bench(config, log=_stderr, work=work, on_row=report)
    md = args.out / "BENCHMARKS.md"
    _stderr(f"wrote {md}")
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    import shlex

    from sgilo.pipeline.methods import load_prior
    from sgilo.pipeline.research.scaling import ilo_scaling, write_scaling

    try:
        sizes = [int(v) for v in args.sizes.split(",")]
        batches = [int(v) for v in args.batches.split(",")]
        prior = load_prior(args.model)
    except ValueError as exc:
        _stderr(f"sgilo scaling: error: {' '.join(str(exc).split())}")
        return 2
    if min(sizes) < 8 or min(batches) < 1 or args.steps < 1 or args.rounds < 1:
        _stderr("sgilo scaling: sizes >= 8, batches >= 1, --steps and --rounds >= 1")
        return 2
    rows = ilo_scaling(
        prior,
        sizes=sizes,
        batches=batches,
        steps_per_round=args.steps,
        rounds=args.rounds,
        num_threads=args.threads,
        log=_stderr,
    )
    command = "sgilo " + " ".join(shlex.quote(a) for a in args.argv)
    print(write_scaling(rows, args.out, args.plot, command=command))
    return 0


def cmd_tune_generative(args: argparse.Namespace) -> int:
    import numpy as np

    from sgilo.pipeline.data.mni import mni_slices
    from sgilo.pipeline.experiment import DEFAULT_SETTINGS
    from sgilo.pipeline.methods import load_prior
    from sgilo.pipeline.research.tuning_generative import (
        best_value,
        markdown_table,
        parse_value,
        sweep_generative,
    )

    known = {s.label: s for s in DEFAULT_SETTINGS}
    labels = [t.strip() for t in args.settings.split(",") if t.strip()]
    if not labels or any(t not in known for t in labels) or args.slices < 1:
        _stderr(f"sgilo tune-generative: --settings from {', '.join(known)}; --slices >= 1")
        return 2
    try:
        base = {}
        for item in args.option:
            field, _, value = item.partition("=")
            base[field.strip()] = parse_value(value.strip())
        values = [parse_value(v.strip()) for v in args.values.split(",") if v.strip()]
        prior = load_prior(args.model)
    except ValueError as exc:
        _stderr(f"sgilo tune-generative: error: {' '.join(str(exc).split())}")
        return 2
    train = mni_slices("train", size=int(prior.generator.config.resolution))
    pick = np.linspace(0, len(train) - 1, args.slices).round().astype(int)
    try:
        rows = sweep_generative(
            prior,
            train[pick],
            [known[t] for t in labels],
            args.method,
            args.param,
            values,
            base_options=base,
            samples=args.samples,
            log=_stderr,
        )
    except ValueError as exc:  # an unknown field or a bad value, from the solver's config
        _stderr(f"sgilo tune-generative: error: {' '.join(str(exc).split())[:300]}")
        return 2
    table = markdown_table(rows)
    print(table)
    print(f"best {args.param} (mean PSNR over the settings): {best_value(rows)}")
    if args.out is not None:
        args.out.write_text(table)
    return 0


def cmd_evaluate_prior(args: argparse.Namespace) -> int:
    import json

    from sgilo.models.stylegan2.grid import save_grid
    from sgilo.pipeline.reconstruct import load_prior
    from sgilo.pipeline.research.prior_eval import comparison_grid, evaluate_prior, markdown_report

    methods = tuple(m for m in args.methods.split(",") if m)
    if not 1 <= args.slices <= 16 or not set(methods) <= {"csgm", "ilo"} or args.samples < 2:
        _stderr("sgilo evaluate-prior: --slices 1-16, --samples >= 2, --methods from csgm,ilo")
        return 2
    try:
        prior = load_prior(args.model)
    except ValueError as exc:
        _stderr(f"sgilo evaluate-prior: error: {' '.join(str(exc).split())}")
        return 2
    if prior.generator.config.image_channels != 1:
        _stderr("sgilo evaluate-prior: only 1-channel (magnitude) priors are evaluated on MNI")
        return 2
    report = evaluate_prior(
        prior,
        methods=methods,
        num_slices=args.slices,
        num_samples=args.samples,
        seed=args.seed,
        log=_stderr,
    )
    report["model"] = str(prior.path)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_report(report)
    (args.out / "report.md").write_text(table + "\n")
    save_grid(args.out / "grid.png", comparison_grid(prior, seed=args.seed), cols=8)
    print(table)
    _stderr(f"wrote {args.out}/report.json, report.md, grid.png (top row: training slices)")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from sgilo.models.score.model import ScoreCheckpointError, load_score_model
    from sgilo.models.score.show import prior_refined_samples
    from sgilo.models.stylegan2.checkpoint import CheckpointError, load_generator
    from sgilo.models.stylegan2.grid import save_grid
    from sgilo.models.stylegan2.train import network_to_image

    if (args.score is None) != (args.block is None):
        _stderr("sgilo sample: --score and --block go together")
        return 2
    rng = torch.Generator().manual_seed(args.seed)
    try:
        generator, _ = load_generator(args.generator)
        if args.score is None:
            with torch.no_grad():
                z = torch.randn(args.n, generator.config.style_dim, generator=rng)
                rows = [generator(z)]
        else:
            score_model = load_score_model(args.score)
            rows = list(
                prior_refined_samples(
                    generator, score_model, args.block, args.n, args.t, args.steps, rng
                )
            )
    except (CheckpointError, ScoreCheckpointError, ValueError) as exc:
        _stderr(f"sgilo sample: error: {' '.join(str(exc).split())}")
        return 2
    images = torch.cat([network_to_image(r) for r in rows]).clamp(0, 1)
    tiles = (images if images.shape[1] == 3 else images[:, 0]).numpy()  # RGB or grey tiles
    save_grid(args.out, tiles, cols=args.n)
    what = "top: GAN samples; bottom: after the score model" if len(rows) == 2 else "GAN samples"
    _stderr(f"wrote {args.out} ({what})")
    return 0


# ----------------------------------------------------------------------------- batch, serve


def add_batch_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``batch`` and ``serve`` subcommands (Prefect flows over many inputs)."""
    batch = sub.add_parser(
        "batch",
        help="reconstruct many inputs as a Prefect flow (skips finished work; --workers N)",
        description="Reconstruct files and folders of studies (.h5, .nii, .nii.gz, .dcm and "
        "DICOM series folders; hidden files skipped) as a Prefect flow. Finished inputs are "
        "skipped on a re-run; OUT gets run.json (provenance) and run.log. See docs/BATCH.md.",
    )
    batch.add_argument("inputs", nargs="+", type=Path, metavar="INPUT_OR_FOLDER")
    add_reconstruct_options(batch)
    _add_runner_options(batch)

    serve = sub.add_parser(
        "serve",
        help="reconstruct new studies dropped into a folder, on a schedule (Prefect deployment)",
        description="Serve a Prefect deployment that reconstructs the new studies of --watch "
        "into --out on a cron schedule (default every 5 minutes). Needs a running Prefect "
        "server (`prefect server start --host 127.0.0.1`, then PREFECT_API_URL); --once runs one "
        "pass without a server. See docs/BATCH.md.",
    )
    serve.add_argument("--watch", type=Path, required=True, metavar="FOLDER")
    add_reconstruct_options(serve)
    _add_runner_options(serve)
    when = serve.add_mutually_exclusive_group()
    when.add_argument("--cron", default=None, help='cron schedule (default "*/5 * * * *")')
    when.add_argument("--interval", type=_positive_float, default=None, help="every S seconds")
    serve.add_argument(
        "--settle",
        type=float,
        default=5.0,
        metavar="S",
        help="leave studies modified in the last S seconds for the next pass (still being written)",
    )
    serve.add_argument("--name", default="sgilo-watch", help="deployment name")
    serve.add_argument("--once", action="store_true", help="one pass now, no server needed")


def _add_runner_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, default=None, help="run on a Dask LocalCluster of N processes"
    )
    where.add_argument(
        "--dask-address", default=None, metavar="ADDR", help="run on an existing Dask cluster"
    )


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


def _batch_options(args: argparse.Namespace, command: str) -> dict | None:
    """The batch options from the command line, validated; ``None`` after a usage error."""
    from pydantic import ValidationError

    from sgilo.pipeline.batch import BatchOptions

    if args.workers is not None and args.workers < 1:
        _stderr(f"{command}: --workers must be at least 1")
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
        _stderr(f"{command}: {' '.join(str(exc).split())}")
        return None
    return options.model_dump(mode="json")


def _report_batch(result: dict, command: str) -> int:
    for line in result["failed"]:
        _stderr(f"sgilo: error: {line}")
    print(f"{command}: {result['summary']}", flush=True)
    return 1 if result["failed"] else 0


def cmd_batch(args: argparse.Namespace) -> int:
    from sgilo.pipeline.batch import expand_inputs

    options = _batch_options(args, "sgilo batch")
    if options is None:
        return 2
    inputs = expand_inputs(args.inputs)
    if not inputs:
        _stderr("sgilo batch: no inputs (.h5, .nii, .nii.gz, .dcm, DICOM series) found")
        return 2
    from sgilo.flows.batch import batch_flow

    return _report_batch(
        batch_flow([str(p) for p in inputs], str(args.out), options), "sgilo batch"
    )


def _prefect_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.watch.is_dir():
        _stderr(f"sgilo serve: --watch {args.watch}: not a folder")
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
    if not _prefect_api_url():
        _stderr(
            "sgilo serve: no Prefect server: run `prefect server start --host 127.0.0.1` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` (or use --once)"
        )
        return 2
    from sgilo.flows.serve import serve_watch

    cron = args.cron or (None if args.interval else "*/5 * * * *")
    serve_watch(parameters, name=args.name, cron=cron, interval=args.interval)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from sgilo.pipeline.runtime import configure_environment

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    configure_environment()
    commands = {
        "reconstruct": cmd_reconstruct,
        "batch": cmd_batch,
        "serve": cmd_serve,
        "demo": cmd_demo,
        "tune-classical": cmd_tune,
        "train-gan": cmd_train_gan,
        "train-score": cmd_train_score,
        "invert-training": cmd_invert_training,
        "sample": cmd_sample,
        "evaluate-prior": cmd_evaluate_prior,
        "bench": cmd_bench,
        "scaling": cmd_scaling,
        "tune-generative": cmd_tune_generative,
    }
    command = commands[args.command]
    if args.command in ("reconstruct", "batch") or (args.command == "serve" and args.once):
        from sgilo.pipeline.interrupt import (
            run_interruptibly,  # SIGTERM/Ctrl-C: one line, no debris
        )

        return run_interruptibly(lambda: command(args))
    return command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
