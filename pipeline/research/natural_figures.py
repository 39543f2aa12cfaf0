"""The natural-suite figures (PNG): PSNR per task as grouped bars, and an example grid.

Both carry the command that made them as a footnote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _footnote(fig, command: str) -> None:
    fig.text(0.005, 0.005, f"made by: {command}", fontsize=6, color="0.35", ha="left", va="bottom")


def psnr_bars(rows: Sequence, path: Path, command: str, order: Sequence[str] | None = None) -> Path:
    """Grouped bars: for each task (x axis) one bar per method that ran on it, methods in
    ``order`` (default: first appearance) with one colour each.

    ``rows``: objects with ``task``, ``method`` and ``psnr`` (:class:`NaturalRow`)."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(r.task for r in rows))
    ran = set(r.method for r in rows)
    methods = [m for m in dict.fromkeys([*(order or []), *(r.method for r in rows)]) if m in ran]
    psnr = {(r.task, r.method): r.psnr for r in rows}
    colours = {m: f"C{j % 10}" for j, m in enumerate(methods)}
    fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2.5, 3.8))
    for i, task in enumerate(tasks):
        present = [m for m in methods if (task, m) in psnr]  # centred on the task's tick
        width = 0.8 / max(1, len(present))
        for j, method in enumerate(present):
            x = i + (j - (len(present) - 1) / 2) * width
            ax.bar(x, psnr[(task, method)], width=width, color=colours[method])
    for method, colour in colours.items():
        ax.bar([np.nan], [np.nan], color=colour, label=method)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("PSNR (dB)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _footnote(fig, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def example_grid(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray | None, Mapping[str, np.ndarray]]],
    path: Path,
    command: str,
    index: int = 0,
) -> Path:
    """One row per task: ground truth, the measurement as an image (blank where it is not one,
    e.g. compressed sensing), then the methods that ran on the task, each with its PSNR; image
    ``index`` of the batch.

    ``panels``: task → (truth ``(B, 3, H, W)``, measurement ``(B, 3, H, W)`` or None,
    {method: ``(B, 3, H, W)``}), values in [0, 1]."""
    plt = _pyplot()
    cols = 2 + max((len(recons) for _, _, recons in panels.values()), default=0)
    nrows = len(panels)
    fig, axes = plt.subplots(nrows, cols, figsize=(1.5 * cols, 1.6 * nrows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)

    def show(ax, img: np.ndarray, title: str) -> None:
        ax.imshow(np.clip(np.moveaxis(img, 0, -1), 0.0, 1.0), interpolation="nearest")
        ax.set_title(title, fontsize=7)

    for r, (label, (truth, measured, recons)) in enumerate(panels.items()):
        gt = truth[index]
        show(axes[r][0], gt, "ground truth")
        axes[r][0].set_ylabel(label, fontsize=8)
        if measured is not None:
            show(axes[r][1], measured[index], "measurement")
        else:
            axes[r][1].text(0.5, 0.5, "(not an image)", ha="center", va="center", fontsize=7)
        for c, (method, recon) in enumerate(recons.items(), start=2):
            pred = recon[index].astype(np.float64)
            mse = float(np.mean((pred - gt) ** 2))
            show(axes[r][c], pred, f"{method} {10 * np.log10(1 / max(mse, 1e-20)):.1f} dB")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    _footnote(fig, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
