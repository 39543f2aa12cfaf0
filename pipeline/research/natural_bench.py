"""`sgilo bench --suite natural`: the ILO/SGILO papers' natural-image tasks, classical references
beside CSGM/ILO/SGILO, on held-out RGB patches.

Each task (:data:`TASKS`) is a forward operator of :mod:`sgilo.operators.image` (or the identity for
denoising) plus Gaussian measurement noise, drawn from one seed: the operator's randomness
(mask, signs, kernel, rows) and then the noise come from one ``torch.Generator`` seeded by
:func:`task_seed` (the run's seed and the task's label), so a task is the same in every run and
every process. Images are ``(B, 3, R, R)`` in [0, 1] (``R`` the prior's resolution when a
generative method runs, else ``size``), from
``sgilo.pipeline.data.natural.natural_validation_patches`` — or passed in.

Every method runs in this process with ``torch.set_num_threads(threads)``:

- classical references (:mod:`sgilo.pipeline.research.natural_baselines`) on the tasks they apply
  to;
- CSGM, ILO, SGILO via :func:`sgilo.pipeline.methods.solve` with their defaults, on every task;
  their image ``(G + 1)/2`` is clipped to [0, 1] before scoring.

Scores: PSNR (data range 1) and SSIM (scikit-image, ``channel_axis``, data range 1, 7×7 window)
per image on the clipped RGB image, averaged over images; seconds per image = wall time of the
method on the whole batch / batch size (prior loading, latent statistics and a one-step warm-up
solve of each generative method excluded).
``--smoke``: 2 images, 3 tasks, a handful of solver steps (checks the machinery only).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sgilo.operators.base import Identity, LinearOperator
from sgilo.operators.image import Colorization, Inpainting, PartialCirculant, SuperResolution
from sgilo.operators.noise import GaussianNoise
from sgilo.pipeline.methods import GENERATIVE, Prior
from sgilo.pipeline.research.natural_baselines import CLASSICAL_NATURAL, upsample

DEFAULT_MODEL = "natural-rgb-32"
MEASUREMENT_NOISE = 0.01  # σ of the measurement noise of every task but denoising


@dataclass(frozen=True)
class Task:
    """One natural-image inverse problem: ``kind`` and its parameter ``value`` (observed
    fraction, noise σ, factor or m/n); ``box``: a centred (R/2)² hole instead of random pixels."""

    label: str
    kind: str
    value: float | None = None
    box: bool = False

    @property
    def noise(self) -> float:
        """σ of the Gaussian noise added to ``A x``."""
        return float(self.value) if self.kind == "denoising" else MEASUREMENT_NOISE

    def describe(self) -> str:
        if self.kind == "inpainting":
            if self.box:
                return "inpainting: a centred box of half the side removed (75 % observed)"
            return f"inpainting: {self.value:.0%} of the pixels observed, at random"
        if self.kind == "denoising":
            return f"denoising: y = x + η, σ = {self.value:g} (A = I)"
        if self.kind == "super-resolution":
            return f"super-resolution ×{self.value:g}: anti-aliased bicubic downsampling"
        if self.kind == "compressed-sensing":
            return f"compressed sensing: partial circulant, m/n = {self.value:g}"
        return "colorization: y = 0.2989 R + 0.5870 G + 0.1140 B"

    def operator(self, shape: tuple[int, int, int], generator: torch.Generator) -> LinearOperator:
        """The forward model on ``shape = (3, R, R)``; random parts drawn from ``generator``."""
        _, h, w = shape
        if self.kind == "inpainting":
            if self.box:
                return Inpainting.box(shape, (h // 4, w // 4, h // 2, w // 2))
            return Inpainting.random_pixels(shape, float(self.value), generator)
        if self.kind == "denoising":
            return Identity(shape)
        if self.kind == "super-resolution":
            return SuperResolution(shape, int(self.value))
        if self.kind == "compressed-sensing":
            n = int(np.prod(shape))
            return PartialCirculant(shape, max(1, round(float(self.value) * n)), generator)
        return Colorization(shape)


TASKS: dict[str, Task] = {
    t.label: t
    for t in (
        Task("inpaint-0.05", "inpainting", 0.05),
        Task("inpaint-0.2", "inpainting", 0.2),
        Task("inpaint-0.5", "inpainting", 0.5),
        Task("inpaint-box", "inpainting", None, box=True),
        Task("denoise-0.1", "denoising", 0.1),
        Task("denoise-0.2", "denoising", 0.2),
        Task("sr-x4", "super-resolution", 4),
        Task("sr-x8", "super-resolution", 8),
        Task("cs-0.05", "compressed-sensing", 0.05),
        Task("cs-0.2", "compressed-sensing", 0.2),
        Task("colorize", "colorization"),
    )
}
SMOKE_TASKS = ["inpaint-0.2", "denoise-0.1", "sr-x4"]
#: every method name of this suite: the classical references, then the generative ones
NATURAL_METHODS: tuple[str, ...] = tuple(CLASSICAL_NATURAL) + GENERATIVE
#: solver overrides of the smoke run
SMOKE_OPTIONS: dict[str, dict] = {
    "csgm": {"steps": 10, "restarts": 1},
    "ilo": {"steps": (5, 5)},
    "sgilo": {"steps": (5, 5, 5)},  # 3 rounds: round 2 reaches the block-1 score model
}


def task_seed(seed: int, label: str) -> int:
    """The seed of one task's generator: the run's seed and a CRC of the label."""
    return (int(seed) * 1_000_003 + zlib.crc32(label.encode())) % (2**63)


def measure(task: Task, images: np.ndarray, seed: int) -> tuple[torch.Tensor, LinearOperator]:
    """``(y, op)`` for ``images`` float ``(B, 3, R, R)``: ``y = A x + η``, float32
    ``(B, *op.oshape)``, deterministic for ``(seed, task.label)``."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, R, R), got shape {tuple(x.shape)}")
    g = torch.Generator().manual_seed(task_seed(seed, task.label))
    op = task.operator(tuple(x.shape[1:]), g)
    with torch.no_grad():
        y = GaussianNoise(task.noise)(op.A(x), g)
    return y, op


def measurement_image(task: Task, y: torch.Tensor, op: LinearOperator) -> np.ndarray | None:
    """The measurement as an RGB image ``(B, 3, R, R)`` for the figure, or None (CS)."""
    if task.kind in ("inpainting", "denoising"):
        return np.clip(y.numpy(), 0.0, 1.0)
    if task.kind == "super-resolution":
        return upsample(y, op, order=0)
    if task.kind == "colorization":
        return np.clip(y.expand(-1, 3, -1, -1).numpy(), 0.0, 1.0)
    return None


def methods_for(task: Task, methods: list[str]) -> list[str]:
    """The methods that apply to ``task``: generative ones everywhere, classical by kind."""
    return [m for m in methods if m in GENERATIVE or task.kind in CLASSICAL_NATURAL[m][0]]


# ---------------------------------------------------------------------- metrics
def psnr_rgb(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB, data range 1) of ``(B, 3, H, W)`` arrays."""
    err = np.mean((np.asarray(gt, np.float64) - np.asarray(pred, np.float64)) ** 2, axis=(1, 2, 3))
    return 10.0 * np.log10(1.0 / np.maximum(err, 1e-20))


def ssim_rgb(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-image SSIM of ``(B, 3, H, W)`` arrays (scikit-image, channel_axis=0, data range 1)."""
    from skimage.metrics import structural_similarity

    return np.array(
        [
            structural_similarity(
                g.astype(np.float64), p.astype(np.float64), channel_axis=0, data_range=1.0
            )
            for g, p in zip(gt, pred, strict=True)
        ]
    )


# ---------------------------------------------------------------------- configuration
class NaturalBenchConfig(BaseModel):
    """What one natural-suite run measures (written next to its table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_images: int = Field(16, ge=1, le=64, description="validation patches")
    size: int = Field(32, ge=8, le=256, description="patch side without a generative method")
    tasks: list[str] = Field(default_factory=lambda: list(TASKS))
    methods: list[str] = Field(default_factory=lambda: list(NATURAL_METHODS))
    model: str | None = Field(DEFAULT_MODEL, description="prior name or generator path")
    samples: int = Field(1, ge=1, description="SGILO chains")
    seed: int = 0
    threads: int = Field(1, ge=1, description="torch threads")
    device: str = Field("cpu", description="where the generative methods run (cpu or cuda)")
    solver_options: dict[str, dict] = Field(default_factory=dict)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; from {', '.join(TASKS)}")
        return tasks

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in NATURAL_METHODS]
        if unknown or not methods:
            raise ValueError(
                f"unknown method(s) {', '.join(unknown)}; from {', '.join(NATURAL_METHODS)}"
            )
        return methods


def smoke_config(**overrides: object) -> NaturalBenchConfig:
    """The ``--smoke`` configuration: 2 images, :data:`SMOKE_TASKS`, :data:`SMOKE_OPTIONS`."""
    base = {"num_images": 2, "tasks": SMOKE_TASKS, "solver_options": SMOKE_OPTIONS}
    return NaturalBenchConfig(**(base | overrides))


@dataclass
class NaturalRow:
    """One (task, method) measurement, averaged over the images."""

    task: str
    method: str
    psnr: float
    ssim: float
    seconds_per_image: float
    images: int


@dataclass
class NaturalBenchResult:
    """The rows, the resolved configuration (``size`` = the images' side) and, per task,
    ``(ground truth, measurement image or None, {method: reconstruction})`` for the figure."""

    rows: list[NaturalRow]
    config: NaturalBenchConfig
    panels: dict[str, tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]] = field(
        default_factory=dict
    )


# ---------------------------------------------------------------------- the run
def check_prior(prior: Prior) -> int:
    """The prior's resolution; ``ValueError`` unless it is an RGB generator."""
    cfg = prior.generator.config
    if int(cfg.image_channels) != 3:
        raise ValueError(
            f"{prior.path}: the natural suite needs an RGB (3-channel) generator, this one has "
            f"{cfg.image_channels} channel(s)"
        )
    return int(cfg.resolution)


#: a one-step solve per generative method before the first timed one (torch's first-call costs)
WARM_UP_OPTIONS: dict[str, dict] = {
    "csgm": {"steps": 1, "restarts": 1},
    "ilo": {"steps": (1,)},
    "sgilo": {"steps": (1,), "lam": 0.0, "tau": 0.0},  # z only: no prior step
}


def warm_up(y: torch.Tensor, op: LinearOperator, prior: Prior, methods: list[str]) -> None:
    """Run each generative method once for one step on the first image (not timed)."""
    from sgilo.pipeline.methods import solve

    for method in methods:
        if method in GENERATIVE:
            solve(y[:1], op, method, prior=prior, solver_options=WARM_UP_OPTIONS[method])


def run_method(
    method: str,
    y: torch.Tensor,
    op: LinearOperator,
    task: Task,
    config: NaturalBenchConfig,
    prior: Prior | None,
) -> np.ndarray:
    """One method on one task's batch: float32 ``(B, 3, R, R)`` in [0, 1]."""
    if method in GENERATIVE:
        from sgilo.pipeline.methods import solve

        result = solve(
            y,
            op,
            method,
            prior=prior,
            samples=config.samples,
            seed=config.seed,
            solver_options=config.solver_options.get(method, {}),
        )
        image = result.image.detach().to(torch.float32).cpu().numpy()
        return np.clip(image, 0.0, 1.0)
    return CLASSICAL_NATURAL[method][1](y, op, task.noise)


def run_natural_bench(
    config: NaturalBenchConfig,
    *,
    images: np.ndarray | None = None,
    prior: Prior | None = None,
    log: Callable[[str], None] = print,
) -> NaturalBenchResult:
    """Measure every (task, method) cell on ``images`` (float ``(B, 3, R, R)`` in [0, 1]; default
    ``natural_validation_patches(R, num_images)``); ``prior`` (default: ``load_prior(model)``)
    is needed only for generative methods."""
    torch.set_num_threads(config.threads)
    size = config.size
    if any(m in GENERATIVE for m in config.methods):
        if prior is None:
            from sgilo.pipeline.methods import load_prior

            prior = load_prior(config.model, device=config.device)
        size = check_prior(prior)
        prior.stats()  # fitted once per generator: not part of any method's time
    if images is None:
        from sgilo.pipeline.data.natural import natural_validation_patches

        images = natural_validation_patches(size, config.num_images)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise ValueError(f"expected images (B, 3, {size}, {size}), got {images.shape}")
    config = config.model_copy(update={"size": size, "num_images": len(images)})
    result = NaturalBenchResult([], config)
    for label in config.tasks:
        task = TASKS[label]
        y, op = measure(task, images, config.seed)
        recons: dict[str, np.ndarray] = {}
        result.panels[label] = (images, measurement_image(task, y, op), recons)
        if prior is not None and label == config.tasks[0]:
            warm_up(y, op, prior, config.methods)
        for method in methods_for(task, config.methods):
            start = time.perf_counter()
            out = run_method(method, y, op, task, config, prior)
            seconds = (time.perf_counter() - start) / len(images)
            recons[method] = out
            row = NaturalRow(
                label,
                method,
                float(psnr_rgb(images, out).mean()),
                float(ssim_rgb(images, out).mean()),
                seconds,
                len(images),
            )
            result.rows.append(row)
            log(
                f"{label:>13} {method:>10}: PSNR {row.psnr:6.2f} dB  SSIM {row.ssim:.3f}  "
                f"{row.seconds_per_image:7.3f} s/image"
            )
    return result


# ---------------------------------------------------------------------- outputs
def markdown_report(result: NaturalBenchResult, command: str, figures: dict[str, Path]) -> str:
    """The Markdown report: command, conditions, the tasks, one table of every (task, method)."""
    from sgilo.pipeline.research.bench_report import machine_description

    config, rows = result.config, result.rows
    generative = any(r.method in GENERATIVE for r in rows)
    lines = [
        "# Natural-image benchmarks",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')} "
        f"({machine_description(config.threads)}).",
        "",
        f"{config.num_images} RGB validation patches at {config.size}² in [0, 1] (scikit-image "
        "photographs, disjoint from the training patches), the ILO/SGILO papers' tasks with "
        f"Gaussian measurement noise σ = {MEASUREMENT_NOISE:g} (denoising: the task's σ), all "
        f"drawn from seed {config.seed}. PSNR (data range 1) and SSIM (scikit-image, 7×7, "
        "channel_axis) per image on the clipped RGB image, averaged. Seconds per image: the "
        "method on the whole batch divided by the number of images, in one process with "
        f"{config.threads} torch thread(s). Classical parameters follow fixed rules "
        "(pipeline/research/natural_baselines.py), never tuned on these images"
        + (
            f"; CSGM, ILO and SGILO run with their defaults on the prior `{config.model}`."
            if generative
            else "; the generative methods (CSGM, ILO, SGILO) are not in this run."
        ),
        "",
        "## Tasks",
        "",
        "| task | forward model |",
        "|---|---|",
    ]
    lines += [f"| {label} | {TASKS[label].describe()} |" for label in config.tasks]
    lines += [
        "",
        "## Results",
        "",
        "| task | method | PSNR (dB) | SSIM | s/image |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.task} | {r.method} | {r.psnr:.2f} | {r.ssim:.4f} | {r.seconds_per_image:.3f} |"
        for r in rows
    ]
    lines.append("")
    for title, path in figures.items():
        lines += [f"![{title}]({path})", "", f"*{title}; made by `{command}`.*", ""]
    return "\n".join(lines)


def write_natural_outputs(result: NaturalBenchResult, out_dir: Path, command: str) -> Path:
    """``BENCHMARKS_NATURAL.md``, ``benchmarks_natural.json``, ``images/natural_psnr.png`` and
    ``images/natural_examples.png`` under ``out_dir``; returns the Markdown path."""
    from sgilo.pipeline.research.natural_figures import example_grid, psnr_bars

    out_dir.mkdir(parents=True, exist_ok=True)
    bars = psnr_bars(
        result.rows, out_dir / "images" / "natural_psnr.png", command, result.config.methods
    )
    grid = example_grid(result.panels, out_dir / "images" / "natural_examples.png", command)
    figures = {
        "PSNR per task and method": bars.relative_to(out_dir),
        "First validation image: truth, measurement, reconstructions": grid.relative_to(out_dir),
    }
    md = out_dir / "BENCHMARKS_NATURAL.md"
    md.write_text(markdown_report(result, command, figures))
    report = {
        "command": command,
        "config": result.config.model_dump(),
        "rows": [asdict(r) for r in result.rows],
    }
    (out_dir / "benchmarks_natural.json").write_text(json.dumps(report, indent=2) + "\n")
    return md


# ---------------------------------------------------------------------- the command
def run_cli(
    *,
    out: Path,
    smoke: bool,
    methods: str | None,
    tasks: str | None,
    model: str | None,
    images: int | None,
    samples: int,
    threads: int,
    device: str,
    command: str,
    log: Callable[[str], None],
) -> int:
    """``sgilo bench --suite natural``: returns the exit code (2 for a usage error, 1 when the
    validation images cannot be loaded). Without ``--methods``, the generative methods are
    dropped (with a note) when the prior cannot be loaded."""
    from sgilo.pipeline.methods import load_prior

    chosen = list(NATURAL_METHODS) if methods is None else methods.split(",")
    fields: dict = {"methods": chosen, "model": model or DEFAULT_MODEL, "samples": samples}
    fields |= {"threads": threads, "device": device}
    if tasks is not None:
        fields["tasks"] = [t.strip() for t in tasks.split(",") if t.strip()]
    if images is not None:
        fields["num_images"] = images
    try:
        config = smoke_config(**fields) if smoke else NaturalBenchConfig(**fields)
    except ValueError as exc:
        log(f"sgilo bench: error: {_one_line(exc)}")
        return 2
    prior = None
    if any(m in GENERATIVE for m in config.methods):
        try:
            prior = load_prior(config.model, device=config.device)
            check_prior(prior)
        except ValueError as exc:
            if methods is not None:
                log(f"sgilo bench: error: {_one_line(exc)}")
                return 2
            log(f"sgilo bench: no RGB prior ({_one_line(exc)}): classical only")
            keep = [m for m in config.methods if m not in GENERATIVE]
            config = config.model_copy(update={"methods": keep})
            prior = None
    try:
        result = run_natural_bench(config, prior=prior, log=log)
    except ImportError as exc:
        log(f"sgilo bench: cannot load the natural validation images: {_one_line(exc)}")
        return 1
    md = write_natural_outputs(result, out, command)
    log(f"wrote {md}")
    return 0


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
