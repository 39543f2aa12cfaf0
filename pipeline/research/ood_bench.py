"""`sgilo bench --suite ood`: every method on images no shipped prior was trained on.

The images are the named groups of :mod:`sgilo.pipeline.data.ood` (coronal and sagittal
template reslices, synthetic T2-/PD-like contrasts, real MR images from the pydicom and nibabel
wheels, an abdomen-like phantom, and the template's held-out axial slices as the in-domain
reference). Each acquisition setting (:data:`sgilo.pipeline.experiment.DEFAULT_SETTINGS`:
single-coil and 8-coil, 4× with an 8 % centre and 8× with 4 %) is simulated by
:meth:`sgilo.pipeline.experiment.Setting.simulate` (smooth random phase, birdcage coils, complex
noise, a fastMRI random column mask); multi-coil methods get ESPIRiT maps estimated from the
calibration region (:func:`sgilo.pipeline.experiment.save_acquisition`).

Design (:func:`plan`). Groups have two slices. With ``cross=False`` (the default) slice 0 of every
group runs at single-coil 4× and 8-coil 8×, slice 1 at single-coil 8× and 8-coil 4×, so every
group meets every setting and every file meets both coil kinds and both accelerations; with
``cross=True`` every slice runs at every setting (twice the time). The noise level of a
(group g, setting s) pair is ``SNRS[(g + s) mod 3]`` with ``SNRS = (20, 30, 40)`` dB: each group
meets each SNR, and each setting meets each SNR across groups. One setting's slices of all groups
are simulated group by group (each at its SNR, one mask: the same seed) and solved as one batch.

Rows (:func:`variants`): every method of :data:`sgilo.pipeline.methods.METHODS` *as found at run
time* (``auto`` included once it exists), at its defaults, the generative ones with the prior
``model`` (default: the shipped one); ``l1-wavelet (auto λ)`` and ``tv (auto λ)``
(``solver_options={"lam": "auto"}``: λ from held-out k-space); and the **oracle-λ rows**
``l1-wavelet (oracle λ, upper bound)`` and ``tv (oracle λ, upper bound)``: the method run at every
``λ = λ_default · f`` for ``f`` in :data:`sgilo.pipeline.solvers.kspace_cv.GRID_FACTORS`, keeping
per slice the λ with the highest PSNR **against the target**. Choosing on the ground truth makes
them an upper bound of what any λ rule on that grid can reach, never a method; their time is the
sum of the grid's solves.

Scores per slice: PSNR and SSIM (:mod:`sgilo.pipeline.metrics`, data range = the slice's
maximum) of the magnitude against the simulation's target; seconds per slice = the wall time of
the solve on the setting's batch / batch size (in this process, with ``torch`` at ``threads``;
the prior's latent statistics and sigpy's one-time compilation are done before timing). The JSON
also keeps the CPU time per slice of the whole cell (scoring included; all threads summed), a
figure that a busy shared machine inflates less than the wall time.

**Resumable** like ``sgilo bench`` (:mod:`sgilo.pipeline.research.bench`): each finished (setting,
row) cell is kept as JSON in ``$SGILO_CACHE_DIR/bench-ood/<key>``, ``key`` a hash of the run's
conditions, the prior's files and the code that decides a cell (:data:`CELL_CODE`); running the
same command again measures only the missing cells.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sgilo.pipeline.data.ood import GROUPS, ood_groups
from sgilo.pipeline.experiment import DEFAULT_SETTINGS, Setting

#: the SNRs (dB) the (group, setting) pairs cycle through
SNRS: tuple[float, ...] = (20.0, 30.0, 40.0)
#: the classical methods that get the auto-λ and oracle-λ rows
TUNED: tuple[str, ...] = ("l1-wavelet", "tv")
AUTO_SUFFIX = " (auto λ)"
ORACLE_SUFFIX = " (oracle λ, upper bound)"
#: the code that decides a cell's numbers (a change of any of it invalidates finished cells)
CELL_CODE: tuple[str, ...] = (
    "operators",
    "models",
    "pipeline/solvers",
    "pipeline/data",
    "pipeline/methods.py",
    "pipeline/method_choice.py",
    "pipeline/prior_fit.py",
    "pipeline/simulate.py",
    "pipeline/experiment.py",
    "pipeline/espirit.py",
    "pipeline/coil_map_check.py",
    "pipeline/coil_map_refine.py",
    "pipeline/metrics.py",
    "pipeline/research/ood_bench.py",
)
#: smoke groups: the in-domain reference and one OOD group
SMOKE_GROUPS: tuple[str, ...] = ("mni-axial-validation", "nibabel-mr")
SMOKE_ITERATIONS = 5
SMOKE_STEPS = 5


def method_names() -> list[str]:
    """:data:`sgilo.pipeline.methods.METHODS`, read when called (``auto`` when it exists)."""
    from sgilo.pipeline import methods

    return list(methods.METHODS)


def needs_prior(method: str) -> bool:
    """Whether ``method`` needs the generative prior (``NEEDS_PRIOR`` when the methods module
    defines it, else ``GENERATIVE``)."""
    from sgilo.pipeline import methods

    return method in getattr(methods, "NEEDS_PRIOR", methods.GENERATIVE)


class OODBenchConfig(BaseModel):
    """What one OOD run measures (written next to its tables)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(128, ge=16, le=256, description="image side")
    groups: list[str] = Field(default_factory=lambda: list(GROUPS))
    settings: list[tuple[int | None, float, float]] = Field(
        default_factory=lambda: [
            (s.coils, s.acceleration, s.center_fraction) for s in DEFAULT_SETTINGS
        ]
    )
    methods: list[str] = Field(default_factory=method_names)
    tuned_rows: bool = Field(True, description="auto-λ and oracle-λ rows of l1-wavelet and TV")
    cross: bool = Field(False, description="every slice at every setting (module docstring)")
    model: str | None = Field(None, description="prior name or generator path (None: default)")
    samples: int = Field(1, ge=1, description="SGILO chains")
    seed: int = 0
    threads: int = Field(2, ge=1, description="torch threads")
    device: str = Field("cpu", description="where the generative methods run (cpu or cuda)")
    solver_options: dict[str, dict] = Field(default_factory=dict)
    smoke: bool = Field(False, description="few iterations and steps (checks the machinery)")

    def setting_objects(self) -> list[Setting]:
        return [Setting(c, r, f) for c, r, f in self.settings]


def smoke_config(**overrides: object) -> OODBenchConfig:
    """``--smoke``: 64² images, two groups, two settings, a handful of iterations."""
    base: dict = {
        "size": 64,
        "groups": list(SMOKE_GROUPS),
        "settings": [(None, 4.0, 0.08), (8, 8.0, 0.04)],
        "smoke": True,
    }
    return OODBenchConfig(**(base | overrides))


@dataclass(frozen=True)
class Variant:
    """One row: ``name`` in the tables, the ``method`` it runs, its fixed ``options`` and
    ``kind``: "method" (a method at its defaults), "auto-lambda" or "oracle-lambda"."""

    name: str
    method: str
    options: dict = field(default_factory=dict)
    kind: str = "method"


def variants(config: OODBenchConfig) -> list[Variant]:
    """Every row of the run, in report order (module docstring)."""
    rows = [Variant(m, m) for m in config.methods]
    if config.tuned_rows:
        rows += [Variant(m + AUTO_SUFFIX, m, {"lam": "auto"}, "auto-lambda") for m in TUNED]
        rows += [Variant(m + ORACLE_SUFFIX, m, {}, "oracle-lambda") for m in TUNED]
    return rows


def plan(config: OODBenchConfig) -> list[tuple[int, str, int, float]]:
    """The design: ``(setting index, group, slice index, SNR dB)`` of every slice solved, by
    setting then group (module docstring)."""
    out = []
    for s in range(len(config.settings)):
        for g, name in enumerate(config.groups):
            snr = SNRS[(g + s) % len(SNRS)]
            slices = (0, 1) if config.cross else ((0,) if s in (0, 3) else (1,))
            out += [(s, name, k, snr) for k in slices]
    return out


# ---------------------------------------------------------------------- options of a solve
def _options(config: OODBenchConfig, variant: Variant, num_blocks: int | None) -> dict:
    """The solver options of ``variant``: its own, the smoke run's reductions, then the
    config's ``solver_options`` for its name or method."""
    options = dict(variant.options)
    if config.smoke:
        steps = tuple([SMOKE_STEPS] * (num_blocks or 1))
        smoke = {
            "cg-sense": {"iterations": SMOKE_ITERATIONS},
            "l1-wavelet": {"iterations": SMOKE_ITERATIONS},
            "tv": {"iterations": SMOKE_ITERATIONS},
            "csgm": {"steps": 2 * SMOKE_STEPS, "restarts": 1},
            "ilo": {"steps": steps},
            "sgilo": {"steps": steps},
            "auto": {"generative_settings": {"steps": steps}},
        }
        options |= smoke.get(variant.method, {})
    options |= config.solver_options.get(variant.method, {})
    return options | config.solver_options.get(variant.name, {})


# ---------------------------------------------------------------------- one cell
@dataclass
class OODRow:
    """One (setting, row) cell: per-slice scores over the setting's batch."""

    setting: str
    variant: str
    method: str
    kind: str
    groups: list[str]
    labels: list[str]
    snr_db: list[float]
    psnr: list[float]
    ssim: list[float]
    seconds_per_slice: float
    extra: dict = field(default_factory=dict)
    cpu_seconds_per_slice: float = 0.0


def _scores(target: np.ndarray, magnitude: np.ndarray) -> tuple[list[float], list[float]]:
    from sgilo.pipeline.metrics import psnr, ssim

    p = [float(psnr(t, m)) for t, m in zip(target, magnitude, strict=True)]
    s = [float(ssim(t, m)) for t, m in zip(target, magnitude, strict=True)]
    return p, s


def _record(diag: dict) -> dict:
    """What the report keeps of a result's diagnostics: ``auto``'s choice, note, held-out errors
    and unexplained fractions, and the λ an auto-λ run chose."""
    kept = ("auto_choice", "auto_note", "lambda_rel", "prior_fit_unexplained")
    keep = {k: v for k, v in diag.items() if k in kept}
    keep |= {k: v for k, v in diag.items() if "heldout_error" in k}
    return keep


def solve_cell(
    variant: Variant, y, op, target: np.ndarray, prior, config: OODBenchConfig
) -> tuple[list[float], list[float], float, dict]:
    """Run one row on one setting's batch: per-slice PSNR and SSIM, seconds per slice and the
    diagnostics kept (:func:`_record`; the oracle rows: the factor chosen per slice)."""
    from sgilo.pipeline.methods import solve

    blocks = None if prior is None else int(prior.generator.num_blocks)
    options = _options(config, variant, blocks)
    kwargs = {"samples": config.samples, "seed": config.seed}
    if needs_prior(variant.method):
        kwargs["prior"] = prior
    if variant.kind != "oracle-lambda":
        start = time.perf_counter()
        result = solve(y, op, variant.method, solver_options=options, **kwargs)
        seconds = time.perf_counter() - start
        psnr, ssim = _scores(target, result.magnitude)
        return psnr, ssim, seconds / len(target), _record(result.diagnostics_dict())
    from sgilo.pipeline.solvers.classical import default_lambda
    from sgilo.pipeline.solvers.kspace_cv import GRID_FACTORS

    default = default_lambda(variant.method, op, len(target))
    seconds, grid = 0.0, []
    for factor in GRID_FACTORS:
        start = time.perf_counter()
        result = solve(y, op, variant.method, solver_options=options | {"lam": default * factor})
        seconds += time.perf_counter() - start
        grid.append(_scores(target, result.magnitude))
    best = [int(np.argmax([g[0][b] for g in grid])) for b in range(len(target))]
    psnr = [grid[k][0][b] for b, k in enumerate(best)]
    ssim = [grid[k][1][b] for b, k in enumerate(best)]
    extra = {"oracle_factor": [GRID_FACTORS[k] for k in best], "default_lambda": default.tolist()}
    return psnr, ssim, seconds / len(target), extra


# ---------------------------------------------------------------------- the run
def _code_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for entry in CELL_CODE:
        path = root / entry
        if not path.exists():
            continue
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(f"{f.relative_to(root).as_posix()}\0".encode() + f.read_bytes())
    return digest.hexdigest()


def run_key(config: OODBenchConfig) -> str:
    """A hash of everything a cell depends on but its (setting, row): the conditions, the
    prior's files (SHA-256) and the code of :data:`CELL_CODE`."""
    from sgilo.models.registry import resolve_model
    from sgilo.pipeline.provenance import sha256_file

    conditions = config.model_dump(exclude={"methods", "settings", "tuned_rows"})
    models: list[str] = []
    if any(needs_prior(m) for m in config.methods):
        files = resolve_model(config.model)
        models = [sha256_file(p) for p in [files.generator, *files.score_models]]
    root = Path(__file__).parents[2]
    blob = json.dumps(
        {"conditions": conditions, "models": models, "code": _code_hash(root)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def work_dir(config: OODBenchConfig) -> Path:
    """Where the finished cells of this run are kept (module docstring)."""
    cache = Path(os.environ.get("SGILO_CACHE_DIR") or Path(tempfile.gettempdir()) / "sgilo-cache")
    return cache / "bench-ood" / run_key(config)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _acquisition(config: OODBenchConfig, s: int, images: dict, work: Path) -> tuple[Path, dict]:
    """Simulate setting ``s`` for its slices of every group (each group at its SNR, one mask)
    and save it with ESPIRiT maps; returns the file and the slices' group, label and SNR."""
    from sgilo.pipeline.experiment import save_acquisition

    setting = config.setting_objects()[s]
    path = work / f"acq_{_slug(setting.label)}.npz"
    parts, meta = [], {"groups": [], "labels": [], "snr_db": []}
    for _, name, k, snr in (p for p in plan(config) if p[0] == s):
        group = images[name]
        parts.append(setting.simulate(group.images[k : k + 1], snr_db=snr, seed=config.seed))
        meta["groups"].append(name)
        meta["labels"].append(group.labels[k])
        meta["snr_db"].append(snr)
    if not path.exists():
        if any(not np.array_equal(p.mask, parts[0].mask) for p in parts):
            raise RuntimeError("the groups of one setting must share its mask (same seed)")
        merged = replace(
            parts[0],
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in ("target", "image")},
            kspace=np.concatenate([p.kspace for p in parts]),
            sigma=float("nan"),  # σ differs per group: the SNRs are in the cells
        )
        save_acquisition(path, merged)
    return path, meta


def run_ood_bench(
    config: OODBenchConfig,
    *,
    prior=None,
    work: Path | None = None,
    log: Callable[[str], None] = print,
    on_row: Callable[[list[OODRow], int], None] | None = None,
) -> list[OODRow]:
    """Measure every (setting, row) cell, reusing the finished ones kept in ``work`` (default
    :func:`work_dir`); ``prior`` (default ``load_prior(model)``) only when a method needs it.
    ``on_row(rows, total)`` is called after every cell."""
    import torch

    from sgilo.pipeline.experiment import load_acquisition, load_refit, make_operator
    from sgilo.pipeline.methods import load_prior, solve

    torch.set_num_threads(config.threads)
    work = work_dir(config) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    images = ood_groups(config.size, config.groups)
    rows_of = variants(config)
    total = sum(
        len([v for v in rows_of if v.method != "cg-sense" or st.coils is not None])
        for st in config.setting_objects()
    )
    rows: list[OODRow] = []
    warmed = False
    for s, setting in enumerate(config.setting_objects()):
        acq_path, meta = _acquisition(config, s, images, work)
        y = op = target = None
        for variant in rows_of:
            if variant.method == "cg-sense" and setting.coils is None:
                continue
            cell = work / f"cell_{_slug(setting.label)}_{_slug(variant.name)}.json"
            reused = cell.exists()
            if reused:
                row = OODRow(**json.loads(cell.read_text()))
            else:
                if y is None:
                    acq, espirit = load_acquisition(acq_path)
                    maps = None if espirit is None else torch.from_numpy(espirit)
                    y, op = make_operator(acq, maps=maps, refit=load_refit(acq_path))
                    target = acq.target
                if needs_prior(variant.method) and prior is None:
                    prior = load_prior(config.model, device=config.device)
                if prior is not None:
                    prior.stats()  # fitted once per generator: not part of any solve's time
                if not warmed:  # sigpy's numba kernels compile on first use: not timed
                    solve(y, op, "l1-wavelet", solver_options={"iterations": 1})
                    warmed = True
                cpu = time.process_time()
                psnr, ssim, sec, extra = solve_cell(variant, y, op, target, prior, config)
                cpu = (time.process_time() - cpu) / len(target)
                row = OODRow(
                    setting.label,
                    variant.name,
                    variant.method,
                    variant.kind,
                    meta["groups"],
                    meta["labels"],
                    meta["snr_db"],
                    psnr,
                    ssim,
                    sec,
                    extra,
                    cpu,
                )
                cell.write_text(json.dumps(asdict(row)) + "\n")
            rows.append(row)
            log(
                f"[{len(rows)}/{total}] {setting.label:>14} {variant.name:>34}: PSNR "
                f"{np.mean(row.psnr):6.2f} dB  SSIM {np.mean(row.ssim):.3f}  "
                f"{row.seconds_per_slice:7.2f} s/slice" + ("  (reused)" if reused else "")
            )
            if on_row is not None:
                on_row(rows, total)
    return rows


# ---------------------------------------------------------------------- the command
def run_cli(
    *,
    out: Path,
    smoke: bool,
    methods: str | None,
    model: str | None,
    samples: int,
    threads: int,
    device: str,
    fresh: bool,
    command: str,
    log: Callable[[str], None],
) -> int:
    """``sgilo bench --suite ood``: returns the exit code (2 for a usage error). Without
    ``--methods``, the methods that need a prior are dropped (with a note) when it cannot be
    loaded."""
    import shutil

    from sgilo.pipeline.methods import load_prior
    from sgilo.pipeline.research.ood_report import write_ood_outputs

    chosen = method_names() if methods is None else [m.strip() for m in methods.split(",")]
    known = method_names()
    unknown = [m for m in chosen if m not in known]
    if unknown or not chosen:
        log(f"sgilo bench: unknown method(s) {', '.join(unknown)}; from {', '.join(known)}")
        return 2
    prior = None
    if any(needs_prior(m) for m in chosen):
        try:
            prior = load_prior(model, device=device)
        except ValueError as exc:
            if methods is not None:
                log(f"sgilo bench: error: {' '.join(str(exc).split())}")
                return 2
            log(f"sgilo bench: no prior ({' '.join(str(exc).split())}): classical only")
            chosen = [m for m in chosen if not needs_prior(m)]
    fields = {"methods": chosen, "model": model, "samples": samples, "threads": threads}
    fields["device"] = device
    try:
        config = smoke_config(**fields) if smoke else OODBenchConfig(**fields)
    except ValueError as exc:
        log(f"sgilo bench: error: {' '.join(str(exc).split())}")
        return 2
    work = work_dir(config)
    if fresh:
        shutil.rmtree(work, ignore_errors=True)

    def report(rows: list[OODRow], total: int) -> None:
        write_ood_outputs(rows, config, out, command, total)

    run_ood_bench(config, prior=prior, work=work, log=log, on_row=report)
    log(f"wrote {out / 'BENCHMARKS_OOD.md'}")
    return 0
