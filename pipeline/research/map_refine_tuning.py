"""The tuning measurement behind :mod:`sgilo.pipeline.coil_map_refine`: SENSE reconstructions
with ESPIRiT's, the refined and the true coil maps on heads that fill the phase-encode field of
view.

Tuning images (none is scored by a benchmark): 12 synthetic heads with scalp, skull and CSF in a
150–170 mm field of view, so that most reach the phase-encode edges
(:func:`sgilo.pipeline.data.synth_brain.synth_brain_batch`, seeds 40 and 41, 6 each, axial,
coronal and sagittal; :func:`tuning_images`). For 8 birdcage coils at 4× and 8× (fastMRI random
masks, seed 5) and 20, 30 and 40 dB SNR, the slices that
:func:`sgilo.pipeline.coil_map_check.edge_fraction` flags are reconstructed by CG-SENSE,
ℓ1-wavelet and TV (defaults) with the three kinds of maps; a row per (SNR, setting, maps,
method) holds the PSNR of every flagged slice.

    python -m sgilo.pipeline.research.map_refine_tuning --out rows.json          # ~4 min
    python -m sgilo.pipeline.research.map_refine_tuning --basis 6 --out b6.json  # one basis size
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SNRS = (20.0, 30.0, 40.0)
METHODS = ("cg-sense", "l1-wavelet", "tv")
MAPS = ("espirit", "refined", "true")
#: the synthetic heads: (seed, count)
HEADS = ((40, 6), (41, 6))


def tuning_images(size: int = 128, heads: tuple[tuple[int, int], ...] = HEADS) -> np.ndarray:
    """The module docstring's 12 heads (``heads``: (seed, count) pairs): float32
    ``(count, size, size)``."""
    from sgilo.pipeline.data.synth_brain import SynthBrainConfig, synth_brain_batch
    from sgilo.pipeline.research.auto_margin import UNSEEN_AXIAL

    config = SynthBrainConfig(
        **{
            **UNSEEN_AXIAL,
            "head_prob": 1.0,
            "fov_mm": (150.0, 170.0),
            "family_probs": (0.6, 0.2, 0.2),
        }
    )
    batches = [synth_brain_batch(n, seed, size, "train", config).numpy() for seed, n in heads]
    return np.concatenate(batches).astype(np.float32)


def measure(
    size: int = 128,
    basis: int | None = None,
    seed: int = 5,
    snrs: tuple[float, ...] = SNRS,
    heads: tuple[tuple[int, int], ...] = HEADS,
) -> list[dict]:
    """The rows of the module docstring; ``basis`` fixes the DCT size (default: the product's,
    :func:`sgilo.pipeline.coil_map_refine.basis_size`)."""
    import torch

    from sgilo.operators.mri import MultiCoilMRI
    from sgilo.pipeline.coil_map_check import EDGE_LEVEL, edge_fraction
    from sgilo.pipeline.coil_map_refine import basis_size, refine_maps
    from sgilo.pipeline.espirit import estimate_maps
    from sgilo.pipeline.experiment import DEFAULT_SETTINGS
    from sgilo.pipeline.methods import solve
    from sgilo.pipeline.metrics import psnr

    images = tuning_images(size, heads)
    rows = []
    for snr in snrs:
        for setting in (s for s in DEFAULT_SETTINGS if s.coils):
            acq = setting.simulate(images, snr_db=snr, seed=seed)
            espirit = estimate_maps(acq.kspace, acq.mask)
            flagged = np.flatnonzero(np.array(edge_fraction(espirit)) > EDGE_LEVEL)
            if not len(flagged):
                continue
            size_k = basis or basis_size(acq.mask, acq.kspace.shape[-2:])
            start = time.perf_counter()
            refined, info = refine_maps(
                acq.kspace[flagged], acq.mask, espirit[flagged], basis=size_k
            )
            seconds = (time.perf_counter() - start) / len(flagged)
            truth = np.broadcast_to(acq.maps, espirit.shape)[flagged]
            y = torch.from_numpy(acq.kspace[flagged])
            mask = torch.from_numpy(acq.mask.astype(np.float32))
            for label, maps in zip(MAPS, (espirit[flagged], refined, truth), strict=True):
                op = MultiCoilMRI(torch.from_numpy(np.ascontiguousarray(maps)), mask)
                for method in METHODS:
                    image = solve(y, op, method).image.abs().float().numpy()
                    rows.append(
                        {
                            "snr_db": snr,
                            "setting": setting.label,
                            "maps": label,
                            "method": method,
                            "basis": size_k,
                            "slices": [int(k) for k in flagged],
                            "psnr": [psnr(acq.target[k], image[j]) for j, k in enumerate(flagged)],
                            "rounds": [r.rounds for r in info],
                            "refine_s_per_slice": seconds,
                        }
                    )
    return rows


def markdown(rows: list[dict]) -> str:
    """Mean PSNR over the flagged slices: a row per (setting, SNR), a column per maps and
    method."""
    header = "| setting | SNR | slices | " + " | ".join(
        f"{m} {maps}" for m in METHODS for maps in MAPS
    )
    lines = [header + " |", "|---|---:|---:|" + "---:|" * (len(METHODS) * len(MAPS))]
    keys = sorted({(r["setting"], r["snr_db"]) for r in rows})
    for setting, snr in keys:
        cells = {
            (r["method"], r["maps"]): float(np.mean(r["psnr"]))
            for r in rows
            if r["setting"] == setting and r["snr_db"] == snr
        }
        count = next(
            len(r["slices"]) for r in rows if (r["setting"], r["snr_db"]) == (setting, snr)
        )
        values = " | ".join(f"{cells[(m, maps)]:.2f}" for m in METHODS for maps in MAPS)
        lines.append(f"| {setting} | {snr:g} dB | {count} | {values} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON rows")
    parser.add_argument("--basis", type=int, default=None, help="DCT functions per axis")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)
    rows = measure(args.size, args.basis)
    args.out.write_text(json.dumps(rows, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
