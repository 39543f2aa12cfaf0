"""``sgilo demo``: the README's main job on the bundled MNI152 validation slices, end to end
(:func:`sgilo.flows.demo.demo_flow`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sgilo.flows.cli.parser import add_mirrored, stderr


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""

    def populate(demo: argparse.ArgumentParser) -> None:
        from sgilo.pipeline.demo import DemoConfig

        demo.add_argument("--out", type=Path, default=Path("sgilo-demo"), help="output folder")
        add_mirrored(
            demo,
            "--slices",
            source=DemoConfig,
            field="num_slices",
            type=int,
            help="validation slices to use (1-16)",
        )
        add_mirrored(demo, "--seed", source=DemoConfig, field="seed", type=int)

    sub.add_parser(
        "demo", help="end-to-end demo on bundled MNI152 validation slices", populate=populate
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from sgilo.flows.demo import demo_flow
    from sgilo.pipeline.demo import DemoConfig

    if not 1 <= args.slices <= 16:
        stderr("sgilo demo: --slices must be between 1 and 16")
        return 2
    config = DemoConfig(num_slices=args.slices, seed=args.seed)
    summary = demo_flow(out_dir=str(args.out), config=config)
    print(summary)
    return 0
