"""Reports: the comparison figure (PNG), a per-input reconstruction figure, and metrics tables
(Markdown, JSON).

The figure has, for each acquisition setting, a row of images (target, then each method) and a row
of absolute-error maps ``|x̂ − x|`` on a common scale (5× magnified: an error of 20 % of the
target's maximum is white). All magnitudes are shown on the target's grey scale ``[0, max x]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ERROR_GAIN = 5.0


@dataclass(frozen=True)
class MetricRow:
    """One (setting, method) result over a volume of slices."""

    setting: str
    method: str
    psnr: float
    ssim: float
    nmse: float
    seconds_per_slice: float


def comparison_figure(
    panels: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]],
    path: str | Path,
    *,
    slice_index: int = 0,
    title: str = "",
) -> Path:
    """Write the comparison PNG.

    ``panels``: setting label → (target ``(S, H, W)``, {method: magnitude ``(S, H, W)``}); the
    slice ``slice_index`` of each volume is shown. Methods missing for a setting leave an empty
    cell.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(m for _, recons in panels.values() for m in recons))
    cols, rows = 1 + len(methods), 2 * len(panels)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (label, (target, recons)) in enumerate(panels.items()):
        gt = target[slice_index]
        vmax = float(target.max()) or 1.0
        top, bottom = axes[2 * r], axes[2 * r + 1]
        top[0].imshow(gt, cmap="gray", vmin=0, vmax=vmax)
        top[0].set_title("target", fontsize=8)
        top[0].text(
            -0.08,
            0.5,
            label,
            transform=top[0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
        for c, method in enumerate(methods, start=1):
            if method not in recons:
                continue
            img = recons[method][slice_index]
            top[c].imshow(img, cmap="gray", vmin=0, vmax=vmax)
            top[c].set_title(method, fontsize=8)
            err = np.abs(img - gt)
            bottom[c].imshow(err, cmap="inferno", vmin=0, vmax=vmax / ERROR_GAIN)
            bottom[c].set_title(f"|error| ×{ERROR_GAIN:g}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reconstruction_figure(
    panels: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    title: str = "",
    reference: str | None = None,
) -> Path:
    """Write a one-row PNG of 2-D images ``panels`` (label → float ``(H, W)``).

    Magnitudes share the grey scale ``[0, max]`` of ``panels[reference]`` (else of the first
    panel); a label starting with "std" or "|error|" gets its own ``inferno`` scale.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(panels)
    scale_from = panels[reference] if reference in panels else panels[labels[0]]
    vmax = float(np.max(scale_from)) or 1.0
    fig, axes = plt.subplots(1, len(labels), figsize=(2.4 * len(labels), 2.7), squeeze=False)
    for ax, label in zip(axes[0], labels, strict=True):
        img = panels[label]
        own = label.startswith(("std", "|error|"))
        ax.imshow(
            img,
            cmap="inferno" if own else "gray",
            vmin=0,
            vmax=(float(np.max(img)) or 1.0) if own else vmax,
        )
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def metrics_markdown(rows: Sequence[MetricRow], *, note: str = "") -> str:
    """A Markdown table, one line per (setting, method), best PSNR per setting in bold."""
    lines = [
        "| setting | method | PSNR (dB) | SSIM | NMSE | s / slice |",
        "|---|---|---:|---:|---:|---:|",
    ]
    best = {}
    for row in rows:
        best[row.setting] = max(best.get(row.setting, -np.inf), row.psnr)
    for row in rows:
        psnr = f"{row.psnr:.2f}"
        if row.psnr == best[row.setting]:
            psnr = f"**{psnr}**"
        lines.append(
            f"| {row.setting} | {row.method} | {psnr} | {row.ssim:.4f} | {row.nmse:.4f} | "
            f"{row.seconds_per_slice:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    return (note.rstrip() + "\n\n" + text) if note else text


def metrics_json(rows: Sequence[MetricRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
