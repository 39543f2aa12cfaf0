"""The classical λ against the noise level: where the tuned default stops being the best.

The classical defaults (:data:`sgilo.pipeline.solvers.classical.DEFAULT_LAMBDA`) were tuned at
30 dB SNR. This fits ℓ1-wavelet and TV on tuning images at other noise levels with the default
λ times each factor of :data:`FACTORS` and records, per slice, the PSNR of every factor and the
data's estimated noise level ``r = σ̂ / s``
(:func:`sgilo.pipeline.solvers.kspace_cv.estimate_noise_sigma` over
:func:`sgilo.pipeline.solvers.classical.data_scale`): the data for the rule that raises
multi-coil ℓ1-wavelet's default on noisy data
(:data:`sgilo.pipeline.solvers.lambda_rule.NOISE_RAISE`; :func:`rule_gain` scores a rule on the
rows, interpolating the PSNR in log λ between the factors). The images are the tuning images of
:mod:`sgilo.pipeline.research.auto_margin` (every other image of the base set and of the heads
set: none is scored by a benchmark), its four default settings, masks seed 3, ESPIRiT maps.

    python -m sgilo.pipeline.research.noise_lambda_eval --snr 12 20 30 --out rows.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

#: the multiples of the default λ tried
FACTORS = (1 / 3, 1.0, 3.0, 10.0, 30.0)
METHODS = ("l1-wavelet", "tv")


def images() -> np.ndarray:
    """Every other image of the base and the heads tuning sets, ``(8, 128, 128)``."""
    from sgilo.pipeline.research.auto_margin import head_tuning_images, tuning_images

    base, _ = tuning_images(128)
    heads, _ = head_tuning_images(128)
    return np.concatenate([base[::2], heads[::2]])


def measure(snrs: list[float], seed: int = 3, log=print) -> list[dict]:
    """One row per noise level and setting: ``{"snr", "setting", "sigma_rel": (B,), method:
    (len(FACTORS), B) PSNR}``."""
    import torch

    from sgilo.pipeline.metrics import evaluate
    from sgilo.pipeline.research.auto_margin import tuning_problems
    from sgilo.pipeline.solvers.classical import (
        data_scale,
        default_lambda,
        l1_wavelet,
        total_variation,
    )
    from sgilo.pipeline.solvers.kspace_cv import estimate_noise_sigma

    solvers = {"l1-wavelet": l1_wavelet, "tv": total_variation}
    rows = []
    for snr in snrs:
        for setting, acq, y, op in tuning_problems(images(), None, snr, seed):
            scale = data_scale(y, op).cpu().to(torch.float64)
            row = {
                "snr": snr,
                "setting": setting.label,
                "sigma_rel": (estimate_noise_sigma(y, op) / scale).tolist(),
            }
            for method in METHODS:
                base = default_lambda(method, op, y.shape[0])
                psnr = []
                for factor in FACTORS:
                    image = solvers[method](y, op, lam=base * factor).image.abs().cpu().numpy()
                    psnr.append(
                        [
                            evaluate(acq.target[k : k + 1], image[k : k + 1])["psnr"]
                            for k in range(y.shape[0])
                        ]
                    )
                row[method] = psnr
            rows.append(row)
            means = {m: np.round(np.mean(row[m], axis=1), 2).tolist() for m in METHODS}
            log(f"{snr:4.0f} dB {setting.label:15s} r {np.median(row['sigma_rel']):.4f} {means}")
    return rows


def rule_gain(rows: list[dict], method: str, kind: str, r0: float, power: float) -> dict:
    """PSNR gain over the default of ``λ = λ_default · max(1, r / r_0)^p`` on the rows of one
    kind of data ("single-coil" or "8-coil"), per (SNR, setting) and overall (mean, worst
    slice); the PSNR at a factor between two of :data:`FACTORS` is interpolated in log λ, and
    factors beyond 30 are held at 30."""
    grid = np.log(FACTORS)
    one = FACTORS.index(1.0)
    gains: dict[str, list[float]] = {}
    for row in rows:
        if not row["setting"].startswith(kind):
            continue
        psnr = np.asarray(row[method])
        for b, r in enumerate(row["sigma_rel"]):
            factor = min(max(1.0, r / r0) ** power, FACTORS[-1])
            gain = float(np.interp(math.log(factor), grid, psnr[:, b]) - psnr[one, b])
            gains.setdefault(f"{row['snr']:.0f} dB {row['setting']}", []).append(gain)
    every = [g for v in gains.values() for g in v]
    return {
        "per_case": {k: float(np.mean(v)) for k, v in gains.items()},
        "mean": float(np.mean(every)),
        "worst": float(np.min(every)),
    }


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory
    from sgilo.pipeline.provenance import write_json_atomic

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snr", type=float, nargs="+", default=[12.0, 20.0, 30.0])
    parser.add_argument("--out", type=Path, required=True, help="rows as JSON")
    args = parser.parse_args(argv)
    rows = measure(args.snr)
    write_json_atomic(args.out, rows)
    from sgilo.pipeline.solvers.lambda_rule import NOISE_RAISE

    for (method, kind), (r0, power) in NOISE_RAISE.items():
        short = "8-coil" if kind == "multi-coil" else "single-coil"
        print(method, kind, f"r0 {r0} p {power}", rule_gain(rows, method, short, r0, power))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
