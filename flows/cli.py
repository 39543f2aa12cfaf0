"""The `sgilo` command line (top layer: it starts Prefect flows and calls pipeline/ directly).

    sgilo demo [--out DIR] [--slices N] [--quick]
    sgilo reconstruct INPUT... --method M --out DIR [--seed N]
                      [--acceleration R --center-fraction F] [--mask-type random|equispaced]
    sgilo tune-classical [--slices N] [--out FILE]

Heavy libraries (torch, sigpy, prefect) are imported inside the commands so that ``sgilo --help``
is fast. Exit codes: 0 success; 1 when any input failed (each failure is one line on stderr naming
the file); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

CLASSICAL_METHODS = ("zero-filled", "cg-sense", "l1-wavelet", "tv")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgilo",
        description="MRI reconstruction with generative priors (SGILO, ILO, CSGM) and classical "
        "baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end demo on bundled MNI152 validation slices")
    demo.add_argument("--out", type=Path, default=Path("sgilo-demo"), help="output folder")
    demo.add_argument("--slices", type=int, default=4, help="validation slices to use (1-16)")
    demo.add_argument("--seed", type=int, default=0)

    rec = sub.add_parser("reconstruct", help="reconstruct fastMRI-format HDF5 k-space files")
    rec.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    rec.add_argument("--method", required=True, choices=CLASSICAL_METHODS)
    rec.add_argument("--out", required=True, type=Path, help="output folder")
    rec.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    rec.add_argument("--seed", type=int, default=None, help="mask seed (default: from file name)")
    rec.add_argument("--acceleration", type=_positive_float, default=None)
    rec.add_argument("--center-fraction", type=_positive_float, default=None)
    rec.add_argument("--mask-type", choices=("random", "equispaced"), default="random")

    tune = sub.add_parser("tune-classical", help="choose ℓ1-wavelet/TV λ on MNI training slices")
    tune.add_argument("--slices", type=int, default=12)
    tune.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    return parser


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from pipeline.io.types import InputError
    from pipeline.reconstruct import reconstruct_file

    if (args.acceleration is None) != (args.center_fraction is None):
        _stderr("sgilo reconstruct: --acceleration and --center-fraction go together")
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _stderr("sgilo reconstruct: --device cuda requested but no CUDA device is available")
            return 2
    failures = 0
    for i, path in enumerate(args.inputs, 1):
        _stderr(f"[{i}/{len(args.inputs)}] {path.name}: {args.method}")
        try:
            reconstruct_file(
                path,
                args.out,
                args.method,
                acceleration=args.acceleration,
                center_fraction=args.center_fraction,
                seed=args.seed,
                mask_kind=args.mask_type,
                log=_stderr,
            )
        except InputError as exc:
            failures += 1
            _stderr(f"sgilo: error: {exc}")
        except (OSError, ValueError) as exc:
            failures += 1
            reason = " ".join(str(exc).split())
            _stderr(f"sgilo: error: {path.name}: {reason}")
    if failures:
        _stderr(f"sgilo reconstruct: {failures} of {len(args.inputs)} input(s) failed")
    return 1 if failures else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import demo_flow
    from pipeline.demo import DemoConfig

    if not 1 <= args.slices <= 16:
        _stderr("sgilo demo: --slices must be between 1 and 16")
        return 2
    config = DemoConfig(num_slices=args.slices, seed=args.seed)
    summary = demo_flow(out_dir=str(args.out), config=config)
    print(summary)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pipeline.tuning import markdown_table, run

    rows, best = run(num_slices=args.slices)
    table = markdown_table(rows)
    print(table)
    print("best λ_rel per method:", best)
    if args.out:
        args.out.write_text(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.runtime import configure_environment

    args = build_parser().parse_args(argv)
    configure_environment()
    commands = {"reconstruct": cmd_reconstruct, "demo": cmd_demo, "tune-classical": cmd_tune}
    return commands[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
