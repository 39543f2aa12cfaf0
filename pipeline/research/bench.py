"""`sgilo bench`: methods × acquisition settings on held-out MNI152 slices, quality and cost.

For each setting (coils, acceleration, centre fraction) the validation slices are simulated once
(:func:`sgilo.pipeline.simulate.simulate_acquisition`: smooth random phase, birdcage coils, complex
noise at ``snr_db``, a fastMRI random column mask); multi-coil methods get ESPIRiT maps
estimated from the calibration region, never the true maps. Every method then reconstructs all
slices as one batch in a **fresh process** (``multiprocessing`` spawn), so that its peak memory
(the child's peak resident set size, Python and torch included) and its time are its own:

- ``seconds_per_slice`` — wall time of the solver call (not process start, model loading or
  sigpy's one-time numba compilation, done by a 1-iteration warm-up) divided by the number of
  slices;
- ``peak_rss_mb`` — the child's ``ru_maxrss`` after the solve;
- PSNR (volume, data range = volume maximum), SSIM (per slice, averaged), NMSE (volume): the
  fastMRI definitions (:mod:`sgilo.pipeline.metrics`), on the magnitude against the simulation's
  target.

When the ``bart`` command is installed, BART's ``pics`` runs as one more row (``bart-pics``,
:mod:`sgilo.pipeline.research.bart`): an independent implementation of ℓ1-wavelet PICS given the
same ESPIRiT maps, a check on the project's classical solvers.

No parameter is chosen on these slices: the classical λ come from the training slices
(docs/CLASSICAL_TUNING.md), the generative methods run with their defaults. ``--smoke`` runs a
reduced configuration (2 slices, few solver steps) that only checks the machinery.

**Resumable.** A full run takes hours on a CPU, so every finished cell is kept in a work folder
(``work_dir``: ``$SGILO_CACHE_DIR/bench/<key>``), with the key a hash of the run's conditions
(:func:`run_key`: slices, size, SNR, seed, threads, device, samples, solver options, the SHA-256 of
the prior's files and of the code that decides a cell's result). Running the same command again
reuses the finished cells and measures only the missing ones; any change of conditions, model or
code starts a new folder. The report is rewritten after every cell, marked partial until the last.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sgilo.pipeline.experiment import DEFAULT_SETTINGS, Setting, save_acquisition
from sgilo.pipeline.methods import METHODS, NEEDS_PRIOR

#: the independent reference: BART's pics (pipeline/research/bart.py), run when ``bart`` is
#: installed
REFERENCE = "bart-pics"

#: solver overrides of the smoke run: enough steps to exercise every code path, no more
SMOKE_OPTIONS: dict[str, dict] = {
    "cg-sense": {"iterations": 5},
    "l1-wavelet": {"iterations": 5},
    "tv": {"iterations": 5},
    "csgm": {"steps": 10, "restarts": 1},
    "bart-pics": {"iterations": 5},
    "ilo": {"steps": (5, 5)},
    "sgilo": {"steps": (5, 5, 5)},  # 3 rounds: round 2 reaches the block-1 score model
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
    methods: list[str] = Field(default_factory=lambda: default_methods())
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


def default_methods() -> list[str]:
    """Every method of :data:`sgilo.pipeline.methods.METHODS`, and BART's ``pics`` when
    installed."""
    from sgilo.pipeline.research.bart import bart_available

    return list(METHODS) + ([REFERENCE] if bart_available() else [])


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

    from sgilo.pipeline.allocator import keep_freed_memory
    from sgilo.pipeline.experiment import load_acquisition, load_refit, make_operator
    from sgilo.pipeline.methods import load_prior, solve

    keep_freed_memory()  # as in the ``sgilo`` process (per process: a spawned child needs its own)
    torch.set_num_threads(job["threads"])
    acq, espirit = load_acquisition(Path(job["acquisition"]))
    maps = None if espirit is None else torch.from_numpy(espirit)
    y, op = make_operator(acq, maps=maps, refit=load_refit(Path(job["acquisition"])))
    prior = load_prior(job["model"], device=job["device"]) if job["method"] in NEEDS_PRIOR else None
    if prior is not None:
        prior.stats()  # fitted once per generator: not part of the solve's time
    if job["method"] in ("l1-wavelet", "tv"):
        # sigpy's numba kernels compile on first use in a process: not part of the solve's time
        solve(y, op, job["method"], solver_options={"iterations": 1})
    start = time.perf_counter()
    if job["method"] == REFERENCE:
        from sgilo.pipeline.research.bart import bart_pics

        kspace = (y[:, None] if y.ndim == 3 else y).numpy()
        maps = op.maps.numpy() if hasattr(op, "maps") else None
        magnitude = np.abs(bart_pics(kspace, maps, **job["options"]))
    else:
        result = solve(
            y,
            op,
            job["method"],
            prior=prior,
            samples=job["samples"],
            seed=job["seed"],
            solver_options=job["options"],
        )
        magnitude = result.magnitude
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if job["device"] == "cuda" else 0.0
    np.savez(
        job["result"],
        magnitude=magnitude,
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
#: the code that decides a cell's numbers (a change of any of it invalidates finished cells)
CELL_CODE: tuple[str, ...] = (
    "operators",
    "models",
    "pipeline/solvers",
    "pipeline/data",
    "pipeline/methods.py",
    "pipeline/simulate.py",
    "pipeline/experiment.py",
    "pipeline/espirit.py",
    "pipeline/metrics.py",
    "pipeline/allocator.py",
    "pipeline/research/bench.py",
)


def _code_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for entry in CELL_CODE:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(f"{f.relative_to(root).as_posix()}\0".encode() + f.read_bytes())
    return digest.hexdigest()


def run_key(config: BenchConfig) -> str:
    """A hash of everything a cell's result depends on except its (setting, method): the run's
    conditions, the prior's files (SHA-256), the code of :data:`CELL_CODE` and whether the cells
    keep freed memory."""
    from sgilo.models.registry import resolve_model
    from sgilo.pipeline.allocator import user_tuned_allocator
    from sgilo.pipeline.provenance import sha256_file

    conditions = config.model_dump(exclude={"methods", "settings"})
    models: list[str] = []
    if any(m in NEEDS_PRIOR for m in config.methods):
        files = resolve_model(config.model)
        models = [sha256_file(p) for p in [files.generator, *files.score_models]]
    code = _code_hash(Path(__file__).parents[2])
    # whether the cells keep freed memory (sgilo.pipeline.allocator): their seconds depend on it
    kept = not user_tuned_allocator()
    blob = json.dumps(
        {"conditions": conditions, "models": models, "code": code, "freed_memory_kept": kept},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def work_dir(config: BenchConfig) -> Path:
    """Where the finished cells of this run are kept (module docstring)."""
    cache = Path(os.environ.get("SGILO_CACHE_DIR") or Path(tempfile.gettempdir()) / "sgilo-cache")
    return cache / "bench" / run_key(config)


def _simulate(config: BenchConfig, setting: Setting, target: np.ndarray, path: Path) -> None:

    acq = setting.simulate(target, snr_db=config.snr_db, seed=config.seed)
    save_acquisition(path, acq)


def validation_targets(num_slices: int, size: int) -> np.ndarray:
    """``num_slices`` evenly spaced MNI validation slices ``(S, size, size)`` in [0, 1]."""
    from sgilo.pipeline.data.mni import mni_slices

    slices = mni_slices("validation", size=size)
    pick = np.linspace(0, len(slices) - 1, num_slices).round().astype(int)
    return slices[pick]


def run_bench(
    config: BenchConfig,
    log: Callable[[str], None] = print,
    *,
    work: Path | None = None,
    on_row: Callable[[list[BenchRow], dict, int], None] | None = None,
) -> tuple[list[BenchRow], dict]:
    """Measure every (setting, method) cell, reusing the finished cells kept in ``work``
    (default :func:`work_dir`); returns the rows and one example slice per setting and method
    (for the figure): ``{label: (target (S, H, W), {method: magnitude})}``. ``on_row(rows,
    panels, total)`` is called after every cell (e.g. to rewrite a partial report)."""
    from sgilo.pipeline.metrics import evaluate

    work = work_dir(config) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    target = validation_targets(config.num_slices, config.size)
    rows: list[BenchRow] = []
    panels: dict = {}
    total = sum(len(config.methods_for(s)) for s in config.setting_objects())
    for setting in config.setting_objects():
        stem = setting.label.replace(" ", "_")
        acq_path = work / f"acq_{stem}.npz"
        if not acq_path.exists():
            _simulate(config, setting, target, acq_path)
        panels[setting.label] = (target, {})
        for method in config.methods_for(setting):
            cell = work / f"cell_{stem}_{method}"
            result_path = cell.with_suffix(".npz")
            row_path = cell.with_suffix(".json")
            reused = row_path.exists() and result_path.exists()
            if reused:
                row = BenchRow(**json.loads(row_path.read_text()))
                magnitude = np.load(result_path)["magnitude"]
            else:
                job = {
                    "acquisition": str(acq_path),
                    "result": str(work / f"partial_{stem}_{method}.npz"),
                    "method": method,
                    "model": config.model,
                    "samples": config.samples,
                    "seed": config.seed,
                    "threads": config.threads,
                    "device": config.device,
                    "options": config.solver_options.get(method, {}),
                }
                out = run_cell(job)
                magnitude = out["magnitude"]
                m = evaluate(target, magnitude)
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
                os.replace(job["result"], result_path)  # the row file marks the cell done
                row_path.write_text(json.dumps(asdict(row)) + "\n")
            rows.append(row)
            panels[setting.label][1][method] = magnitude
            log(
                f"[{len(rows)}/{total}] {setting.label:>16} {method:>11}: PSNR {row.psnr:6.2f} dB"
                f"  SSIM {row.ssim:.3f}  {row.seconds_per_slice:7.2f} s/slice  "
                f"{row.peak_rss_mb:5.0f} MB" + ("  (finished earlier, reused)" if reused else "")
            )
            if on_row is not None:
                on_row(rows, panels, total)
    return rows, panels
