"""How well ``lam="auto"`` (λ from held-out k-space, :mod:`sgilo.pipeline.solvers.kspace_cv`)
chooses ℓ1-wavelet's and TV's λ: PSNR at the default λ, at ``auto`` and at the oracle λ of the same
grid (chosen per slice on the target: an upper bound no reconstruction can use), on MNI
validation slices, single-coil and 8-coil (ESPIRiT maps), 4× and 8×, 20/30/40 dB SNR.

    python -m sgilo.pipeline.research.kspace_cv_eval --size 64 --slices 8 --out cv.json

Prints one JSON row per (setting, SNR, method) as it goes and writes them all to ``--out``; the
table in docs/CLASSICAL_TUNING.md ("λ from held-out k-space") was made with it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sgilo.pipeline.data.mni import mni_slices
from sgilo.pipeline.experiment import DEFAULT_SETTINGS, Setting, espirit_operator
from sgilo.pipeline.metrics import psnr
from sgilo.pipeline.solvers.classical import CLASSICAL
from sgilo.pipeline.solvers.kspace_cv import GRID_FACTORS

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
                grid = auto.diagnostics.lambda_grid
                fits, seconds_fixed = [], 0.0
                for g, lam in enumerate(grid):
                    start = time.perf_counter()
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
                        "auto_index": [int(np.argmin(e)) for e in auto.diagnostics.heldout_errors],
                        "oracle_index": oracle_index.tolist(),
                        "seconds_auto": seconds_auto,
                        "seconds_fixed": seconds_fixed,
                        "sigma": acq.sigma,
                        "sigma_estimate": float(np.mean(auto.diagnostics.noise_sigma)),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sgilo.pipeline.research.kspace_cv_eval", description=__doc__
    )
    p.add_argument("--size", type=int, default=64, help="slice side (pixels)")
    p.add_argument("--slices", type=int, default=8, help="validation slices (1-16)")
    p.add_argument("--out", type=Path, default=Path("kspace_cv_eval.json"))
    args = p.parse_args(argv)
    rows = evaluate(args.size, args.slices)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
