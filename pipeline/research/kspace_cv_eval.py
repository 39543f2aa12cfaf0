"""How well ``lam="auto"`` (λ from held-out k-space, :mod:`sgilo.pipeline.solvers.kspace_cv`)
chooses ℓ1-wavelet's and TV's λ: PSNR at the default λ, at ``auto`` and at the oracle λ of the same
grid (chosen per slice on the target: an upper bound no reconstruction can use), on MNI
validation slices, single-coil and 8-coil (ESPIRiT maps), 4× and 8×, 20/30/40 dB SNR.

Two ways: end to end (:func:`evaluate`, the solver's ``lam="auto"`` call and a fixed-λ call per
grid point), or from the curves and target errors that
:mod:`sgilo.pipeline.research.kspace_cv_rules` collected (:func:`score`; exact for the
production rule, whose refit at a grid point is the full fit at that point, and cheaper: the
held-out fits of 3 folds and the 7 full fits serve every rule):

    python -m sgilo.pipeline.research.kspace_cv_eval --size 64 --slices 8 --out cv.json
    python -m sgilo.pipeline.research.kspace_cv_rules --split validation --coarse --out val.json
    python -m sgilo.pipeline.research.kspace_cv_eval --from val.json

Prints one JSON row per (setting, SNR, method) and writes them all to ``--out``; the tables in
docs/CLASSICAL_TUNING.md ("λ from held-out k-space") were made with it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sgilo.pipeline.data.mni import mni_slices
from sgilo.pipeline.experiment import DEFAULT_SETTINGS, Setting, espirit_operator
from sgilo.pipeline.metrics import psnr
from sgilo.pipeline.solvers.classical import CLASSICAL
from sgilo.pipeline.solvers.kspace_cv import CV_FOLDS, GRID_FACTORS
from sgilo.pipeline.solvers.lambda_rule import SE_WIDTH, choose_on_curve

#: the grid index of the default λ (factor 1)
DEFAULT_INDEX = GRID_FACTORS.index(1.0)


def evaluate(
    size: int,
    count: int,
    snrs: tuple[float, ...] = (20, 30, 40),
    settings: tuple[Setting, ...] = tuple(DEFAULT_SETTINGS),
) -> list[dict]:
    """The rows of the comparison (see the module docstring), one per setting, SNR and method."""
    slices = mni_slices("validation", size=size)[:count]
    rows = []
    for setting in settings:
        for snr in snrs:
            acq = setting.simulate(slices, snr_db=snr, seed=1)
            y, op = espirit_operator(acq)
            for method in ("l1-wavelet", "tv"):
                solve = CLASSICAL[method]
                start = time.perf_counter()
                auto = solve(y, op, lam="auto")
                seconds_auto = (time.perf_counter() - start) / len(slices)
                grid = auto.diagnostics.lambda_grid  # (S, G): per slice
                fits, seconds_fixed = [], 0.0
                for g in range(len(grid[0])):
                    start = time.perf_counter()
                    lam = torch.tensor([row[g] for row in grid], dtype=torch.float64)
                    fits.append(solve(y, op, lam=lam).magnitude)
                    if g == DEFAULT_INDEX:
                        seconds_fixed = (time.perf_counter() - start) / len(slices)
                mse = np.array([((f - acq.target) ** 2).mean(axis=(1, 2)) for f in fits])
                oracle_index = mse.argmin(axis=0)  # (S,): per slice, on the target
                oracle = np.stack([fits[g][s] for s, g in enumerate(oracle_index)])
                rows.append(
                    {
                        "setting": setting.label,
                        "snr": snr,
                        "method": method,
                        "default": psnr(acq.target, fits[DEFAULT_INDEX]),
                        "auto": psnr(acq.target, auto.magnitude),
                        "oracle": psnr(acq.target, oracle),
                        "auto_index": [
                            row.index(v)
                            for row, v in zip(grid, auto.diagnostics.lambda_rel, strict=True)
                        ],
                        "oracle_index": oracle_index.tolist(),
                        "seconds_auto": seconds_auto,
                        "seconds_fixed": seconds_fixed,
                        "sigma": acq.sigma,
                        "sigma_estimate": float(np.mean(auto.diagnostics.noise_sigma)),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def score(collected: list[dict], folds: int = CV_FOLDS, width: float = SE_WIDTH) -> list[dict]:
    """The rows of the comparison from collected curves (module docstring): per (setting, SNR,
    method) the mean over slices of the target MSE at the default (the grid's centre), at the
    rule's choice (:func:`sgilo.pipeline.solvers.lambda_rule.choose_on_curve` on the held-out
    columns of the first ``folds`` folds, with ``width``) and at the per-slice oracle, as PSNR
    with the peak of each row's targets (``peak``, default 1)."""
    groups: dict[tuple, list[dict]] = {}
    for r in collected:
        groups.setdefault((r["setting"], r["snr"], r["method"]), []).append(r)
    rows = []
    for (setting, snr, method), records in groups.items():
        chosen, default, oracle = [], [], []
        for r in records:
            mse = np.array(r["mse"])
            step = (len(mse) - 1) // (len(GRID_FACTORS) - 1)  # 2 for the fine grid
            coarse = mse[::step]
            grid = torch.tensor([r["default"] * f for f in GRID_FACTORS], dtype=torch.float64)
            columns = torch.tensor(r["fold"]) < folds
            errors = torch.tensor(r["column_errors"], dtype=torch.float64)[:, columns]
            lam = choose_on_curve(grid, errors, width=width)
            index = int(np.argmin(np.abs(np.log(grid.numpy() / lam))))
            chosen.append((index, coarse[index]))
            default.append(coarse[DEFAULT_INDEX])
            oracle.append(coarse.min())
        peak = records[0].get("peak", 1.0)

        def db(values: list[float], peak: float = peak) -> float:
            return float(10 * np.log10(peak**2 / np.mean(values)))

        rows.append(
            {
                "setting": setting,
                "snr": snr,
                "method": method,
                "slices": len(records),
                "default": db(default),
                "auto": db([m for _, m in chosen]),
                "oracle": db(oracle),
                "auto_index": [i for i, _ in chosen],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    p = argparse.ArgumentParser(
        prog="python -m sgilo.pipeline.research.kspace_cv_eval", description=__doc__
    )
    p.add_argument("--size", type=int, default=64, help="slice side (pixels)")
    p.add_argument("--slices", type=int, default=8, help="validation slices (1-16)")
    p.add_argument("--out", type=Path, default=Path("kspace_cv_eval.json"))
    p.add_argument("--from", dest="source", type=Path, nargs="+", help="collected curves")
    p.add_argument("--folds", type=int, default=CV_FOLDS)
    p.add_argument("--width", type=float, default=SE_WIDTH)
    args = p.parse_args(argv)
    if args.source:
        collected = [r for path in args.source for r in json.loads(path.read_text())]
        rows = score(collected, args.folds, args.width)
        for row in rows:
            print(json.dumps(row))
    else:
        rows = evaluate(args.size, args.slices)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
