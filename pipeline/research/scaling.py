"""Cost measurements of the latent-space solvers (docs/SPEED.md, `sgilo scaling`).

- :func:`step_overhead`: milliseconds per solver step (CSGM, ILO, SGILO) against the bare
  generator forward + backward at the same batch — what a step costs beyond the generator;
- :func:`chain_seconds`: wall seconds of SGILO with ``K`` chains;
- :func:`ilo_scaling`: seconds per slice of ILO (a short fixed schedule) against the operator's
  image size and the number of slices in a batch; :func:`write_scaling` writes the table (a
  marked section of docs/SPEED.md) and the plot (docs/images/scaling.png).

Every measurement runs with ``torch.set_num_threads(threads)`` (restored afterwards), interleaves
the compared variants and reports medians over ``repeats``, because a shared machine is noisy;
per-step costs are CPU time of the process (:func:`clock`), whole runs both wall and CPU time.
The data are single-coil 8× random-column-mask acquisitions of MNI *training* slices (or, for the
tests, of a smooth synthetic image): the timings do not depend on the values much, but the ℓ1-ball
projection does cost more when the iterate leaves the ball, which real data make realistic.
ILO and SGILO are timed from a random start (``init="random"``): the default CSGM start adds at
most ``init_restarts · init_steps`` CSGM steps per slice (timed as CSGM's), before the rounds.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: markers of the generated section of docs/SPEED.md
BEGIN, END = "<!-- scaling:begin -->", "<!-- scaling:end -->"


def clock() -> float:
    """The step timer: CPU seconds of this process (``time.process_time``). On a shared machine
    wall time also counts the other jobs' use of the cores; with one torch thread the process
    time is the solver's own work."""
    return time.process_time()


@contextmanager
def threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside, the previous setting restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine() -> dict[str, Any]:
    """What the figures were measured on: cpu count, torch threads, torch version, platform."""
    return {
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def _images(size: int, batch: int, source: str) -> torch.Tensor:
    """``(batch, size, size)`` float images in [0, 1]: MNI training slices (evenly spaced) or a
    smooth synthetic one (``source="synthetic"``, no data files needed)."""
    if source == "mni":
        from sgilo.pipeline.data.mni import mni_slices

        slices = mni_slices("train", size)
        idx = np.linspace(len(slices) * 0.3, len(slices) * 0.7, batch).astype(int)
        return torch.from_numpy(slices[idx].copy())
    u = torch.linspace(-1, 1, size)
    r2 = u[:, None] ** 2 + (1.3 * u[None, :]) ** 2
    img = (r2 < 0.8).float() * (0.6 + 0.3 * torch.cos(3 * u[None, :]))
    return img.expand(batch, size, size).clone()


def acquisition(
    size: int, batch: int, *, acceleration: float = 8.0, source: str = "mni", seed: int = 0
) -> tuple[torch.Tensor, Any]:
    """Single-coil Cartesian data ``y`` complex ``(batch, size, size)`` and its operator: a fastMRI
    random column mask (``acceleration``, 4 % centre), noiseless."""
    return acquisition_of(_images(size, batch, source), acceleration=acceleration, seed=seed)


def acquisition_of(
    images: torch.Tensor, *, acceleration: float = 8.0, seed: int = 0
) -> tuple[torch.Tensor, Any]:
    """:func:`acquisition` of given real images ``(B, R, R)``: complex data ``(B, R, R)`` and the
    single-coil operator of a random column mask (``acceleration``, 4 % centre), noiseless."""
    from sgilo.operators.masks import column_mask
    from sgilo.operators.mri import SingleCoilMRI

    size = images.shape[-1]
    mask = column_mask("random", size, 0.04, acceleration, seed=seed).astype(np.float32)
    mask2d = torch.from_numpy(np.broadcast_to(mask, (size, size)).copy())
    op = SingleCoilMRI(mask2d, shape=(size, size))
    return op.A(images.to(torch.complex64)), op


def _step_times(run: Callable[[Callable[[int, int, str], None]], object]) -> dict[str, float]:
    """Median seconds between consecutive progress callbacks, per callback message (one per
    round); an interval that spans a round boundary is left out."""
    stamps: list[tuple[float, str]] = []
    run(lambda _step, _total, message: stamps.append((clock(), message)))
    intervals: dict[str, list[float]] = {}
    for (t0, m0), (t1, m1) in zip(stamps, stamps[1:], strict=False):
        if m0 == m1:
            intervals.setdefault(m1, []).append(t1 - t0)
    return {m: statistics.median(v) for m, v in intervals.items()}


def _bare(prior: Any, batch: int, steps: int) -> float:
    """Median seconds of the generator's forward + backward (w.r.t. ``z``) from the Gaussianized
    latent ``z`` ``(batch, n_latent, D)`` with the fixed noise maps."""
    from sgilo.models.stylegan2.checkpoint import gaussianized_to_w

    gen = prior.generator
    stats = prior.stats()
    mu, sigma = stats.mu.to(torch.float32), stats.sigma.to(torch.float32)
    z = torch.randn(batch, gen.n_latent, gen.style_dim, generator=torch.Generator().manual_seed(0))
    z.requires_grad_(True)
    flags = [(p, p.requires_grad) for p in gen.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    times = []
    try:
        for _ in range(steps + 1):
            t0 = clock()
            g = gen.synthesize(gaussianized_to_w(z, mu, sigma), None)
            g.square().sum().backward()
            z.grad = None
            times.append(clock() - t0)
    finally:
        for p, f in flags:
            p.requires_grad_(f)
    return statistics.median(times[1:])


def overhead_pass(
    prior: Any,
    y: torch.Tensor,
    op: Any,
    *,
    steps: int,
    solvers: dict[str, Callable] | None = None,
) -> dict[str, float]:
    """One measurement of :func:`step_overhead` (seconds per step) on the data ``y``/``op``;
    ``solvers``: the ``csgm``/``ilo``/``sgilo`` functions to time (default: the project's; pass
    another implementation to compare the two interleaved)."""
    from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm
    from sgilo.pipeline.solvers.ilo import ILOConfig, ilo
    from sgilo.pipeline.solvers.sgilo import SGILOConfig, sgilo

    fns = {"csgm": csgm, "ilo": ilo, "sgilo": sgilo} | (solvers or {})
    gen, stats = prior.generator, prior.stats()
    rounds = min(3, gen.num_blocks)
    sched = tuple([steps] * rounds)
    last = f"round {rounds - 1}"

    def run_csgm(cb: Callable) -> object:
        config = CSGMConfig(steps=steps, restarts=1)
        return fns["csgm"](y, op, generator=gen, config=config, rng=torch.Generator(), callback=cb)

    def run_ilo(cb: Callable) -> object:
        return fns["ilo"](
            y,
            op,
            generator=gen,
            latent_stats=stats,
            config=ILOConfig(steps=sched, init="random"),
            rng=torch.Generator().manual_seed(0),
            callback=cb,
        )

    def run_sgilo(cb: Callable) -> object:
        config = SGILOConfig(steps=sched, init="random")
        return fns["sgilo"](
            y,
            op,
            generator=gen,
            latent_stats=stats,
            score_models=prior.score_models,
            config=config,
            rng=torch.Generator().manual_seed(0),
            callback=cb,
        )

    out = {"bare": _bare(prior, y.shape[0], steps)}
    out["csgm"] = next(iter(_step_times(run_csgm).values()))
    ilo_t = _step_times(run_ilo)
    out["ilo"], out["ilo_round2"] = ilo_t["ilo round 0"], ilo_t[f"ilo {last}"]
    sgilo_t = _step_times(run_sgilo)
    out["sgilo_round2"] = next(v for m, v in sgilo_t.items() if m.endswith(last))
    return out


def step_overhead(
    prior: Any = None,
    *,
    batch: int = 4,
    steps: int = 10,
    repeats: int = 3,
    size: int | None = None,
    num_threads: int = 1,
    source: str = "mni",
) -> dict[str, float]:
    """Milliseconds per step (medians over ``repeats`` passes of :func:`overhead_pass`, after one
    warm-up pass): ``bare`` (generator forward + backward), ``csgm``, ``ilo`` (round 0: every
    block runs, as in ``bare``), ``ilo_round2`` and ``sgilo_round2`` (round 2: blocks ≥ 2; SGILO
    adds its prior step there when the prior has a block-1 score model) and the ratios
    ``csgm/bare``, ``ilo/bare``.

    ``prior``: a :class:`sgilo.pipeline.methods.Prior` (``None``: the shipped default); ``size``:
    the operator's grid (``None``: the generator's resolution)."""
    from sgilo.pipeline.methods import load_prior

    prior = load_prior(None) if prior is None else prior
    size = int(prior.generator.config.resolution) if size is None else size
    y, op = acquisition(size, batch, source=source)
    samples: dict[str, list[float]] = {}
    with threads(num_threads):
        for rep in range(repeats + 1):
            measured = overhead_pass(prior, y, op, steps=steps)
            if rep > 0:
                for key, v in measured.items():
                    samples.setdefault(key, []).append(1000 * v)
    out = {key: statistics.median(v) for key, v in samples.items()}
    out["csgm/bare"] = out["csgm"] / out["bare"]
    out["ilo/bare"] = out["ilo"] / out["bare"]
    return out


def chain_seconds(
    prior: Any = None,
    *,
    chains: int = 4,
    steps: Sequence[int] = (10, 10, 10),
    num_threads: int = 1,
    source: str = "mni",
) -> dict[str, float]:
    """Wall and CPU seconds of one SGILO run with ``chains`` chains on one slice (the prior's
    score models, ``steps`` per round)."""
    from sgilo.pipeline.methods import load_prior
    from sgilo.pipeline.solvers.sgilo import SGILOConfig, sgilo

    prior = load_prior(None) if prior is None else prior
    y, op = acquisition(int(prior.generator.config.resolution), 1, source=source)
    config = SGILOConfig(steps=tuple(steps), chains=chains, init="random")
    with threads(num_threads):
        wall, cpu = time.perf_counter(), clock()
        sgilo(
            y,
            op,
            generator=prior.generator,
            latent_stats=prior.stats(),
            score_models=prior.score_models,
            config=config,
            rng=torch.Generator().manual_seed(0),
        )
        return {"wall_s": time.perf_counter() - wall, "cpu_s": clock() - cpu}


@dataclass
class ScalingRow:
    """One ILO run: operator grid ``size``², ``batch`` slices, seconds per slice (wall, CPU)."""

    size: int
    batch: int
    steps: int
    wall_per_slice: float
    cpu_per_slice: float


def ilo_scaling(
    prior: Any = None,
    *,
    sizes: Sequence[int] = (64, 128, 256),
    batches: Sequence[int] = (1, 2, 4, 8, 16),
    steps_per_round: int = 20,
    rounds: int = 4,
    num_threads: int = 1,
    source: str = "mni",
    log: Callable[[str], None] | None = None,
) -> list[ScalingRow]:
    """Seconds per slice of ILO (``rounds`` rounds of ``steps_per_round`` steps) against the
    operator's grid (``sizes`` at batch 1; the generator's image is placed on other grids by
    :class:`sgilo.pipeline.solvers.resample.GridPlacement`) and against the batch (``batches`` at
    the generator's resolution). One run per cell after an unmeasured warm-up."""
    from sgilo.pipeline.methods import load_prior
    from sgilo.pipeline.solvers.ilo import ILOConfig, ilo

    prior = load_prior(None) if prior is None else prior
    gen = prior.generator
    res = int(gen.config.resolution)
    rounds = min(rounds, gen.num_blocks)
    config = ILOConfig(steps=tuple([steps_per_round] * rounds), init="random")
    cells = [(s, 1) for s in sizes] + [
        (res, b) for b in batches if (res, b) not in [(s, 1) for s in sizes]
    ]
    rows: list[ScalingRow] = []
    with threads(num_threads):
        stats = prior.stats()
        for i, (size, batch) in enumerate([cells[0], *cells]):
            y, op = acquisition(size, batch, source=source)
            wall, cpu = time.perf_counter(), clock()
            ilo(
                y,
                op,
                generator=gen,
                latent_stats=stats,
                config=config,
                rng=torch.Generator().manual_seed(0),
            )
            wall, cpu = time.perf_counter() - wall, clock() - cpu
            if i == 0:
                continue  # warm-up
            rows.append(ScalingRow(size, batch, sum(config.steps), wall / batch, cpu / batch))
            if log:
                log(f"size {size} batch {batch}: {wall / batch:.2f} s/slice wall")
    return rows


def scaling_table(rows: Sequence[ScalingRow]) -> str:
    """The markdown table of :func:`ilo_scaling`'s rows."""
    lines = [
        "| grid | slices in batch | ILO steps | s/slice (wall) | s/slice (CPU) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size}² | {r.batch} | {r.steps} | {r.wall_per_slice:.2f} | "
            f"{r.cpu_per_slice:.2f} |"
        )
    return "\n".join(lines)


def write_scaling(
    rows: Sequence[ScalingRow],
    markdown: Path,
    plot: Path,
    *,
    command: str,
    info: dict[str, Any] | None = None,
) -> str:
    """Write the plot (seconds per slice against grid size and against batch) to ``plot`` and the
    table with the command and the machine into ``markdown``, between the markers
    :data:`BEGIN`/:data:`END` (the rest of the file is kept; the section is appended when the
    markers are absent, the file created when missing). Returns the section."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = machine() if info is None else info
    res_rows = [r for r in rows if r.batch == 1]
    batch_size = max(rows, key=lambda r: r.batch).size if rows else 0
    batch_rows = [r for r in rows if r.size == batch_size]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, subset, key, label in (
        (axes[0], res_rows, "size", "operator grid side (pixels)"),
        (axes[1], batch_rows, "batch", "slices in the batch"),
    ):
        xs = [getattr(r, key) for r in subset]
        ax.plot(xs, [r.wall_per_slice for r in subset], "o-", label="wall")
        ax.plot(xs, [r.cpu_per_slice for r in subset], "s--", label="CPU")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per slice")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    steps = rows[0].steps if rows else 0
    axes[0].set_title("batch 1")
    axes[1].set_title(f"grid {batch_size}²")
    fig.suptitle(f"ILO, {steps} steps, {info['threads']} torch thread(s)")
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=100)
    plt.close(fig)

    section = "\n".join(
        [
            BEGIN,
            f"Command: `{command}`",
            "",
            f"Machine: {info['cpu_count']} CPUs, {info['threads']} torch thread(s), "
            f"torch {info['torch']}, Python {info['python']}, {info['processor']}.",
            "",
            scaling_table(rows),
            "",
            f"![ILO seconds per slice]({_relative(plot, markdown.parent)})",
            END,
        ]
    )
    text = markdown.read_text(encoding="utf-8") if markdown.exists() else "# Speed\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text, encoding="utf-8")
    return section


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:
        return str(path)
