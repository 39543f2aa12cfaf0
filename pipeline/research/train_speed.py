"""Training speed of sgilo's StyleGAN-2 trainer: images per second, GPU memory, and host against
device time per step (issue 22's "GPU trainer at hardware speed"; docs/SPEED.md §7).

``python -m sgilo.pipeline.research.train_speed --device cuda --out train_speed.json``
(the shipped ``brain-t1-128`` architecture at batch 128, 512 and 32; ``--compile default,
reduce-overhead`` adds compiled variants) or ``--device cpu`` (a tiny 32² preset at
batch 8 and 16, so it runs in seconds on a laptop).

Each row times :func:`sgilo.models.stylegan2.train_step.train_step`, the step ``train_gan`` runs,
on a run built as ``train_gan`` builds it (:func:`~sgilo.models.stylegan2.train_state.new_run`,
images in memory on the device, ``cudnn.benchmark`` on CUDA, the networks compiled for a compile
variant), after ``--warmup`` untimed steps (compilation, cuDNN's algorithm search):

- ``images_per_s``: steps × batch / wall seconds of ``--seconds`` of steps, synchronized at both
  ends;
- ``wall_ms``: wall milliseconds per step; ``host_ms``: the host's milliseconds inside the step
  calls (without synchronizing: on a GPU the time to issue the step's work; when it is close to
  ``wall_ms`` and above ``device_ms`` the step is bound by the host);
- ``device_ms``: the GPU's busy milliseconds per step, the summed durations of its kernels over
  ``--profile-steps`` steps (``torch.profiler``), and ``kernels`` launched per step;
- ``peak_gib``: ``torch.cuda.max_memory_allocated`` over the row.

The images are random smooth images in [0, 1] (8² uniform noise upsampled): the step's cost does
not depend on their content, and the GPU machine lacks the packages that read the MNI template.
Only torch, numpy and pydantic are needed. ``--data synth-brain`` draws every batch from the
``synth-brain`` sampler on the training device instead, as ``train-gan --data synth-brain`` does,
so the row includes making the images (whether the sampler keeps up with the GPU); on a machine
without nilearn it reads the template from ``SGILO_MNI_ARCHIVE`` (pipeline/data/mni_sources.py)
and needs scipy. The JSON is rewritten after every row, so a run cut
short keeps what it measured; ``--budget-s`` skips the rows that would start after it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from sgilo.models.stylegan2.generator import GeneratorConfig
from sgilo.models.stylegan2.presets import PRESETS
from sgilo.models.stylegan2.train_compile import autotuned, compiled_nets
from sgilo.models.stylegan2.train_config import TrainConfig
from sgilo.models.stylegan2.train_state import TrainRun, new_run
from sgilo.models.stylegan2.train_step import as_sampler, train_step

#: benchmark architectures: the shipped 128² prior's, and a tiny one for CPU checks
ARCHITECTURES: dict[str, GeneratorConfig] = {
    "brain-t1-128": PRESETS["brain-t1-128"],
    "tiny-32": GeneratorConfig(
        resolution=32,
        style_dim=64,
        image_channels=1,
        channel_base=256,
        channel_max=64,
        channel_min=16,
    ),
}


def smooth_images(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    """n random smooth images (n, 1, R, R) in [0, 1]: 8² uniform noise, bilinear upsampling."""
    coarse = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    up = torch.nn.functional.interpolate(coarse, size=resolution, mode="bilinear")
    return up.clamp(0, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: where the benchmark's images come from (module docstring)
DATA_SOURCES: tuple[str, ...] = ("smooth", "synth-brain")


def build_run(
    arch: str, batch: int, device: torch.device, compile_mode: str | None, data: str = "smooth"
) -> tuple[TrainRun, Any]:
    """A run of ``arch`` at ``batch`` (the trainer's defaults otherwise) and its image sampler
    (``data``: one of :data:`DATA_SOURCES`)."""
    config = TrainConfig(generator=ARCHITECTURES[arch], batch_size=batch, total_steps=10**9)
    r = config.generator.resolution
    if data == "synth-brain":
        from sgilo.pipeline.data.synth_brain import SynthBrainSampler

        images: Any = SynthBrainSampler(r, device=device)
    elif data == "smooth":
        images = smooth_images(256, r)
    else:
        raise ValueError(f"data: expected one of {DATA_SOURCES}, received {data!r}")
    sampler = as_sampler(images, r, config.image_channels, device)
    run = new_run(config, device, data_device=sampler.rng_device)
    if compile_mode is not None:
        run.nets = compiled_nets(run.g, run.d, compile_mode)
    return run, sampler


def _device_time(run: TrainRun, sampler: Any, device: torch.device, steps: int) -> dict:
    """GPU busy milliseconds and kernels per step, from a profile of ``steps`` steps."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            train_step(run, sampler, device)
        _sync(device)
    busy_us, kernels = 0.0, 0
    for event in prof.key_averages():
        if event.device_type == DeviceType.CUDA:
            busy_us += getattr(event, "self_device_time_total", 0.0)
            kernels += event.count
    return {"device_ms": round(busy_us / 1e3 / steps, 3), "kernels": round(kernels / steps, 1)}


def measure(
    arch: str,
    batch: int,
    device: torch.device,
    compile_mode: str | None = None,
    seconds: float = 8.0,
    warmup: int = 5,
    profile_steps: int = 16,
    data: str = "smooth",
) -> dict[str, Any]:
    """One row (module docstring)."""
    row: dict[str, Any] = {"arch": arch, "batch": batch, "compile": compile_mode, "data": data}
    t_build = time.perf_counter()
    run, sampler = build_run(arch, batch, device, compile_mode, data)
    row["params_g"] = sum(p.numel() for p in run.g.parameters())
    with autotuned(device):
        for _ in range(warmup):
            train_step(run, sampler, device)
        _sync(device)
        row["warmup_s"] = round(time.perf_counter() - t_build, 2)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps, host = 0, 0.0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or steps < 2:
            t = time.perf_counter()
            train_step(run, sampler, device)
            host += time.perf_counter() - t
            steps += 1
        _sync(device)
        wall = time.perf_counter() - start
        row |= {
            "steps": steps,
            "images_per_s": round(steps * batch / wall, 1),
            "wall_ms": round(1e3 * wall / steps, 3),
            "host_ms": round(1e3 * host / steps, 3),
        }
        if device.type == "cuda":
            row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
            if profile_steps > 0:
                row |= _device_time(run, sampler, device, profile_steps)
    return row


def _environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version()}
    env["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default=None)
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument(
        "--compile",
        default="",
        help="comma-separated torch.compile modes to measure after the eager rows",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per row")
    parser.add_argument("--profile-steps", type=int, default=16)
    parser.add_argument("--budget-s", type=float, default=None, help="start no row after this")
    parser.add_argument(
        "--data", choices=DATA_SOURCES, default="smooth", help="images in memory or synth-brain"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    arch = args.arch or ("brain-t1-128" if cuda else "tiny-32")
    default_batches = "128,512,32" if cuda else "8,16"  # the most telling first
    batches = [int(b) for b in (args.batches or default_batches).split(",")]
    variants: list[str | None] = [None] + [m for m in args.compile.split(",") if m]
    report: dict[str, Any] = {"environment": _environment(device), "rows": []}
    t0 = time.perf_counter()
    for mode in variants:
        for batch in batches:
            if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
                report["rows"].append({"batch": batch, "compile": mode, "skipped": "budget"})
                continue
            try:
                row = measure(
                    arch,
                    batch,
                    device,
                    mode,
                    args.seconds,
                    args.warmup,
                    args.profile_steps,
                    args.data,
                )
            except Exception as exc:  # a failed variant (e.g. a compile mode) is recorded
                row = {"batch": batch, "compile": mode, "error": repr(exc)[:400]}
                row["trace"] = traceback.format_exc(limit=3)[-1200:]
            print(json.dumps(row), flush=True)
            report["rows"].append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")
            if cuda:
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
