"""`sgilo bench`: methods × acquisition settings on held-out MNI152 slices, quality and cost.

For each setting (coils, acceleration, centre fraction) the validation slices are simulated once
(:func:`pipeline.simulate.simulate_acquisition`: smooth random phase, birdcage coils, complex
noise at ``snr_db``, a fastMRI random column mask); multi-coil methods get ESPIRiT maps
estimated from the calibration region, never the true maps. Every method then reconstructs all
slices as one batch in a **fresh process** (``multiprocessing`` spawn), so that its peak memory
(the child's peak resident set size, Python and torch included) and its time are its own:

- ``seconds_per_slice`` — wall time of the solver call (not process start, model loading or
  sigpy's one-time numba compilation, done by a 1-iteration warm-up) divided by the number of
  slices;
- ``peak_rss_mb`` — the child's ``ru_maxrss`` after the solve;
- PSNR (volume, data range = volume maximum), SSIM (per slice, averaged), NMSE (volume): the
  fastMRI definitions (:mod:`pipeline.metrics`), on the magnitude against the simulation's
  target.

No parameter is chosen on these slices: the classical λ come from the training slices
(docs/CLASSICAL_TUNING.md), the generative methods run with their defaults. ``--smoke`` runs a
reduced configuration (2 slices, few solver steps) that only checks the machinery.
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.experiment import DEFAULT_SETTINGS, Setting, save_acquisition
from pipeline.methods import GENERATIVE, METHODS

#: solver overrides of the smoke run: enough steps to exercise every code path, no more
SMOKE_OPTIONS: dict[str, dict] = {
    "cg-sense": {"iterations": 5},
    "l1-wavelet": {"iterations": 5},
    "tv": {"iterations": 5},
    "csgm": {"steps": 10, "restarts": 1},
    "ilo": {"steps": (5, 5)},
    "sgilo": {"steps": (5, 5)},
}


class BenchConfig(BaseModel):
    """What one benchmark run measures (written next to its tables)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_slices: int = Field(16, ge=1, le=16, description="MNI validation slices, evenly spaced")
    size: int = Field(128, ge=32, le=256)
    settings: list[tuple[int | None, float, float]] = Field(
        default_factory=lambda: [
            (s.coils, s.acceleration, s.center_fraction) for s in DEFAULT_SETTINGS
        ]
    )
    methods: list[str] = Field(default_factory=lambda: list(METHODS))
    model: str | None = Field(None, description="prior name or generator path (None: default)")
    samples: int = Field(1, ge=1, description="SGILO chains")
    snr_db: float = 30.0
    seed: int = 0
    threads: int = Field(2, ge=1, description="torch threads in each method's process")
    device: str = Field("cpu", description="where the generative methods run (cpu or cuda)")
    solver_options: dict[str, dict] = Field(default_factory=dict)

    def setting_objects(self) -> list[Setting]:
        return [Setting(c, r, f) for c, r, f in self.settings]

    def methods_for(self, setting: Setting) -> list[str]:
        """CG-SENSE is a multi-coil method; everything else runs on every setting."""
        return [m for m in self.methods if m != "cg-sense" or setting.coils is not None]


def smoke_config(**overrides: object) -> BenchConfig:
    """The ``--smoke`` configuration: 2 slices and :data:`SMOKE_OPTIONS`."""
    base = {"num_slices": 2, "solver_options": SMOKE_OPTIONS}
    return BenchConfig(**(base | overrides))


@dataclass
class BenchRow:
    """One (setting, method) measurement."""

    setting: str
    method: str
    psnr: float
    ssim: float
    nmse: float
    seconds_per_slice: float
    peak_rss_mb: float
    slices: int
    peak_gpu_mb: float = 0.0


# ---------------------------------------------------------------------- one cell, in a child
def _cell(job: dict) -> None:
    """Child process: load the acquisition, run one method, write magnitude + figures."""
    import torch

    from pipeline.experiment import load_acquisition, make_operator
    from pipeline.methods import load_prior, solve

    torch.set_num_threads(job["threads"])
    acq, espirit = load_acquisition(Path(job["acquisition"]))
    maps = None if espirit is None else torch.from_numpy(espirit)
    y, op = make_operator(acq, maps=maps)
    prior = load_prior(job["model"], device=job["device"]) if job["method"] in GENERATIVE else None
    if prior is not None:
        prior.stats()  # fitted once per generator: not part of the solve's time
    if job["method"] in ("l1-wavelet", "tv"):
        # sigpy's numba kernels compile on first use in a process: not part of the solve's time
        solve(y, op, job["method"], solver_options={"iterations": 1})
    start = time.perf_counter()
    result = solve(
        y,
        op,
        job["method"],
        prior=prior,
        samples=job["samples"],
        seed=job["seed"],
        solver_options=job["options"],
    )
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if job["device"] == "cuda" else 0.0
    np.savez(
        job["result"],
        magnitude=result.magnitude,
        seconds=seconds,
        peak_mb=peak_mb,
        gpu_mb=gpu_mb,
    )


def run_cell(job: dict) -> dict:
    """Run :func:`_cell` in a fresh spawned process; raises ``RuntimeError`` if it fails."""
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_cell, args=(job,))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{job['method']} failed in its benchmark process ({proc.exitcode})")
    d = np.load(job["result"])
    return {k: d[k] for k in ("magnitude", "seconds", "peak_mb", "gpu_mb")}


# ---------------------------------------------------------------------- the run
def _simulate(config: BenchConfig, setting: Setting, target: np.ndarray, path: Path) -> None:
    from pipeline.simulate import simulate_acquisition

    acq = simulate_acquisition(
        target,
        acceleration=setting.acceleration,
        center_fraction=setting.center_fraction,
        num_coils=setting.coils,
        snr_db=config.snr_db,
        seed=config.seed,
    )
    save_acquisition(path, acq)


def validation_targets(num_slices: int, size: int) -> np.ndarray:
    """``num_slices`` evenly spaced MNI validation slices ``(S, size, size)`` in [0, 1]."""
    from pipeline.data.mni import mni_slices

    slices = mni_slices("validation", size=size)
    pick = np.linspace(0, len(slices) - 1, num_slices).round().astype(int)
    return slices[pick]


def run_bench(
    config: BenchConfig, log: Callable[[str], None] = print
) -> tuple[list[BenchRow], dict]:
    """Measure every (setting, method) cell; returns the rows and one example slice per setting
    and method (for the figure): ``{label: (target (S, H, W), {method: magnitude})}``."""
    from pipeline.metrics import evaluate

    target = validation_targets(config.num_slices, config.size)
    rows: list[BenchRow] = []
    panels: dict = {}
    with tempfile.TemporaryDirectory(prefix="sgilo-bench-") as tmp:
        work = Path(tmp)
        for setting in config.setting_objects():
            acq_path = work / f"acq_{setting.label.replace(' ', '_')}.npz"
            _simulate(config, setting, target, acq_path)
            panels[setting.label] = (target, {})
            for method in config.methods_for(setting):
                job = {
                    "acquisition": str(acq_path),
                    "result": str(work / f"result_{method}.npz"),
                    "method": method,
                    "model": config.model,
                    "samples": config.samples,
                    "seed": config.seed,
                    "threads": config.threads,
                    "device": config.device,
                    "options": config.solver_options.get(method, {}),
                }
                out = run_cell(job)
                m = evaluate(target, out["magnitude"])
                row = BenchRow(
                    setting.label,
                    method,
                    m["psnr"],
                    m["ssim"],
                    m["nmse"],
                    float(out["seconds"]) / len(target),
                    float(out["peak_mb"]),
                    len(target),
                    float(out["gpu_mb"]),
                )
                rows.append(row)
                panels[setting.label][1][method] = out["magnitude"]
                log(
                    f"{setting.label:>16} {method:>11}: PSNR {row.psnr:6.2f} dB  SSIM "
                    f"{row.ssim:.3f}  {row.seconds_per_slice:7.2f} s/slice  "
                    f"{row.peak_rss_mb:5.0f} MB"
                )
    return rows, panels


# ---------------------------------------------------------------------- outputs
def machine_description(threads: int) -> str:
    """CPU model, core count and torch threads, for the table's caption."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {threads}"


def markdown_tables(rows: list[BenchRow], config: BenchConfig, command: str) -> str:
    """The Markdown report: the command, the conditions, one table per setting."""
    lines = [
        "# Benchmarks",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')} "
        f"({machine_description(config.threads)}).",
        "",
        f"{config.num_slices} MNI152 validation slices at {config.size}² (held out from every "
        "training set), simulated with a smooth random phase, birdcage coils (8-coil rows), "
        f"complex noise at {config.snr_db:g} dB SNR and fastMRI random column masks (seed "
        f"{config.seed}); multi-coil methods use ESPIRiT maps. PSNR over the volume (data range "
        "= volume max), SSIM per slice averaged, NMSE over the volume. Seconds per slice: the "
        "solver on all slices as one batch, divided by the number of slices. Peak RSS: the "
        "method's own process (Python and torch included); peak GPU memory: torch's allocator "
        f"(generative methods on `{config.device}`). Classical λ were chosen on training "
        "slices (CLASSICAL_TUNING.md); the generative methods run with their defaults"
        + (f" on the prior `{config.model or 'brain-t1-128'}`." if _any_generative(rows) else "."),
        "",
    ]
    for label in dict.fromkeys(r.setting for r in rows):
        lines += [
            f"## {label}",
            "",
            "| method | PSNR (dB) | SSIM | NMSE | s/slice | peak RSS (MB) | peak GPU (MB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r.setting == label):
            gpu = f"{r.peak_gpu_mb:.0f}" if r.peak_gpu_mb else "—"
            lines.append(
                f"| {r.method} | {r.psnr:.2f} | {r.ssim:.4f} | {r.nmse:.4f} | "
                f"{r.seconds_per_slice:.2f} | {r.peak_rss_mb:.0f} | {gpu} |"
            )
        lines.append("")
    return "\n".join(lines)


def _any_generative(rows: list[BenchRow]) -> bool:
    return any(r.method in GENERATIVE for r in rows)


def psnr_plot(rows: list[BenchRow], path: Path) -> Path:
    """PSNR against acceleration, one line per method, a panel per coil count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r.setting.split()[0] for r in rows})
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        for method in dict.fromkeys(r.method for r in rows):
            pts = sorted(
                (float(r.setting.split()[1].rstrip("x")), r.psnr)
                for r in rows
                if r.method == method and r.setting.split()[0] == group
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=method)
        ax.set_title(group)
        ax.set_xlabel("acceleration")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(
    rows: list[BenchRow], panels: dict, config: BenchConfig, out_dir: Path, command: str
) -> Path:
    """``BENCHMARKS.md``, ``benchmarks.json``, ``images/bench_psnr.png`` and
    ``images/bench_examples.png`` under ``out_dir``; returns the Markdown path."""
    from pipeline.report import comparison_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    plot = psnr_plot(rows, out_dir / "images" / "bench_psnr.png")
    examples = comparison_figure(
        panels,
        out_dir / "images" / "bench_examples.png",
        slice_index=0,
        title="sgilo bench: first validation slice, reconstructions and |error| (×5)",
    )
    text = markdown_tables(rows, config, command)
    text += (
        f"\n![PSNR against acceleration]({plot.relative_to(out_dir)})\n\n"
        f"![Example reconstructions]({examples.relative_to(out_dir)})\n"
    )
    md = out_dir / "BENCHMARKS.md"
    md.write_text(text)
    (out_dir / "benchmarks.json").write_text(
        json.dumps(
            {"command": command, "config": config.model_dump(), "rows": [asdict(r) for r in rows]},
            indent=2,
        )
        + "\n"
    )
    return md
