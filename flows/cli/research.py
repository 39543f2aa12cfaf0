"""Research commands: ``bench`` (quality/speed tables), ``scaling`` (ILO seconds per slice against
size and batch), ``tune-classical`` and ``tune-generative`` (parameter sweeps on training
slices) and ``evaluate-prior``. The only production module that imports
:mod:`sgilo.pipeline.research` (tests/test_layering.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sgilo.flows.cli.parser import add_mirrored, stderr


def cmd_tune(args: argparse.Namespace) -> int:
    from sgilo.pipeline.research.tuning import markdown_table, run

    only = None if args.methods is None else tuple(m.strip() for m in args.methods.split(","))
    try:
        values = None if args.values is None else tuple(float(v) for v in args.values.split(","))
        rows, best = run(num_slices=args.slices, only=only, values=values)
    except ValueError as exc:
        stderr(f"sgilo tune-classical: {exc}")
        return 2
    table = markdown_table(rows)
    print(table)
    print("best λ_rel per method:", best)
    if args.out:
        args.out.write_text(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    if args.suite == "ood":
        from sgilo.pipeline.research.ood_bench import run_cli as run_ood

        return run_ood(
            out=args.out,
            smoke=args.smoke,
            methods=args.methods,
            model=args.model,
            samples=args.samples,
            threads=args.threads,
            device=args.device,
            fresh=args.fresh,
            command="sgilo " + " ".join(shlex.quote(a) for a in args.argv),
            log=stderr,
        )
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
            log=stderr,
        )
    from sgilo.pipeline.methods import METHODS, NEEDS_PRIOR, load_prior
    from sgilo.pipeline.research.bart import bart_available
    from sgilo.pipeline.research.bench import (
        REFERENCE,
        BenchConfig,
        default_methods,
        run_bench,
        smoke_config,
    )
    from sgilo.pipeline.research.bench_report import write_outputs

    methods = default_methods() if args.methods is None else args.methods.split(",")
    known = [*METHODS, REFERENCE]
    unknown = [m for m in methods if m not in known]
    if unknown:
        stderr(f"sgilo bench: unknown method(s) {', '.join(unknown)}; from {', '.join(known)}")
        return 2
    if REFERENCE in methods and not bart_available():
        stderr(f"sgilo bench: {REFERENCE} needs the bart command (Debian package 'bart')")
        return 2
    if any(m in NEEDS_PRIOR for m in methods):
        try:
            load_prior(args.model)
        except ValueError as exc:
            if args.methods is not None:
                stderr(f"sgilo bench: error: {' '.join(str(exc).split())}")
                return 2
            stderr(f"sgilo bench: no prior ({' '.join(str(exc).split())}): classical only")
            methods = [m for m in methods if m not in NEEDS_PRIOR]
    fields = {"methods": methods, "model": args.model, "samples": args.samples}
    fields["threads"] = args.threads
    fields["device"] = args.device
    if args.settings is not None:
        from sgilo.pipeline.experiment import DEFAULT_SETTINGS

        known = {s.label: s for s in DEFAULT_SETTINGS}
        labels = [t.strip() for t in args.settings.split(",") if t.strip()]
        if not labels or any(t not in known for t in labels):
            stderr(f"sgilo bench: --settings from {', '.join(known)}")
            return 2
        fields["settings"] = [
            (known[t].coils, known[t].acceleration, known[t].center_fraction) for t in labels
        ]
    if args.slices is not None:
        fields["num_slices"] = args.slices
    try:
        config = smoke_config(**fields) if args.smoke else BenchConfig(**fields)
    except ValueError as exc:
        stderr(f"sgilo bench: error: {' '.join(str(exc).split())}")
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
    rows, panels = run_bench(config, log=stderr, work=work, on_row=report)
    md = args.out / "BENCHMARKS.md"
    stderr(f"wrote {md}")
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    import shlex

    from sgilo.pipeline.methods import load_prior
    from sgilo.pipeline.research.scaling import ilo_scaling, write_scaling

    try:
        sizes = _ints(args.sizes)
        batches = _ints(args.batches)
        prior = load_prior(args.model)
    except ValueError as exc:
        stderr(f"sgilo scaling: error: {' '.join(str(exc).split())}")
        return 2
    if min(sizes) < 8 or min(batches) < 1 or args.steps < 1 or args.rounds < 1:
        stderr("sgilo scaling: sizes >= 8, batches >= 1, --steps and --rounds >= 1")
        return 2
    rows = ilo_scaling(
        prior,
        sizes=sizes,
        batches=batches,
        steps_per_round=args.steps,
        rounds=args.rounds,
        num_threads=args.threads,
        log=stderr,
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
        stderr(f"sgilo tune-generative: --settings from {', '.join(known)}; --slices >= 1")
        return 2
    try:
        base = {}
        for item in args.option:
            field, _, value = item.partition("=")
            base[field.strip()] = parse_value(value.strip())
        values = [parse_value(v.strip()) for v in args.values.split(",") if v.strip()]
        prior = load_prior(args.model)
    except ValueError as exc:
        stderr(f"sgilo tune-generative: error: {' '.join(str(exc).split())}")
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
            log=stderr,
        )
    except ValueError as exc:  # an unknown field or a bad value, from the solver's config
        stderr(f"sgilo tune-generative: error: {' '.join(str(exc).split())[:300]}")
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

    methods = args.methods
    if isinstance(methods, str):
        methods = tuple(m for m in methods.split(",") if m)
    if not 1 <= args.slices <= 16 or not set(methods) <= {"csgm", "ilo"} or args.samples < 2:
        stderr("sgilo evaluate-prior: --slices 1-16, --samples >= 2, --methods from csgm,ilo")
        return 2
    try:
        prior = load_prior(args.model)
    except ValueError as exc:
        stderr(f"sgilo evaluate-prior: error: {' '.join(str(exc).split())}")
        return 2
    if prior.generator.config.image_channels != 1:
        stderr("sgilo evaluate-prior: only 1-channel (magnitude) priors are evaluated on MNI")
        return 2
    report = evaluate_prior(
        prior,
        methods=methods,
        num_slices=args.slices,
        num_samples=args.samples,
        seed=args.seed,
        images=args.images,
        log=stderr,
    )
    report["model"] = str(prior.path)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_report(report)
    (args.out / "report.md").write_text(table + "\n")
    save_grid(args.out / "grid.png", comparison_grid(prior, seed=args.seed), cols=8)
    print(table)
    stderr(f"wrote {args.out}/report.json, report.md, grid.png (top row: training slices)")
    return 0


def _ints(value: str | tuple[int, ...]) -> list[int]:
    """A comma-separated option's integers (its default is the config's tuple)."""
    return list(value) if isinstance(value, tuple) else [int(v) for v in value.split(",")]


def _populate_bench(bench: argparse.ArgumentParser) -> None:
    from sgilo.pipeline.research.bench import BenchConfig

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
    add_mirrored(
        bench,
        "--model",
        source=BenchConfig,
        field="model",
        help="prior name, generator file or folder",
    )
    add_mirrored(bench, "--samples", source=BenchConfig, field="samples", type=int)
    bench.add_argument(
        "--settings",
        default=None,
        help="comma-separated setting labels (default: single-coil and 8-coil at 4x and 8x)",
    )
    add_mirrored(
        bench,
        "--threads",
        source=BenchConfig,
        field="threads",
        type=int,
        help="torch threads per method",
    )
    add_mirrored(bench, "--device", source=BenchConfig, field="device", choices=("cpu", "cuda"))
    bench.add_argument(
        "--suite",
        choices=("mri", "natural", "ood"),
        default="mri",
        help="mri (default): BENCHMARKS.md; natural: the ILO/SGILO papers' RGB tasks "
        "(inpainting, denoising, super-resolution, CS, colorization), BENCHMARKS_NATURAL.md; "
        "ood: every method on images the prior never saw (pipeline/data/ood.py), "
        "BENCHMARKS_OOD.md",
    )
    bench.add_argument("--tasks", default=None, help="natural suite: comma-separated task labels")
    bench.add_argument("--images", type=int, default=None, help="natural suite: patches (1-64)")


def _populate_scaling(sc: argparse.ArgumentParser) -> None:
    from sgilo.pipeline.research.scaling import ilo_scaling

    sc.add_argument("--model", default=None, help="prior name, generator file or folder")
    add_mirrored(
        sc,
        "--sizes",
        source=ilo_scaling,
        field="sizes",
        help="operator grid sides, comma-separated",
    )
    add_mirrored(
        sc,
        "--batches",
        source=ilo_scaling,
        field="batches",
        help="slices per batch, comma-separated",
    )
    add_mirrored(
        sc,
        "--steps",
        source=ilo_scaling,
        field="steps_per_round",
        type=int,
        help="ILO steps per round",
    )
    add_mirrored(sc, "--rounds", source=ilo_scaling, field="rounds", type=int, help="ILO rounds")
    add_mirrored(
        sc, "--threads", source=ilo_scaling, field="num_threads", type=int, help="torch threads"
    )
    sc.add_argument("--out", type=Path, default=Path("docs/SPEED.md"))
    sc.add_argument("--plot", type=Path, default=Path("docs/images/scaling.png"))


def _populate_evaluate_prior(ev: argparse.ArgumentParser) -> None:
    from sgilo.pipeline.research.prior_eval import IMAGE_SETS, evaluate_prior

    ev.add_argument("--model", default=None, help="a shipped name, generator file or folder")
    add_mirrored(
        ev,
        "--slices",
        source=evaluate_prior,
        field="num_slices",
        type=int,
        help="validation slices to invert (1-16)",
    )
    add_mirrored(ev, "--samples", source=evaluate_prior, field="num_samples", type=int)
    add_mirrored(
        ev,
        "--methods",
        source=evaluate_prior,
        field="methods",
        help="inversion methods, comma-separated",
    )
    ev.add_argument("--out", type=Path, required=True, help="folder for report.json/md, grid.png")
    add_mirrored(ev, "--seed", source=evaluate_prior, field="seed", type=int)
    add_mirrored(
        ev,
        "--images",
        source=evaluate_prior,
        field="images",
        choices=IMAGE_SETS,
        help="the held-out images to invert: MNI validation slices, the synth-brain validation "
        "split, or the out-of-distribution suite's images",
    )


def _populate_tune_generative(tg: argparse.ArgumentParser) -> None:
    from sgilo.pipeline.research.tuning_generative import sweep_generative

    tg.add_argument("--method", required=True, choices=("csgm", "ilo", "sgilo"))
    tg.add_argument("--param", required=True, help="a config field, e.g. lam, radius_fraction")
    tg.add_argument(
        "--values", required=True, help="comma-separated; JSON values, steps as 300-200-100"
    )
    tg.add_argument("--model", default=None, help="prior name, generator file or folder")
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
    add_mirrored(
        tg, "--samples", source=sweep_generative, field="samples", type=int, help="sgilo chains"
    )
    tg.add_argument("--out", type=Path, default=None, help="write the Markdown table here")


def _populate_tune_classical(tune: argparse.ArgumentParser) -> None:
    from sgilo.pipeline.research.tuning import run

    add_mirrored(tune, "--slices", source=run, field="num_slices", type=int)
    tune.add_argument(
        "--methods", default=None, help="comma-separated subset, e.g. l1-wavelet (default: all)"
    )
    tune.add_argument(
        "--values", default=None, help="comma-separated values to sweep (default: built-in grid)"
    )
    tune.add_argument("--out", type=Path, default=None, help="write the Markdown table here")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench``, ``scaling``, ``evaluate-prior``, ``tune-generative``, ``tune-classical``."""
    sub.add_parser(
        "bench",
        help="benchmark: methods x {single-coil, 8-coil} x {4x, 8x} on held-out MNI slices",
        description="Quality (PSNR/SSIM/NMSE) and cost (s/slice, peak memory) of every method "
        "on simulated acquisitions of the MNI152 validation slices; writes BENCHMARKS.md, "
        "benchmarks.json and plots to --out (default docs/). --smoke: 2 slices, few steps.",
        populate=_populate_bench,
    )
    sub.add_parser(
        "scaling",
        help="seconds per slice of ILO against image size and batch (docs/SPEED.md)",
        description="Times ILO (a short fixed schedule) on single-coil 8x MNI training slices "
        "for each operator grid (batch 1) and each batch (at the prior's resolution); writes "
        "the table into --out (between scaling markers) and the plot to --plot.",
        populate=_populate_scaling,
    )
    sub.add_parser(
        "evaluate-prior",
        help="validation figures of a prior: inversion PSNR on held-out MNI slices, sliced "
        "Wasserstein distance and nearest-training PSNR of its samples, and a sample sheet",
        populate=_populate_evaluate_prior,
    )
    sub.add_parser(
        "tune-generative",
        help="sweep one parameter of csgm/ilo/sgilo on MNI training slices (never validation)",
        populate=_populate_tune_generative,
    )
    sub.add_parser(
        "tune-classical",
        help="choose ℓ1-wavelet/TV λ on MNI training slices",
        populate=_populate_tune_classical,
    )
