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

``--support`` measures the support of the refined maps instead (:func:`measure_support`): on these
heads and on 12 heads that fill the field of view along both axes (:data:`SMALL_FOV_HEADS`, seeds
42 and 43, 100–130 mm), at 20 and 30 dB, the flagged slices' CG-SENSE, ℓ1-wavelet and TV PSNR for
each way to refine (image updates on ESPIRiT's support or the whole field of view; the final cut
to ESPIRiT's support or extended by the object at a level of :data:`SUPPORT_LEVELS`):

    python -m sgilo.pipeline.research.map_refine_tuning --support --out support.json  # ~25 min
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
#: heads in a field of view smaller than the head (100–130 mm): cut along both axes
SMALL_FOV_HEADS = ((42, 6), (43, 6))
SMALL_FOV_MM = (100.0, 130.0)
#: the support variants of :func:`measure_support`: ``None`` ESPIRiT's support, else the level
SUPPORT_LEVELS = (None, 0.1, 0.2, 0.3)


def tuning_images(
    size: int = 128,
    heads: tuple[tuple[int, int], ...] = HEADS,
    fov_mm: tuple[float, float] = (150.0, 170.0),
) -> np.ndarray:
    """The module docstring's 12 heads (``heads``: (seed, count) pairs, in a field of view of
    ``fov_mm``): float32 ``(count, size, size)``."""
    from sgilo.pipeline.data.synth_brain import SynthBrainConfig, synth_brain_batch
    from sgilo.pipeline.research.auto_margin import UNSEEN_AXIAL

    config = SynthBrainConfig(
        **{
            **UNSEEN_AXIAL,
            "head_prob": 1.0,
            "fov_mm": fov_mm,
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
                acq.kspace[flagged],
                acq.mask,
                espirit[flagged],
                basis=size_k,
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


def measure_support(
    size: int = 128, snrs: tuple[float, ...] = (20.0, 30.0), seed: int = 5
) -> list[dict]:
    """The ``--support`` rows of the module docstring: per (image set, SNR, setting, image
    updates on the whole field of view or not, support level) the PSNR of every flagged slice
    per method (defaults)."""
    import torch

    from sgilo.operators.mri import MultiCoilMRI
    from sgilo.pipeline.coil_map_check import EDGE_LEVEL, edge_fraction
    from sgilo.pipeline.coil_map_refine import basis_size, refine_maps
    from sgilo.pipeline.espirit import estimate_maps
    from sgilo.pipeline.experiment import DEFAULT_SETTINGS
    from sgilo.pipeline.methods import solve
    from sgilo.pipeline.metrics import psnr

    sets = {
        "heads": tuning_images(size),
        "small-fov heads": tuning_images(size, SMALL_FOV_HEADS, SMALL_FOV_MM),
    }
    rows = []
    for name, images in sets.items():
        for snr in snrs:
            for setting in (s for s in DEFAULT_SETTINGS if s.coils):
                acq = setting.simulate(images, snr_db=snr, seed=seed)
                espirit = estimate_maps(acq.kspace, acq.mask)
                flagged = np.flatnonzero(np.array(edge_fraction(espirit)) > EDGE_LEVEL)
                y = torch.from_numpy(acq.kspace[flagged])
                mask = torch.from_numpy(acq.mask.astype(np.float32))
                size_k = basis_size(acq.mask, acq.kspace.shape[-2:])
                for whole in (False, True):
                    for level in SUPPORT_LEVELS:
                        maps, _ = refine_maps(
                            acq.kspace[flagged],
                            acq.mask,
                            espirit[flagged],
                            basis=size_k,
                            whole_field=whole,
                            support_level=level,
                        )
                        op = MultiCoilMRI(torch.from_numpy(maps), mask)
                        scores = {}
                        for method in METHODS:
                            image = solve(y, op, method).image.abs().float().numpy()
                            scores[method] = [
                                psnr(acq.target[k], image[j]) for j, k in enumerate(flagged)
                            ]
                        rows.append(
                            {
                                "images": name,
                                "snr_db": snr,
                                "setting": setting.label,
                                "whole_field": whole,
                                "support_level": level,
                                "slices": [int(k) for k in flagged],
                                "psnr": scores,
                            }
                        )
    return rows


def support_markdown(rows: list[dict]) -> str:
    """Mean PSNR over the flagged slices per method: a line per (images, setting, SNR, image
    updates, support)."""
    lines = [
        "| images | setting | SNR | image updates | support | " + " | ".join(METHODS) + " |",
        "|---|---|---:|---|---|" + "---:|" * len(METHODS),
    ]

    def order(r: dict) -> tuple:
        level = -1.0 if r["support_level"] is None else r["support_level"]
        return (r["images"], r["setting"], r["snr_db"], r["whole_field"], level)

    for r in sorted(rows, key=order):
        updates = "whole field" if r["whole_field"] else "ESPIRiT's support"
        level = r["support_level"]
        support = "ESPIRiT's" if level is None else f"ESPIRiT's + object at {level:g}"
        scores = " | ".join(f"{np.mean(r['psnr'][m]):.2f}" for m in METHODS)
        lines.append(
            f"| {r['images']} | {r['setting']} | {r['snr_db']:g} dB | {updates} | {support} | "
            f"{scores} |"
        )
    return "\n".join(lines)


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
    parser.add_argument("--support", action="store_true", help="measure the maps' support")
    args = parser.parse_args(argv)
    if args.support:
        rows = measure_support(args.size)
        args.out.write_text(json.dumps(rows, indent=1))
        print(support_markdown(rows))
        return 0
    rows = measure(args.size, args.basis)
    args.out.write_text(json.dumps(rows, indent=1))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
