"""Whole-run seconds per slice of what users run, on a GPU or the CPU (docs/SPEED.md §5, §6).

``python -m sgilo.pipeline.research.device_timing --images FILE.npy --out FILE.json [--device
cuda] [--sizes 128,256] [--coils 1,8] [--batches 1,16] [--methods csgm,ilo,sgilo,auto]
[--budget-s SECONDS]``

For every case — grid ``S`` in ``--sizes``, ``C`` in ``--coils`` (1: single-coil; more: SENSE
with ``C`` smooth synthetic coil maps, :func:`coil_maps`), ``B`` slices in ``--batches`` — and
every method in ``--methods`` (the generative ones and ``auto``,
:mod:`sgilo.pipeline.method_choice`) it reconstructs ``B`` slices of an 8× random-column-mask
acquisition (4 % centre, noiseless) with the method's *defaults* through
:func:`sgilo.pipeline.methods.solve` (exactly what ``sgilo reconstruct --device cuda`` runs: the
prior-fit check, the CSGM start, early stopping) and records a row with

- ``size``, ``coils``, ``batch``, ``method``;
- ``seconds``: wall time of the run, with ``torch.cuda.synchronize()`` before and after;
- ``seconds_per_slice``: ``seconds / B``; ``cpu_seconds``: the process's CPU time;
- ``peak_gib``: ``torch.cuda.max_memory_allocated`` during the run (GiB; CUDA only);
- ``psnr``: PSNR (dB) of the magnitude against the slices (a sanity check, not a benchmark).

The prior's 128² image is placed on other grids by
:class:`sgilo.pipeline.solvers.resample.GridPlacement` (as ``sgilo reconstruct`` does); the
slices are resized to the grid bilinearly. Before a case's rows, one untimed short run per
method at batch 1 (CUDA context, cuFFT plans, kernel selection). ``--budget-s``: no row starts
after that many seconds (later rows are recorded with ``"skipped": "budget"``), so a run on a
lent GPU ends in time. The record holds the date, the device's name, torch, Python and the code
revision (``$SGILO_REVISION``, else ``git rev-parse``).

The images are a ``.npy`` array ``(N, R, R)`` in [0, 1] (``mni_slices("train", R)`` saved with
``np.save``): a bare CUDA machine lacks the packages that read the MNI template. Only torch,
numpy and pydantic are needed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("csgm", "ilo", "sgilo", "auto")
ACCELERATION = 8.0


def coil_maps(coils: int, size: int) -> torch.Tensor:
    """``coils`` smooth sensitivities, complex64 ``(C, S, S)`` with ``Σ_c |S_c|² = 1``: Gaussian
    magnitudes (width ``0.5·S``) centred on a circle of radius ``0.6·S`` around the grid's centre,
    each with a linear phase of one cycle across the grid along its own direction."""
    u = torch.linspace(-0.5, 0.5, size, dtype=torch.float64) * size
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    maps = []
    for c in range(coils):
        a = 2 * math.pi * c / coils
        cy, cx = 0.6 * size * math.sin(a), 0.6 * size * math.cos(a)
        mag = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.5 * size) ** 2))
        phase = 2 * math.pi * (yy * math.sin(a) + xx * math.cos(a)) / size
        maps.append(mag * torch.exp(1j * phase))
    s = torch.stack(maps)
    return (s / s.abs().pow(2).sum(dim=0, keepdim=True).sqrt()).to(torch.complex64)


def slices(images: np.ndarray, batch: int, size: int | None = None) -> torch.Tensor:
    """``batch`` evenly spaced slices of ``images`` ``(N, R, R)`` (the middle 40 % of the stack),
    float32 ``(batch, S, S)``, bilinearly resized to ``size`` (default ``R``) and clipped to
    [0, 1]."""
    idx = np.linspace(len(images) * 0.3, len(images) * 0.7, batch).astype(int)
    x = torch.from_numpy(np.ascontiguousarray(images[idx], dtype=np.float32))
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False)
        x = x[:, 0].clamp(0, 1)
    return x


def acquisition(
    images: np.ndarray, batch: int, device: str, *, size: int | None = None, coils: int = 1
) -> tuple[torch.Tensor, Any]:
    """:func:`slices` of ``images``, 8× (4 % centre): complex data (``(batch, S, S)``
    single-coil, ``(batch, C, S, S)`` for ``coils > 1``) and its operator, both on ``device``."""
    from sgilo.operators.masks import column_mask
    from sgilo.operators.mri import MultiCoilMRI
    from sgilo.pipeline.research.scaling import acquisition_of

    x = slices(images, batch, size)
    if coils == 1:
        y, op = acquisition_of(x, acceleration=ACCELERATION, seed=0)
    else:
        s = x.shape[-1]
        mask = column_mask("random", s, 0.04, ACCELERATION, seed=0).astype(np.float32)
        op = MultiCoilMRI(coil_maps(coils, s), torch.from_numpy(mask))
        y = op.A(x.to(torch.complex64))
    return y.to(device), op.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def code_revision() -> str:
    """``$SGILO_REVISION``, else the git revision of the package's checkout, else
    ``"unknown"``."""
    if os.environ.get("SGILO_REVISION"):
        return os.environ["SGILO_REVISION"]
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def psnr_db(target: torch.Tensor, image: torch.Tensor) -> float:
    """PSNR (dB) of ``|image|`` against ``target`` ``(B, S, S)`` in [0, 1] (peak 1)."""
    err = (image.detach().abs().cpu().float() - target).pow(2).mean()
    return round(float(10 * torch.log10(1 / err.clamp_min(1e-20))), 3)


def time_method(
    y: torch.Tensor,
    op: Any,
    method: str,
    prior: Any,
    device: str,
    options: dict | None = None,
    target: torch.Tensor | None = None,
) -> dict:
    """One timed run of ``method`` (its defaults, updated by ``options``) on ``y``: seconds, per
    slice, CPU seconds, peak GPU memory, and the PSNR against ``target`` when given."""
    from sgilo.pipeline.methods import solve

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    result = solve(y, op, method, prior=prior, seed=0, solver_options=options)
    _sync(device)
    seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"method": method, "batch": int(y.shape[0]), "seconds": round(seconds, 3)}
    row["seconds_per_slice"] = round(seconds / y.shape[0], 3)
    row["cpu_seconds"] = round(time.process_time() - c0, 3)
    if device.startswith("cuda"):
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    if target is not None:
        row["psnr"] = psnr_db(target, result.image)
    return row


def warmup_options(method: str, options: dict | None, num_blocks: int) -> dict:
    """``options`` with a schedule of a few steps (the warm-up run of a case)."""
    short: dict[str, Any] = {"steps": 2, "restarts": 1}
    if method in ("ilo", "sgilo"):
        short = {"steps": (2,) * min(4, num_blocks), "init_steps": 2, "init_restarts": 1}
    return {**(options or {}), **short}


def run(
    images: np.ndarray,
    *,
    model: str | None = None,
    methods: tuple[str, ...] = METHODS,
    batches: tuple[int, ...] = (1, 16),
    sizes: tuple[int, ...] | None = None,
    coils: tuple[int, ...] = (1,),
    cases: list[tuple[int, int]] | None = None,
    device: str = "cuda",
    solver_options: dict[str, dict] | None = None,
    budget_s: float | None = None,
    on_row: Any = None,
) -> dict:
    """Time every (size, coils, batch, method) case (module docstring); returns the JSON
    record. ``sizes``: default the images' own; ``cases``: the (size, coils) pairs in the order
    to run them (default: every size with every ``coils``, in that order); ``solver_options``:
    per method, fields that replace its defaults (the figures of docs/SPEED.md use none);
    ``on_row(record)`` after every row (e.g. to write the record so far). A run that raises is
    recorded with its ``error`` and the others go on."""
    from sgilo.pipeline.methods import load_prior

    start = time.perf_counter()
    prior = load_prior(model, device=device)
    prior.stats()
    record: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
        "revision": code_revision(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "model": str(prior.path),
        "acquisition": "8x random columns, 4% centre, noiseless; coils > 1: synthetic smooth maps",
        "rows": [],
    }
    options = solver_options or {}
    num_blocks = int(prior.generator.num_blocks)
    if cases is None:
        cases = [(s, c) for s in sizes or (int(images.shape[-1]),) for c in coils]
    for size, c in cases:
        warm = budget_s is None or time.perf_counter() - start < budget_s
        y1, op1 = acquisition(images, 1, device, size=size, coils=c)
        for method in methods if warm else ():
            if method != "auto":
                opts = warmup_options(method, options.get(method), num_blocks)
                _guarded(lambda: time_method(y1, op1, method, prior, device, opts))  # noqa: B023
        for batch in batches:
            y, op = acquisition(images, batch, device, size=size, coils=c)
            target = slices(images, batch, size)
            for method in methods:
                row: dict[str, Any] = {"size": size, "coils": c, "method": method, "batch": batch}
                if budget_s is not None and time.perf_counter() - start > budget_s:
                    row["skipped"] = "budget"
                else:
                    opts = options.get(method)
                    row |= _guarded(
                        lambda: time_method(y, op, method, prior, device, opts, target)  # noqa: B023
                    )
                print(json.dumps(row), flush=True)
                record["rows"].append(row)
                if on_row is not None:
                    on_row(record)
    return record


def _guarded(timed: Any) -> dict:
    """``timed()``, or ``{"error": ...}`` when it raises (the other runs go on)."""
    try:
        return timed()
    except Exception as exc:  # noqa: BLE001 - a timing table records failures as rows
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sgilo.pipeline.research.device_timing", description=__doc__
    )
    p.add_argument("--images", type=Path, required=True, help=".npy (N, R, R) in [0, 1]")
    p.add_argument("--out", type=Path, required=True, help="JSON record")
    p.add_argument("--model", default=None, help="prior name or path (default: shipped)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--batches", default="1,16")
    p.add_argument("--sizes", default=None, help="grids, e.g. 128,256 (default: the images')")
    p.add_argument("--coils", default="1", help="e.g. 1,8")
    p.add_argument("--budget-s", type=float, default=None, help="start no row after this")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the CLI does: timings of what users run
    images = np.load(args.images)
    if images.ndim != 3:
        p.error(f"{args.images}: want (N, R, R), got shape {images.shape}")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write(record: dict) -> None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")

    record = run(
        images,
        model=args.model,
        methods=tuple(args.methods.split(",")),
        batches=_ints(args.batches),
        sizes=_ints(args.sizes) if args.sizes else None,
        coils=_ints(args.coils),
        device=args.device,
        budget_s=args.budget_s,
        on_row=write,
    )
    write(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
