"""Choosing the rule of ``lam="auto"`` on MNI *training* slices: the held-out error curves of
every held-out column (3 disjoint folds) and the target error of full fits on a grid twice as
fine, so that rules (folds pooled, the one-standard-error width, the noise-based λ) are compared
offline against the per-slice oracle of the fine grid. Training slices only: the rule chosen here
is then scored on validation slices by :mod:`sgilo.pipeline.research.kspace_cv_eval`.

    python -m sgilo.pipeline.research.kspace_cv_rules --size 64 --slices 6 --out rules.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sgilo.pipeline.data.mni import mni_slices
from sgilo.pipeline.experiment import DEFAULT_SETTINGS, espirit_operator
from sgilo.pipeline.solvers import classical
from sgilo.pipeline.solvers.heldout_columns import candidate_columns, draw_folds
from sgilo.pipeline.solvers.kspace_cv import (
    CV_FRACTION,
    CV_SEED,
    GRID_FACTORS,
    estimate_noise_sigma,
    heldout_curves,
)

#: the full fits' grid: half the steps of GRID_FACTORS, 1/30 … 30 times the default
FINE_FACTORS = tuple(30.0 ** ((g - 6) / 6) for g in range(13))
FOLDS = 3
COILS = {"single": (None,), "multi": (8,), "both": (None, 8)}


def _fit(method: str, iterations: int):
    if method == "tv":
        return lambda v, sub, lam_abs: classical._tv_images(v, sub, lam_abs, iterations)
    return lambda v, sub, lam_abs: classical._l1_wavelet_images(
        v, sub, lam_abs.tolist(), iterations, True
    )


def collect(
    size: int,
    count: int,
    snrs=(20, 30, 40),
    iterations: int = 100,
    fine: bool = True,
    split: str = "train",
    coils: tuple[int | None, ...] = (None, 8),
    settings: tuple[str, ...] | None = None,
    heldout: bool = True,
) -> list[dict]:
    """One record per (setting, SNR, method, slice): held-out column errors ``(G, J)`` with the
    fold of each column, the target MSE of the fine grid, σ̂ and the data scale. ``split`` is
    ``train``/``validation`` (``count`` evenly spaced MNI axial slices) or ``tuning`` (the 12
    images of :func:`sgilo.pipeline.research.auto_margin.tuning_images`, ``count`` ignored);
    ``settings``: the labels to run (``None``: every one with the given coils); ``heldout=False``:
    the full fits only (no held-out curves: ``column_errors`` and ``fold`` empty), for choosing the
    default λ."""
    if split == "tuning":
        from sgilo.pipeline.research.auto_margin import tuning_images

        slices, _ = tuning_images(size)
    else:
        slices = mni_slices(split, size=size)
        pick = np.linspace(0, len(slices) - 1, count).round().astype(int)
        slices = slices[pick]
    rows = []
    chosen = [s for s in DEFAULT_SETTINGS if s.coils in coils]
    for setting in [s for s in chosen if settings is None or s.label in settings]:
        for snr in snrs:
            acq = setting.simulate(slices, snr_db=snr, seed=3)
            y, op = espirit_operator(acq)
            scale = classical.data_scale(y, op).to(torch.float64)
            sigma = estimate_noise_sigma(y, op)
            folds = draw_folds(candidate_columns(op, y), CV_FRACTION, FOLDS, CV_SEED).cpu()
            for method in ("l1-wavelet", "tv"):
                default = classical.default_lambda(method, op, len(slices))  # (S,)
                fit = _fit(method, iterations)
                factors = torch.tensor(GRID_FACTORS, dtype=torch.float64)
                per_slice = [torch.empty(len(factors), 0)] * len(slices)
                if heldout:
                    _, per_slice = heldout_curves(
                        y,
                        op,
                        fit,
                        factors,
                        scale * default,
                        fraction=CV_FRACTION,
                        folds=FOLDS,
                        seed=CV_SEED,
                    )
                mse = []
                for f in FINE_FACTORS if fine else GRID_FACTORS:
                    image = fit(y, op, (default * f * scale).cpu()).abs().numpy()
                    mse.append(((image - acq.target) ** 2).mean(axis=(1, 2)))
                mse = np.array(mse)  # (13, S)
                for b in range(len(slices)):
                    where = folds.any(dim=0)[b].nonzero().flatten()
                    fold_of = folds[:, b, where].int().argmax(dim=0).tolist() if heldout else []
                    rows.append(
                        {
                            "setting": setting.label,
                            "snr": snr,
                            "method": method,
                            "slice": int(b),
                            "default": float(default[b]),
                            "column_errors": per_slice[b].tolist(),
                            "fold": fold_of,
                            "mse": mse[:, b].tolist(),
                            "sigma_rel": float(sigma[b] / scale[b]),
                            "sigma_true_rel": float(acq.sigma / scale[b]),
                            "peak": float(acq.target.max()),
                        }
                    )
                print(setting.label, snr, method, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    p = argparse.ArgumentParser(prog="python -m sgilo.pipeline.research.kspace_cv_rules")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--slices", type=int, default=6)
    p.add_argument("--snrs", type=float, nargs="+", default=[20, 30, 40])
    p.add_argument("--split", default="train", choices=["train", "validation", "tuning"])
    p.add_argument("--settings", nargs="+", help='labels, e.g. "8-coil 8x" (default: all)')
    p.add_argument("--coils", choices=["single", "multi", "both"], default="both")
    p.add_argument("--coarse", action="store_true", help="full fits on the 7-point grid only")
    p.add_argument("--no-heldout", action="store_true", help="full fits only (the default λ)")
    p.add_argument("--out", type=Path, default=Path("kspace_cv_rules.json"))
    args = p.parse_args(argv)
    rows = collect(
        args.size,
        args.slices,
        tuple(args.snrs),
        fine=not args.coarse,
        split=args.split,
        coils=COILS[args.coils],
        settings=None if args.settings is None else tuple(args.settings),
        heldout=not args.no_heldout,
    )
    args.out.write_text(json.dumps(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
