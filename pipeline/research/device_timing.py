"""Whole-run seconds per slice of the generative solvers on a GPU (docs/SPEED.md §4).

``python -m sgilo.pipeline.research.device_timing --images FILE.npy --out FILE.json [--device
cuda]``

For each batch size B in ``--batches`` and each method in ``--methods`` it reconstructs B slices
of a single-coil 8× random-column-mask acquisition (4 % centre, noiseless, the acquisition of
:func:`sgilo.pipeline.research.scaling.acquisition`) with the method's *defaults* through
:func:`sgilo.pipeline.methods.solve` (so exactly what ``sgilo reconstruct --device cuda`` runs, CSGM
start and early stopping included) and records

- ``seconds``: wall time of the run, with ``torch.cuda.synchronize()`` before and after;
- ``seconds_per_slice``: ``seconds / B``;
- ``peak_gib``: ``torch.cuda.max_memory_allocated`` during the run (GiB).

One untimed warm-up run per method (CUDA context, cuFFT plans, kernel selection) comes first.
The images are a ``.npy`` array ``(N, R, R)`` in [0, 1] (``mni_slices("train", R)`` saved with
``np.save``): the GPU machine lacks the packages that read the MNI template, and training slices
are what the CPU timings of :mod:`sgilo.pipeline.research.scaling` use. Only torch, numpy and
pydantic are needed, so the module runs on a bare CUDA image.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def acquisition(images: np.ndarray, batch: int, device: str) -> tuple[torch.Tensor, Any]:
    """``batch`` evenly spaced slices of ``images`` ``(N, R, R)``, single-coil 8× (4 % centre):
    complex data ``(batch, R, R)`` and its operator, both on ``device``."""
    from sgilo.pipeline.research.scaling import acquisition_of

    idx = np.linspace(len(images) * 0.3, len(images) * 0.7, batch).astype(int)
    x = torch.from_numpy(np.ascontiguousarray(images[idx], dtype=np.float32))
    y, op = acquisition_of(x, acceleration=8.0, seed=0)
    return y.to(device), op.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_method(
    y: torch.Tensor, op: Any, method: str, prior: Any, device: str, options: dict | None = None
) -> dict:
    """One timed run of ``method`` (its defaults, updated by ``options``) on ``y``: seconds, per
    slice, peak GPU memory."""
    from sgilo.pipeline.methods import solve

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    solve(y, op, method, prior=prior, seed=0, solver_options=options)
    _sync(device)
    seconds = time.perf_counter() - t0
    row = {"method": method, "batch": int(y.shape[0]), "seconds": round(seconds, 3)}
    row["seconds_per_slice"] = round(seconds / y.shape[0], 3)
    if device.startswith("cuda"):
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return row


def run(
    images: np.ndarray,
    *,
    model: str | None = None,
    methods: tuple[str, ...] = ("csgm", "ilo", "sgilo"),
    batches: tuple[int, ...] = (1, 16),
    device: str = "cuda",
    solver_options: dict[str, dict] | None = None,
) -> dict:
    """Time every (batch, method) pair after one warm-up per method; returns the JSON record.
    ``solver_options``: per method, fields that replace its defaults (the figures of docs/SPEED.md
    use none)."""
    from sgilo.pipeline.methods import load_prior

    prior = load_prior(model, device=device)
    prior.stats()
    record: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "model": str(prior.path),
        "acquisition": "single-coil 8x random columns, 4% centre, noiseless, training slices",
        "rows": [],
    }
    options = solver_options or {}
    y1, op1 = acquisition(images, 1, device)
    for method in methods:
        time_method(y1, op1, method, prior, device, options.get(method))  # warm-up
    for batch in batches:
        y, op = acquisition(images, batch, device)
        for method in methods:
            row = time_method(y, op, method, prior, device, options.get(method))
            print(json.dumps(row), flush=True)
            record["rows"].append(row)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sgilo.pipeline.research.device_timing", description=__doc__
    )
    p.add_argument("--images", type=Path, required=True, help=".npy (N, R, R) in [0, 1]")
    p.add_argument("--out", type=Path, required=True, help="JSON record")
    p.add_argument("--model", default=None, help="prior name or path (default: shipped)")
    p.add_argument("--methods", default="csgm,ilo,sgilo")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    images = np.load(args.images)
    if images.ndim != 3:
        p.error(f"{args.images}: want (N, R, R), got shape {images.shape}")
    record = run(
        images,
        model=args.model,
        methods=tuple(args.methods.split(",")),
        batches=tuple(int(b) for b in args.batches.split(",")),
        device=args.device,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
