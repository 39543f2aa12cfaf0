"""The prepared GPU check of the reconstruction speed (issue 23): CPU/GPU agreement, then timing.

``python -m sgilo.pipeline.research.gpu_recon_probe --images .gpu/mni_train_128.npy
--out "$OUT" [--budget-s 480] [--device cuda]``

1. **Agreement** (:func:`agreement`): the same two slices (128² single-coil 8×,
   :func:`sgilo.pipeline.research.device_timing.acquisition`) and seed, each generative method at
   its defaults through :func:`sgilo.pipeline.methods.solve`, once on the CPU and twice on
   ``--device``: with ``SGILO_RNG_DEVICE=cpu`` (both draw the same random numbers, so what
   differs is float arithmetic and the early-stop steps it shifts) and with the device's own
   generator (what ``sgilo reconstruct --device cuda`` does: other random numbers, so a
   statistical difference). Per run: PSNR (dB, magnitude against the slices), seconds, the steps
   each round/restart ran; per method the PSNR differences to the CPU and the largest pixel
   difference relative to the image's maximum. The issue asks for PSNR within 0.05 dB at equal
   settings.
2. **Host reads** (:func:`host_sync_effect`): ILO and SGILO on one 128² single-coil slice with
   ``host_sync_every=1`` (a host read every step, the code before 2026-12-05 did that and more)
   against the default (``"auto"``: every 16 steps on a GPU), seconds and PSNR.
3. **Compiled step** (only with ``--compile default,reduce-overhead``, :func:`compile_effect`):
   SGILO on one slice with the generator compiled (:mod:`sgilo.pipeline.solvers.compiled`), the
   first run (compiling) and a second one, against eager; compiling can take minutes.
4. **Timing** (:func:`sgilo.pipeline.research.device_timing.run`): 128² and 256², 1 and 8 coils,
   batches 1 and 16, CSGM, ILO, SGILO and ``auto``, in what is left of ``--budget-s`` (rows not
   started in time are recorded as skipped), the cases of the issue's targets first (``--cases``:
   128² single-coil, then 256² 8-coil, 128² 8-coil, 256² single-coil).

Everything goes to ``OUT/gpu_recon_probe.json``, rewritten after every run, so a run cut short
still leaves what it measured. ``--options`` (JSON, per method: fields replacing its defaults) and
the grid flags exist for the CPU end-to-end test, which runs this with a tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgilo.pipeline.research.device_timing import (
    METHODS,
    acquisition,
    code_revision,
    psnr_db,
    slices,
)
from sgilo.pipeline.research.device_timing import run as timing_run
from sgilo.pipeline.solvers.random_source import RNG_DEVICE_ENV

GENERATIVE = ("csgm", "ilo", "sgilo")


def _once(
    images: np.ndarray,
    method: str,
    prior: Any,
    device: str,
    options: dict | None,
    cpu_rng: bool,
    batch: int = 2,
) -> tuple[dict, torch.Tensor]:
    """One run of ``method`` on ``batch`` slices (128² single-coil 8×) on ``device``: its row
    and magnitude."""
    from sgilo.pipeline.methods import solve

    y, op = acquisition(images, batch, device)
    target = slices(images, batch)
    before = os.environ.get(RNG_DEVICE_ENV)
    if cpu_rng:
        os.environ[RNG_DEVICE_ENV] = "cpu"
    else:
        os.environ.pop(RNG_DEVICE_ENV, None)
    try:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = solve(y, op, method, prior=prior, seed=0, solver_options=options)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    finally:
        if before is None:
            os.environ.pop(RNG_DEVICE_ENV, None)
        else:
            os.environ[RNG_DEVICE_ENV] = before
    magnitude = result.image.detach().abs().cpu().float()
    row = {
        "device": device,
        "rng": "cpu" if cpu_rng else "device",
        "psnr": psnr_db(target, result.image),
        "seconds": round(seconds, 3),
        "steps_run": getattr(result.diagnostics, "steps_run", None),
    }
    return row, magnitude


def agreement(
    images: np.ndarray,
    *,
    model: str | None,
    device: str,
    methods: tuple[str, ...] = GENERATIVE,
    options: dict[str, dict] | None = None,
    on_row: Any = None,
) -> list[dict]:
    """Per method, the CPU run and the two ``device`` runs (module docstring) with their
    differences: ``psnr_diff_same_rng``, ``psnr_diff_device_rng`` (device − CPU, dB) and
    ``max_pixel_diff_same_rng`` (largest ``| |x_dev| − |x_cpu| |`` over the max of ``|x_cpu|``);
    ``on_row(entries)`` after every method."""
    from sgilo.pipeline.methods import load_prior

    priors = {"cpu": load_prior(model, device="cpu"), device: load_prior(model, device=device)}
    for prior in priors.values():
        prior.stats()
    out: list[dict] = []
    for method in methods:
        opts = (options or {}).get(method)
        cpu, x_cpu = _once(images, method, priors["cpu"], "cpu", opts, cpu_rng=True)
        same, x_same = _once(images, method, priors[device], device, opts, cpu_rng=True)
        own, _ = _once(images, method, priors[device], device, opts, cpu_rng=False)
        entry = {
            "method": method,
            "runs": [cpu, same, own],
            "psnr_diff_same_rng": round(same["psnr"] - cpu["psnr"], 4),
            "psnr_diff_device_rng": round(own["psnr"] - cpu["psnr"], 4),
            "max_pixel_diff_same_rng": float((x_same - x_cpu).abs().max() / x_cpu.max()),
        }
        print(json.dumps(entry), flush=True)
        out.append(entry)
        if on_row is not None:
            on_row(out)
    return out


def host_sync_effect(
    images: np.ndarray,
    *,
    model: str | None,
    device: str,
    methods: tuple[str, ...] = ("ilo", "sgilo"),
    options: dict[str, dict] | None = None,
) -> list[dict]:
    """Per method, one slice (after a warm-up run) with ``host_sync_every`` 1 and ``"auto"``:
    seconds, PSNR, steps run."""
    from sgilo.pipeline.methods import load_prior

    prior = load_prior(model, device=device)
    prior.stats()
    out = []
    for method in methods:
        base = (options or {}).get(method) or {}
        _once(images, method, prior, device, base, cpu_rng=False, batch=1)  # warm-up
        for every in (1, "auto"):
            opts = {**base, "host_sync_every": every}
            row, _ = _once(images, method, prior, device, opts, cpu_rng=False, batch=1)
            row |= {"method": method, "host_sync_every": every}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def compile_effect(
    images: np.ndarray, *, model: str | None, device: str, modes: tuple[str, ...]
) -> list[dict]:
    """SGILO on one slice per ``compile`` mode: seconds of a first and a second run, PSNR."""
    from sgilo.pipeline.methods import load_prior

    prior = load_prior(model, device=device)
    prior.stats()
    out = []
    for mode in modes:
        for run in ("first", "second"):
            opts = {"compile": mode}
            try:
                row, _ = _once(images, "sgilo", prior, device, opts, cpu_rng=False, batch=1)
            except Exception as exc:  # noqa: BLE001 - recorded, the probe goes on
                row = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            row |= {"method": "sgilo", "compile": mode, "run": run}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _case(text: str) -> tuple[int, int]:
    """``"256x8"`` → ``(256, 8)``: grid size and coils."""
    size, coils = text.split("x")
    return int(size), int(coils)


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    p = argparse.ArgumentParser(
        prog="python -m sgilo.pipeline.research.gpu_recon_probe", description=__doc__
    )
    p.add_argument("--images", type=Path, required=True, help=".npy (N, R, R) in [0, 1]")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder")
    p.add_argument("--model", default=None, help="prior name or path (default: shipped)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=480.0, help="no timing row after this")
    p.add_argument("--cases", default="128x1,256x8,128x8,256x1", help="SIZExCOILS, in order")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--options", default="{}", help="JSON: per method, fields to replace")
    p.add_argument("--compile", default="", help="compile modes to try, e.g. default")
    args = p.parse_args(argv)
    start = time.perf_counter()
    images = np.load(args.images)
    if images.ndim != 3:
        p.error(f"{args.images}: want (N, R, R), got shape {images.shape}")
    options = json.loads(args.options)
    methods = tuple(args.methods.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_recon_probe.json"
    record: dict[str, Any] = {
        "revision": code_revision(),
        "command": "python -m sgilo.pipeline.research.gpu_recon_probe",
        "agreement": [],
        "host_sync": [],
        "compile": [],
        "timing": None,
    }

    def write() -> None:
        record["elapsed_s"] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(record, indent=2) + "\n")

    def on_agreement(entries: list[dict]) -> None:
        record["agreement"] = entries
        write()

    agreement(
        images,
        model=args.model,
        device=args.device,
        methods=tuple(m for m in methods if m in GENERATIVE),
        options=options,
        on_row=on_agreement,
    )

    record["host_sync"] = host_sync_effect(
        images,
        model=args.model,
        device=args.device,
        methods=tuple(m for m in methods if m in ("ilo", "sgilo")),
        options=options,
    )
    write()

    if args.compile:
        modes = tuple(args.compile.split(","))
        record["compile"] = compile_effect(
            images, model=args.model, device=args.device, modes=modes
        )
        write()

    def on_timing_row(timing: dict) -> None:
        record["timing"] = timing
        write()

    record["timing"] = timing_run(
        images,
        model=args.model,
        methods=methods,
        batches=_ints(args.batches),
        cases=[_case(text) for text in args.cases.split(",")],
        device=args.device,
        solver_options=options,
        budget_s=max(0.0, args.budget_s - (time.perf_counter() - start)),
        on_row=on_timing_row,
    )
    write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
