"""The ``sgilo`` command line (top layer: it starts Prefect flows and calls pipeline/ directly).

    sgilo demo [--out DIR] [--slices N] [--seed N]
    sgilo reconstruct INPUT... --method M --out DIR [--model NAME|PATH] [--seed N]
                      [--acceleration R --center-fraction F] [--mask-type random|equispaced]
                      [--set FIELD=VALUE ...] [--config FILE.json]
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

One module per command group: :mod:`~sgilo.flows.cli.reconstruct`, :mod:`~sgilo.flows.cli.batch`
(batch, serve), :mod:`~sgilo.flows.cli.training` (train-gan, train-score),
:mod:`~sgilo.flows.cli.invert` (invert-training), :mod:`~sgilo.flows.cli.sample`,
:mod:`~sgilo.flows.cli.research` (bench, scaling, tune-*, evaluate-prior) and
:mod:`~sgilo.flows.cli.demo`; :mod:`~sgilo.flows.cli.parser` has the parser machinery and
:mod:`~sgilo.flows.cli.recon_options` the options every reconstructing command shares. A
command's options are added only when it is used, and heavy libraries (torch, sigpy, prefect) are
imported inside the commands, so ``sgilo --help`` is fast. Options that mirror a config field
take their defaults from it. Exit codes: 0 success; 1 when any input failed (each
failure is one line on stderr naming the file); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sgilo.flows.cli import batch, demo, invert, reconstruct, research, sample, training
from sgilo.flows.cli.parser import CommandParser, OneLineParser

#: command → (module of sgilo.flows.cli, function)
COMMANDS: dict[str, tuple[str, str]] = {
    "reconstruct": ("reconstruct", "cmd_reconstruct"),
    "batch": ("batch", "cmd_batch"),
    "serve": ("batch", "cmd_serve"),
    "demo": ("demo", "cmd_demo"),
    "tune-classical": ("research", "cmd_tune"),
    "train-gan": ("training", "cmd_train_gan"),
    "train-score": ("training", "cmd_train_score"),
    "invert-training": ("invert", "cmd_invert_training"),
    "sample": ("sample", "cmd_sample"),
    "evaluate-prior": ("research", "cmd_evaluate_prior"),
    "bench": ("research", "cmd_bench"),
    "scaling": ("research", "cmd_scaling"),
    "tune-generative": ("research", "cmd_tune_generative"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``sgilo`` parser; each command's options are added when it is parsed or its help is
    shown (:class:`~sgilo.flows.cli.parser.CommandParser`)."""
    parser = OneLineParser(
        prog="sgilo",
        description="MRI reconstruction with generative priors (SGILO, ILO, CSGM) and classical "
        "baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for group in (demo, reconstruct, batch, training, invert, sample, research):
        group.register(sub)
    return parser


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, CommandParser]:
    """The commands' parsers of ``build_parser()``, by name, with their options added."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: p.ready() for name, p in actions[0].choices.items()}


#: commands that end on SIGTERM/Ctrl-C with one line and nothing half-written
#: (:mod:`sgilo.pipeline.interrupt`); the training commands stop after their step with a checkpoint
INTERRUPTIBLE = ("reconstruct", "batch", "train-gan", "train-score")


def main(argv: Sequence[str] | None = None) -> int:
    from sgilo.pipeline.runtime import configure_environment

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    configure_environment()
    module, function = COMMANDS[args.command]
    command = getattr(importlib.import_module(f"sgilo.flows.cli.{module}"), function)
    if args.command in INTERRUPTIBLE or (args.command == "serve" and args.once):
        from sgilo.pipeline.interrupt import (
            run_interruptibly,  # SIGTERM/Ctrl-C: one line, no debris (training: a checkpoint)
        )

        return run_interruptibly(lambda: command(args))
    return command(args)


__all__ = ["COMMANDS", "build_parser", "command_parsers", "main"]
