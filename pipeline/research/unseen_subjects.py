"""Reconstruction of new subjects: the template's contrast, smoothly deformed, on held-out planes.

The in-domain validation of ``sgilo bench`` is the MNI152 template's held-out axial slices: planes
between the training slices of the **same** brain, which a prior trained on that brain has nearly
seen. Real scans come from other subjects. This measures the methods on a proxy for those: axial
images of the template's T1 contrast at the **validation** planes (the MNI validation bands,
:mod:`sgilo.pipeline.data.synth_split`), each through its own smooth diffeomorphic deformation
(rms up to 4 mm), zoom and shift, so each is a brain no prior saw
(:func:`sgilo.pipeline.data.synth_brain.synth_brain_batch` with the tuning set's
:data:`sgilo.pipeline.research.auto_margin.UNSEEN_AXIAL`, seed :data:`SEED`); ``--head`` adds a
synthetic scalp, skull and CSF around the brain (``head_prob`` 1), as in scans that are not
skull-stripped. Acquisitions as the benchmark's (smooth phase, birdcage coils, fastMRI random
masks, ESPIRiT maps for 8 coils) at ``--snr`` dB.

Each prior in ``--models`` runs the generative methods (and ``auto``) on the same acquisitions;
the classical methods run once. PSNR per slice against the simulation's magnitude (peak = the
slice maximum). An ``auto`` row also records, per slice, its choice, the prior-fit ratio and the
unexplained fraction it judged; with ``auto`` among the methods the command prints, per setting,
``auto`` against the best single method and the best classical one of each slice
(:func:`auto_summary`), a check of its rule on images that no tuning set holds.

    python -m sgilo.pipeline.research.unseen_subjects --models brain-t1-128 FILE \\
        --methods ilo --settings 'single-coil 8x' '8-coil 8x' --slices 8 --out rows.json
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from sgilo.pipeline.provenance import write_json_atomic
from sgilo.pipeline.research.auto_margin import CLASSICAL

#: the seed of the images (not a benchmark's or a tuning set's)
SEED = 21
GENERATIVE = ("csgm", "ilo", "sgilo")
#: the methods that run once per prior
WITH_PRIOR = (*GENERATIVE, "auto")
#: what an ``auto`` row keeps of its diagnostics (per slice)
AUTO_KEYS = {
    "choice": "auto_choice",
    "ratio": "prior_fit_ratio",
    "unexplained": "prior_fit_unexplained",
}


def subject_images(count: int, size: int = 128, head: bool = False) -> np.ndarray:
    """``count`` new-subject axial T1 images of the module docstring: float32 ``(count, size,
    size)`` in [0, 1]."""
    from sgilo.pipeline.data.synth_brain import SynthBrainConfig, synth_brain_batch
    from sgilo.pipeline.research.auto_margin import UNSEEN_AXIAL

    config = SynthBrainConfig(**{**UNSEEN_AXIAL, "head_prob": 1.0 if head else 0.0})
    return synth_brain_batch(count, SEED, size, "validation", config).numpy().astype(np.float32)


def measure(
    models: list[str],
    methods: list[str],
    settings: list[str],
    slices: int = 8,
    head: bool = False,
    snr_db: float = 30.0,
    seed: int = 3,
    log=print,
) -> list[dict]:
    """One row per (setting, method, model), settings in the benchmark's order: ``{"setting",
    "method", "model" (None for a classical method), "psnr": [per slice],
    "seconds_per_slice"}``. The acquisitions are the tuning set's
    (:func:`sgilo.pipeline.research.auto_margin.tuning_problems`)."""
    from sgilo.pipeline.experiment import DEFAULT_SETTINGS
    from sgilo.pipeline.methods import load_prior, solve
    from sgilo.pipeline.metrics import evaluate
    from sgilo.pipeline.research.auto_margin import tuning_problems

    known = [s.label for s in DEFAULT_SETTINGS]
    unknown = [s for s in settings if s not in known]
    if unknown:
        raise ValueError(f"settings: unknown {unknown}; expected some of {list(known)}")
    images = subject_images(slices, head=head)
    priors = {m: load_prior(m) for m in models} if set(methods) & set(WITH_PRIOR) else {}
    rows = []
    for setting, acq, y, op in tuning_problems(images, frozenset(settings), snr_db, seed):
        label = setting.label
        for method in methods:
            if method == "cg-sense" and setting.coils is None:
                continue
            for model in models if method in WITH_PRIOR else [None]:
                start = time.perf_counter()
                result = solve(y, op, method, prior=priors.get(model))
                seconds = (time.perf_counter() - start) / slices
                psnr = [
                    float(evaluate(acq.target[b : b + 1], result.magnitude[b : b + 1])["psnr"])
                    for b in range(slices)
                ]
                row = {
                    "setting": label,
                    "method": method,
                    "model": model,
                    "psnr": psnr,
                    "seconds_per_slice": seconds,
                }
                if method == "auto":
                    record = result.diagnostics_dict()
                    row.update({k: record.get(key) for k, key in AUTO_KEYS.items()})
                rows.append(row)
                log(f"{label:15s} {method:11s} {model or '':40s} {np.mean(psnr):6.2f} dB")
    return rows


def auto_summary(rows: list[dict]) -> list[dict]:
    """Per setting and prior with an ``auto`` row: ``auto`` − the best single method of each slice
    (every other row of that setting: the classical ones and that prior's generative ones) and
    − the best classical method, dB, as ``{"setting", "model", "to_best_mean", "to_best_worst",
    "to_classical_mean", "to_classical_worst", "below_classical_by_0.5", "picks"}``."""
    out = []
    for auto in (r for r in rows if r["method"] == "auto"):
        same = [r for r in rows if r["setting"] == auto["setting"] and r is not auto]
        single = [r for r in same if r["model"] in (None, auto["model"])]
        best = np.max([r["psnr"] for r in single], axis=0)
        classical = np.max([r["psnr"] for r in single if r["method"] in CLASSICAL], axis=0)
        to_best = np.asarray(auto["psnr"]) - best
        to_classical = np.asarray(auto["psnr"]) - classical
        picks = dict(Counter(auto.get("choice") or []))
        out.append(
            {
                "setting": auto["setting"],
                "model": auto["model"],
                "to_best_mean": float(to_best.mean()),
                "to_best_worst": float(to_best.min()),
                "to_classical_mean": float(to_classical.mean()),
                "to_classical_worst": float(to_classical.min()),
                "below_classical_by_0.5": int((to_classical < -0.5).sum()),
                "picks": picks,
            }
        )
    return out


def print_auto_summary(summary: list[dict], log=print) -> None:
    """:func:`auto_summary` as a Markdown table."""
    if not summary:
        return
    log(
        "| setting | prior | auto − best single (mean / worst) | auto − best classical "
        "(mean / worst) | slices > 0.5 dB below classical | picks |"
    )
    log("|---|---|---|---|---:|---|")
    for s in summary:
        picks = ", ".join(f"{m} {n}" for m, n in sorted(s["picks"].items()))
        log(
            f"| {s['setting']} | {s['model']} "
            f"| {s['to_best_mean']:+.2f} / {s['to_best_worst']:+.2f} "
            f"| {s['to_classical_mean']:+.2f} / {s['to_classical_worst']:+.2f} "
            f"| {s['below_classical_by_0.5']} | {picks} |"
        )


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["brain-t1-128"], help="names or files")
    parser.add_argument("--methods", nargs="+", default=["l1-wavelet", "tv", "ilo"])
    parser.add_argument("--settings", nargs="+", default=["single-coil 8x", "8-coil 8x"])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--head", action="store_true", help="a synthetic head around the brain")
    parser.add_argument("--snr", type=float, default=30.0)
    parser.add_argument("--out", type=Path, required=True, help="rows as JSON")
    args = parser.parse_args(argv)
    rows = measure(
        args.models, args.methods, args.settings, args.slices, args.head, snr_db=args.snr
    )
    summary = auto_summary(rows)
    print_auto_summary(summary)
    record = {"command": vars(args) | {"out": str(args.out)}, "seed": SEED, "rows": rows}
    if summary:
        record["auto_summary"] = summary
    write_json_atomic(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
