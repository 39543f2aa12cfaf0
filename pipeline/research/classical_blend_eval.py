"""``auto``'s classical output on the tuning sets: the blend against the lowest held-out error.

On the tuning sets of :mod:`sgilo.pipeline.research.auto_margin` (images no benchmark scores),
per setting, SNR and mask seed, the classical candidates (:func:`sgilo.pipeline.prior_fit.
classical_candidates`) are fitted on ``auto``'s folds (:func:`sgilo.pipeline.method_choice.
kfold_statistics`) and on every sample. Per slice it records each candidate's PSNR, the
candidate with the lowest summed held-out error (``auto``'s rule before the blend), and the blend
of :mod:`sgilo.pipeline.classical_blend`; the summary gives, per setting, the mean and the worst
PSNR gap of each rule to the best single candidate of that slice (chosen on the target: a
reference, not a rule). Only the classical arm is measured: which slices ``auto`` gives to the
generative method does not change.

    python -m sgilo.pipeline.research.classical_blend_eval --out rows.json \\
        [--images base extra heads] [--snr 20 30 40] [--seeds 3 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch


def measure(image_set: str, snr_db: float, seed: int, size: int = 128) -> list[dict]:
    """One row per setting and slice of ``image_set`` at ``snr_db`` with mask/noise ``seed``."""
    from sgilo.pipeline.classical_blend import blend_label, simplex_weights
    from sgilo.pipeline.method_choice import AutoConfig, kfold_statistics, outer_partition
    from sgilo.pipeline.methods import run_method
    from sgilo.pipeline.metrics import psnr
    from sgilo.pipeline.prior_fit import classical_candidates
    from sgilo.pipeline.research.auto_margin import IMAGE_SETS, tuning_problems

    images, names = IMAGE_SETS[image_set](size)
    rows = []
    for setting, acq, y, op in tuning_problems(images, None, snr_db, seed):
        candidates = classical_candidates(op)
        parts = outer_partition(y, op, AutoConfig().classical_folds)
        errors, gram, cross = kfold_statistics(y, op, candidates, parts)
        errors = errors.sum(dim=0)
        weights = simplex_weights(gram.sum(dim=0), cross.sum(dim=0))
        refits = {n: run_method(y, op, n).image for n in candidates}
        for b, name in enumerate(names):
            target = acq.target[b : b + 1]
            scores = {n: psnr(target, refits[n][b : b + 1].abs().float().numpy()) for n in refits}
            blend = sum(float(weights[b, j]) * refits[n][b : b + 1] for j, n in enumerate(refits))
            lowest = candidates[int(errors[b].argmin())]
            rows.append(
                {
                    "set": image_set,
                    "image": name,
                    "snr_db": snr_db,
                    "seed": seed,
                    "setting": setting.label,
                    "psnr": scores,
                    "lowest_error": lowest,
                    "lowest_error_psnr": scores[lowest],
                    "weights": dict(zip(candidates, weights[b].tolist(), strict=True)),
                    "blend": blend_label(candidates, weights[b].tolist()),
                    "blend_psnr": psnr(target, blend.abs().float().numpy()),
                }
            )
    return rows


def summary(rows: list[dict]) -> list[str]:
    """A Markdown table: per setting (and over all), the rows and, for the lowest-error pick and
    the blend, the mean and the worst PSNR gap to the slice's best single candidate."""
    lines = [
        "| setting | slices | lowest held-out error: mean, worst (dB) | blend: mean, worst (dB) |",
        "|---|---:|---|---|",
    ]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    for label in [*settings, "all"]:
        subset = [r for r in rows if label in ("all", r["setting"])]
        gaps = {
            key: [r[key] - max(r["psnr"].values()) for r in subset]
            for key in ("lowest_error_psnr", "blend_psnr")
        }
        cells = [f"{statistics.fmean(g):+.2f}, {min(g):+.2f}" for g in gaps.values()]
        lines.append(f"| {label} | {len(subset)} | {cells[0]} | {cells[1]} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory
    from sgilo.pipeline.research.auto_margin import IMAGE_SETS

    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="rows as JSON")
    parser.add_argument("--images", nargs="+", choices=sorted(IMAGE_SETS), default=["base"])
    parser.add_argument("--snr", nargs="+", type=float, default=[30.0], help="dB")
    parser.add_argument("--seeds", nargs="+", type=int, default=[3], help="mask and noise seeds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for image_set in args.images:
        for snr_db in args.snr:
            for seed in args.seeds:
                rows += measure(image_set, snr_db, seed)
                args.out.write_text(json.dumps(rows, indent=1))
                print(f"{image_set} {snr_db:g} dB seed {seed}: {len(rows)} rows", flush=True)
    print("\n".join(summary(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
