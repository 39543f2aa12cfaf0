"""The report of ``sgilo bench``: BENCHMARKS.md (per-setting tables and the generative-against-
classical summary), benchmarks.json and the PSNR and example figures, from the rows that
:func:`sgilo.pipeline.research.bench.run_bench` measured."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

from sgilo.pipeline.methods import GENERATIVE
from sgilo.pipeline.research.bench import REFERENCE, BenchConfig, BenchRow


def machine_description(threads: int) -> str:
    """CPU model, core count and torch threads, for the table's caption."""

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {threads}"


def markdown_tables(
    rows: list[BenchRow], config: BenchConfig, command: str, total: int | None = None
) -> str:
    """The Markdown report: the command, the conditions, one table per setting (marked partial
    while fewer than ``total`` cells are done)."""
    partial = total is not None and len(rows) < total
    lines = [
        "# Benchmarks",
        "",
        *(
            [
                f"**Partial: {len(rows)} of {total} cells measured so far.** Re-running the "
                "command below measures the rest (finished cells are reused).",
                "",
            ]
            if partial
            else []
        ),
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')} "
        f"({machine_description(config.threads)}; code {_revision()}).",
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
        + (f" on the prior `{config.model or 'brain-t1-128'}`." if _any_generative(rows) else ".")
        + (
            f" `{REFERENCE}` is BART's `pics` (ℓ1-wavelet, an implementation independent of this "
            "project, given the same ESPIRiT maps; λ chosen on training slices): a check on the "
            "classical rows."
            if any(r.method == REFERENCE for r in rows)
            else ""
        ),
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
    lines += summary_lines(rows)
    return "\n".join(lines)


def summary_lines(rows: list[BenchRow]) -> list[str]:
    """The generative methods against the best of the project's classical methods, per setting:
    ``SGILO − best classical`` (dB) and the PSNR order of CSGM, ILO and SGILO (the papers' claim
    is SGILO > ILO > CSGM). Empty when no generative method ran."""
    if not _any_generative(rows):
        return []
    classical = {"zero-filled", "cg-sense", "l1-wavelet", "tv"}
    lines = [
        "## Summary: generative against classical",
        "",
        "| setting | best classical (dB) | CSGM − best | ILO − best | SGILO − best | "
        "PSNR order of the generative methods |",
        "|---|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(r.setting for r in rows):
        here = {r.method: r.psnr for r in rows if r.setting == label}
        base = [(v, m) for m, v in here.items() if m in classical]
        if not base:
            continue
        best, best_method = max(base)
        gaps = [f"{here[m] - best:+.2f}" if m in here else "—" for m in ("csgm", "ilo", "sgilo")]
        order = " > ".join(
            sorted((m for m in GENERATIVE if m in here), key=lambda m: -here[m])
        ).upper()
        lines.append(
            f"| {label} | {best_method} {best:.2f} | " + " | ".join(gaps) + f" | {order} |"
        )
    lines.append("")
    return lines


def _revision() -> str:
    from sgilo.pipeline.provenance import git_revision

    return f"`{git_revision()[:12]}`"


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
    handles: dict = {}  # every method once, whichever panel drew it (cg-sense: multi-coil only)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    axes[0][-1].legend(list(handles.values()), list(handles), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(
    rows: list[BenchRow],
    panels: dict,
    config: BenchConfig,
    out_dir: Path,
    command: str,
    total: int | None = None,
) -> Path:
    """``BENCHMARKS.md``, ``benchmarks.json``, ``images/bench_psnr.png`` and
    ``images/bench_examples.png`` under ``out_dir``; returns the Markdown path. ``total``: the
    number of cells of the whole run (the report says partial while fewer rows are given)."""
    from sgilo.pipeline.report import comparison_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    plot = psnr_plot(rows, out_dir / "images" / "bench_psnr.png")
    examples = comparison_figure(
        panels,
        out_dir / "images" / "bench_examples.png",
        slice_index=0,
        title="sgilo bench: first validation slice, reconstructions and |error| (×5)",
    )
    text = markdown_tables(rows, config, command, total)
    text += (
        f"\n![PSNR against acceleration]({plot.relative_to(out_dir)})\n\n"
        f"![Example reconstructions]({examples.relative_to(out_dir)})\n"
    )
    md = out_dir / "BENCHMARKS.md"
    md.write_text(text)
    (out_dir / "benchmarks.json").write_text(
        json.dumps(
            {
                "command": command,
                "config": config.model_dump(),
                "complete": total is None or len(rows) >= total,
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n"
    )
    return md
