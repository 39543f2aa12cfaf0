"""Does SGILO's per-pixel spread over chains rank pixels by their error? (issue 22, item 5)

``python -m sgilo.pipeline.research.uncertainty_eval --out rows.json [--slices 8] [--chains 4]
[--settings "single-coil 8x,8-coil 8x"]``

For each setting it simulates the MNI *validation* slices (:func:`sgilo.pipeline.research.bench.
validation_targets`, 30 dB, mask seed 0, ESPIRiT maps for multi-coil) and runs SGILO with ``K``
chains as ``sgilo reconstruct --samples K`` does (:func:`sgilo.pipeline.prior_fit.fit_on_split`'s
steps: the latent fit on 90 % of the outer columns, then the final data-consistency step on every
measurement, chain by chain). It scores per-pixel error indicators against the true error
``e = | |x̂| − x |`` (``x̂`` the output, the chains' mean) by Spearman's rank correlation ``ρ``:

- ``std``: the std of the chains' output magnitudes (what ``sgilo reconstruct`` writes);
- ``std_model``: the std of the chains' *model* images (before the final step);
- ``deviation``: ``| |x̂| − |x̄_model| |``, how far the final step moved the mean model image
  (where the measurements disagree with the prior's image);
- ``classical_gap``: the mean over TV and ℓ1-wavelet (defaults, fitted on every measurement) of
  ``| |x̂| − |x_c| |``: where reconstructions of the same data under other priors disagree;
- ``darkness`` (a reference, no uncertainty in it): ``max |x̂| − |x̂|`` per slice: how far an
  indicator gets by knowing only that errors gather where the image is dark (the object's rim,
  CSF);

each over the whole image and inside the object support ``x > SUPPORT_LEVEL · max x`` per slice
(where both ``e`` and the indicators are not trivially near zero), pooled over slices and as the
median of the per-slice values, and at a region's scale (``support_local``: the local RMS of the
indicator against the local RMS of the error, both Gaussian-weighted with σ = ``LOCAL_SIGMA``
pixels over the support only (the window renormalised, so no background enters near the rim),
at the support's pixels, pooled): which *regions* are wrong rather than which pixels. The
target of the issue is ``ρ ≥ 0.4`` inside the support. The ground truth only scores; nothing is
chosen on it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

#: the object support: pixels above this fraction of the slice's maximum of the target
SUPPORT_LEVEL = 0.05
#: σ (pixels) of the Gaussian window of the region-scale scope ``support_local``
LOCAL_SIGMA = 4.0
INDICATORS = ("std", "std_model", "deviation", "classical_gap", "darkness")
SCOPES = ("whole", "support", "support_median", "support_local")
#: the classical reconstructions ``classical_gap`` compares with
GAP_METHODS = ("tv", "l1-wavelet")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long samples (ties get mean ranks)."""
    from scipy.stats import spearmanr

    if a.size < 3:
        return float("nan")
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def support_of(target: np.ndarray, level: float = SUPPORT_LEVEL) -> np.ndarray:
    """Boolean ``(S, H, W)``: the pixels of each slice above ``level`` times its maximum."""
    peak = target.reshape(target.shape[0], -1).max(axis=1)
    return target > level * peak[:, None, None]


def indicators_of(
    model: torch.Tensor, output: torch.Tensor, classical: Sequence[np.ndarray] = ()
) -> dict[str, np.ndarray]:
    """The indicators of the module docstring from the chains' model images and outputs (complex
    ``(K, B, H, W)`` each) and classical reconstructions' magnitudes (``(B, H, W)`` each; without
    them no ``classical_gap``): float ``(B, H, W)`` arrays by name."""
    model, output = model.detach().cpu(), output.detach().cpu()
    out_mag, model_mag = output.abs(), model.abs()
    mean_out = output.mean(dim=0).abs()
    mean_model = model.mean(dim=0).abs()
    peak = mean_out.reshape(mean_out.shape[0], -1).max(dim=1).values[:, None, None]
    out = {
        "std": out_mag.std(dim=0, correction=0).numpy(),
        "std_model": model_mag.std(dim=0, correction=0).numpy(),
        "deviation": (mean_out - mean_model).abs().numpy(),
        "darkness": (peak - mean_out).numpy(),
    }
    if len(classical):
        gaps = [np.abs(mean_out.numpy() - np.asarray(c)) for c in classical]
        out["classical_gap"] = np.mean(gaps, axis=0)
    return out


def local_rms(
    values: np.ndarray, support: np.ndarray | None = None, sigma: float = LOCAL_SIGMA
) -> np.ndarray:
    """A value's Gaussian-weighted RMS around each pixel, slice by slice of ``(B, H, W)`` (σ in
    pixels): ``sqrt(G_σ * v²)``, or with a boolean ``support`` ``(B, H, W)`` over the support
    only, ``sqrt(G_σ * (m·v²) / G_σ * m)`` (0 where the window holds no support pixel)."""
    from scipy.ndimage import gaussian_filter

    square = np.square(values.astype(np.float64))
    if support is None:
        return np.sqrt(np.stack([gaussian_filter(v, sigma) for v in square]))
    m = support.astype(np.float64)
    num = np.stack([gaussian_filter(v, sigma) for v in square * m])
    den = np.stack([gaussian_filter(w, sigma) for w in m])
    return np.sqrt(np.divide(num, den, out=np.zeros_like(num), where=den > 1e-12))


def rank_agreement(
    indicators: dict[str, np.ndarray], error: np.ndarray, support: np.ndarray
) -> dict[str, dict[str, float]]:
    """Per indicator: ``ρ`` over every pixel (``whole``), over the support pooled (``support``),
    the median over slices of the per-slice ``ρ`` inside the support (``support_median``), and
    ``ρ`` of the local RMS values over the support (:func:`local_rms` with ``support``) at the
    support's pixels, pooled (``support_local``)."""
    out = {}
    local_error = local_rms(error, support)
    for name, value in indicators.items():
        per_slice = [
            spearman(value[b][support[b]], error[b][support[b]]) for b in range(len(error))
        ]
        out[name] = {
            "whole": spearman(value, error),
            "support": spearman(value[support], error[support]),
            "support_median": float(np.nanmedian(per_slice)),
            "support_local": spearman(local_rms(value, support)[support], local_error[support]),
        }
    return out


def measure(
    settings: Sequence[str],
    slices: int,
    chains: int,
    *,
    model: str | None = None,
    seed: int = 0,
    options: dict | None = None,
) -> list[dict]:
    """One row per setting label (``"single-coil 8x"``, …) of the module docstring; ``options``:
    SGILO config fields (e.g. ``{"tau": 0.1}``), recorded in the row."""
    from sgilo.pipeline.experiment import DEFAULT_SETTINGS, espirit_operator
    from sgilo.pipeline.methods import load_prior, solve
    from sgilo.pipeline.metrics import evaluate
    from sgilo.pipeline.model_images import finish_chains, generator_resolution
    from sgilo.pipeline.prior_fit import (
        HELDOUT_FRACTION,
        HELDOUT_SEED,
        _latent_fit,
        heldout_split,
    )
    from sgilo.pipeline.research.bench import validation_targets

    by_label = {s.label: s for s in DEFAULT_SETTINGS}
    prior = load_prior(model)
    target = validation_targets(slices, 128)
    rows = []
    for label in settings:
        acq = by_label[label].simulate(target, snr_db=30.0, seed=seed)
        y, op = espirit_operator(acq)
        start = time.perf_counter()
        fits = heldout_split(y, op, HELDOUT_FRACTION, HELDOUT_SEED)
        fit, config = _latent_fit(
            fits.part,
            "sgilo",
            prior=prior,
            samples=chains,
            seed=seed,
            callback=None,
            options=dict(options or {}),
        )
        model_images = fit.samples.to(y.device)
        outputs = finish_chains(fit, config, y, op, generator_resolution(prior))
        seconds = time.perf_counter() - start
        classical = [solve(y, op, m, seed=seed).magnitude for m in GAP_METHODS]
        magnitude = outputs.mean(dim=0).abs().numpy()
        error = np.abs(magnitude - acq.target)
        support = support_of(acq.target)
        indicators = indicators_of(model_images, outputs, classical)
        agreement = rank_agreement(indicators, error, support)
        rows.append(
            {
                "setting": label,
                "slices": slices,
                "chains": chains,
                "options": dict(options or {}),
                "psnr": evaluate(acq.target, magnitude)["psnr"],
                "std_over_error": float(indicators["std"][support].mean() / error[support].mean()),
                "seconds": seconds,
                "support_fraction": float(support.mean()),
                "spearman": agreement,
            }
        )
        text = ", ".join(
            f"{k} {v['support']:.2f} (local {v['support_local']:.2f})" for k, v in agreement.items()
        )
        print(f"{label} {options or ''}: inside the support {text} ({seconds:.0f} s)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """A table: setting, SGILO options, PSNR of the chains' mean, mean std over mean error inside
    the support, then per indicator ρ whole / support (pooled) / support (median of slices) /
    support at a region's scale; ``—`` for what a row did not measure (rows of older runs)."""

    def cell(row: dict, k: str, m: str) -> str:
        value = row["spearman"].get(k, {}).get(m)
        return "—" if value is None else f"{value:.2f}"

    head = "| setting | options | PSNR (dB) | std / error | "
    head += " | ".join(f"{k}: whole / support / median / local" for k in INDICATORS)
    lines = [head + " |", "|---|---|---:|---:|" + "---|" * len(INDICATORS)]
    for row in rows:
        cells = [" / ".join(cell(row, k, m) for m in SCOPES) for k in INDICATORS]
        options = ", ".join(f"{k}={v}" for k, v in row.get("options", {}).items()) or "defaults"
        psnr, ratio = row.get("psnr"), row.get("std_over_error")
        lead = f"| {row['setting']} | {options} | {'—' if psnr is None else f'{psnr:.2f}'} | "
        lead += f"{'—' if ratio is None else f'{ratio:.3f}'} | "
        lines.append(lead + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    parser = argparse.ArgumentParser(prog="python -m sgilo.pipeline.research.uncertainty_eval")
    parser.add_argument("--out", type=Path, required=True, help="JSON rows")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--settings", default="single-coil 8x,8-coil 8x")
    parser.add_argument("--model", default=None)
    parser.add_argument(
        "--option", action="append", default=[], metavar="FIELD=VALUE", help="SGILO config field"
    )
    args = parser.parse_args(argv)
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    rows = measure(
        args.settings.split(","), args.slices, args.chains, model=args.model, options=options
    )
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
