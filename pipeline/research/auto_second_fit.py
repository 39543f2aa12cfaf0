"""Does a second generative fit make ``auto``'s choice better, and with which margin?

``auto`` compares the generative method with the classical ones by their errors on held-out
k-space (:mod:`sgilo.pipeline.method_choice`). Its first fit holds out a 10 % draw of the outer
measured columns: two columns per 128² slice at 4×, one at 8×, too few to rank a generative fit
against a classical one. This measures, on the tuning set of
:mod:`sgilo.pipeline.research.auto_margin` (no benchmark image), what further held-out columns
would add: the outer columns are cut into the 4 parts of
:func:`sgilo.pipeline.method_choice.outer_partition` (part 0 contains the first fit's draw), SGILO
at its defaults is fitted once per part with that part held out (the final data-consistency step
as in the prior-fit check), and every classical candidate likewise. Per row it records the
squared held-out errors summed per part (``generative``, ``classical``), the number of outer
columns, and the PSNR of each part's output (data consistency with every sample).

:func:`loss_table` then joins these rows with the rows of ``auto_margin`` (the first fit's
held-out errors and every method's PSNR) and gives, per margin τ, auto's mean loss to the best
single method when a slice is judged on the first fit alone or on the first fit plus part ``k``
(the classical pick by all 4 parts, as ``auto`` ranks them). SGILO's fits depend on the number of
torch threads (its steps and early stopping are sensitive to rounding): docs/auto_second_fit.json
was measured with 2 threads; with 1 thread the classical errors agree to 1e-5 and SGILO's
held-out errors differ by up to 30 % per part (PSNR by up to 0.6 dB per fit), the noise in which
differences of 0.1–0.2 dB between margins sit:

    OMP_NUM_THREADS=2 python -m sgilo.pipeline.research.auto_second_fit --out rows.json  # ~25 min
    python -m sgilo.pipeline.research.auto_second_fit --rows docs/auto_second_fit.json \\
        --margin-rows docs/auto_margin.json                                        # tables only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sgilo.pipeline.research.auto_margin import CLASSICAL, IMAGE_SETS, tuning_problems

TAUS = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 1.8, 2.0, 2.5, 3.0, float("inf"))
PARTS = 4


def measure(
    prior: object,
    size: int = 128,
    snr_db: float = 30.0,
    seed: int = 3,
    settings: frozenset[str] | None = None,
    held_parts: tuple[int, ...] | None = None,
    steps_fraction: float = 1.0,
    image_set: str = "base",
) -> list[dict]:
    """One row per setting (all, or those labelled in ``settings``) and slice of the tuning set
    ``image_set`` (:data:`sgilo.pipeline.research.auto_margin.IMAGE_SETS`; the module
    docstring's per-part errors). SGILO is fitted only with the parts in ``held_parts`` held out
    (default all; the others' entries are ``None``), with ``steps_fraction`` of its steps per
    round (auto's ``second_fit_steps``)."""
    import torch

    from sgilo.pipeline.method_choice import (
        kfold_errors,
        outer_partition,
        per_fold_part,
        scaled_steps,
    )
    from sgilo.pipeline.metrics import evaluate
    from sgilo.pipeline.prior_fit import fit_on_split
    from sgilo.pipeline.solvers import heldout_columns as columns
    from sgilo.pipeline.solvers.kspace_split import heldout_error

    images, names = IMAGE_SETS[image_set](size)
    only = None if held_parts is None else frozenset(held_parts)
    rows = []
    for setting, acq, y, op in tuning_problems(images, settings, snr_db, seed):
        batch = y.shape[0]
        methods = tuple(m for m in CLASSICAL if m != "cg-sense" or setting.coils is not None)
        parts = outer_partition(y, op, PARTS)
        classical = kfold_errors(y, op, methods, parts)  # (K, B, N)
        generative, psnrs = [], []
        options = {"steps": scaled_steps("sgilo", None, steps_fraction)}
        for k in range(parts.shape[0]):
            if only is not None and k not in only:
                generative.append(None)
                psnrs.append(None)
                continue
            part = per_fold_part(y, op, parts[k])
            model, predicted, _ = fit_on_split(
                y, op, part, "sgilo", prior=prior, solver_options=options
            )
            count = part.held_op.num_measurements(batch)
            generative.append(heldout_error(part, predicted)[0] * count)
            out = model.image.detach().abs().to(torch.float32).cpu().numpy()
            psnrs.append(
                [evaluate(acq.target[b : b + 1], out[b : b + 1])["psnr"] for b in range(batch)]
            )
            print(f"{setting.label}: part {k + 1}/{parts.shape[0]}", flush=True)
        ncols = columns.candidate_columns(op, y).sum(dim=1).tolist()
        for b, name in enumerate(names):
            rows.append(
                {
                    "setting": setting.label,
                    "image": name,
                    "outer_columns": int(ncols[b]),
                    "coils": 1 if setting.coils is None else int(op.num_coils),
                    "rows": int(y.shape[-2]),
                    "generative": [None if g is None else float(g[b]) for g in generative],
                    "steps_fraction": steps_fraction,
                    "classical": {
                        m: [float(classical[k, b, j]) for k in range(parts.shape[0])]
                        for j, m in enumerate(methods)
                    },
                    "psnr_parts": [None if p is None else p[b] for p in psnrs],
                }
            )
    return rows


def first_fit_columns(outer: int, fraction: float = 0.1) -> int:
    """Columns in the first fit's draw of ``outer`` candidates
    (:func:`sgilo.pipeline.solvers.heldout_columns.draw_columns`)."""
    return min(outer - 1, max(1, round(fraction * outer)))


def statistic(row: dict, first: dict, part: int | None) -> float:
    """The generative held-out error over the lowest classical one, summed over the first fit's
    columns (errors of ``first``, an ``auto_margin`` row) and part ``part`` (``None``: the first
    fit alone)."""
    per_column = row["rows"] * row["coils"]
    n = first_fit_columns(row["outer_columns"]) * per_column
    errors = first["errors"]
    extra = 0.0 if part is None else row["generative"][part]
    generative = errors["sgilo"] * n + extra
    classical = min(
        errors[m] * n + (0.0 if part is None else sums[part])
        for m, sums in row["classical"].items()
    )
    return generative / classical


def loss_table(rows: list[dict], first_rows: list[dict], part: int | None) -> list[dict]:
    """Per τ: auto's mean PSNR loss to the best single method and its worst loss to the best
    classical one, judging each row by :func:`statistic` with ``part``."""
    first = {(r["setting"], r["image"]): r for r in first_rows}
    table = []
    for tau in TAUS:
        to_best, to_classical = [], []
        for row in rows:
            base = first[(row["setting"], row["image"])]
            psnr = base["psnr"]
            totals = {m: sum(v) for m, v in row["classical"].items()}
            pick = min(totals, key=totals.get)
            chosen = "sgilo" if statistic(row, base, part) <= tau else pick
            to_best.append(max(psnr.values()) - psnr[chosen])
            to_classical.append(max(v for m, v in psnr.items() if m != "sgilo") - psnr[chosen])
        table.append(
            {
                "tau": tau,
                "mean_loss_to_best": float(np.mean(to_best)),
                "worst_loss_to_classical": float(np.max(to_classical)),
            }
        )
    return table


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="measure and write rows as JSON")
    parser.add_argument(
        "--rows", type=Path, nargs="+", default=None, help="rows to tabulate (files joined)"
    )
    parser.add_argument(
        "--margin-rows",
        type=Path,
        nargs="+",
        default=[Path("docs/auto_margin.json")],
        help="auto_margin's rows (first fit's errors, PSNRs; files joined)",
    )
    parser.add_argument(
        "--images",
        choices=sorted(IMAGE_SETS),
        default="base",
        help="the tuning set to measure (auto_margin's --images)",
    )
    parser.add_argument("--settings", nargs="+", default=None, help='e.g. "single-coil 8x"')
    parser.add_argument(
        "--parts",
        nargs="+",
        type=int,
        default=None,
        help="fit SGILO with only these parts held out",
    )
    parser.add_argument(
        "--steps-fraction",
        type=float,
        default=1.0,
        help="SGILO's steps per round times this (auto's second_fit_steps)",
    )
    args = parser.parse_args(argv)
    if args.rows is not None:
        rows = [row for path in args.rows for row in json.loads(path.read_text())]
    else:
        if args.out is None:
            parser.error("give --out (measure) or --rows (tabulate)")
        from sgilo.pipeline.methods import load_prior

        only = None if args.settings is None else frozenset(args.settings)
        rows = measure(
            load_prior(None),
            settings=only,
            held_parts=None if args.parts is None else tuple(args.parts),
            steps_fraction=args.steps_fraction,
            image_set=args.images,
        )
        args.out.write_text(json.dumps(rows, indent=1))
    first = [row for path in args.margin_rows for row in json.loads(path.read_text())]
    for acc in ("4x", "8x"):
        subset = [r for r in rows if r["setting"].endswith(acc)]
        if not subset:
            continue
        variants = [None] + [
            p for p in range(1, PARTS) if all(r["generative"][p] is not None for r in subset)
        ]
        tables = [loss_table(subset, first, p) for p in variants]
        head = " | ".join("first fit" if p is None else f"+ part {p}" for p in variants)
        print(f"\n{acc} ({len(subset)} rows), mean loss / worst loss to classical (dB)\n")
        print(f"| τ | {head} |\n|---|{'---|' * len(variants)}")
        for i, tau in enumerate(TAUS):
            cells = " | ".join(
                f"{t[i]['mean_loss_to_best']:.2f} / {t[i]['worst_loss_to_classical']:.2f}"
                for t in tables
            )
            print(f"| {tau:g} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
