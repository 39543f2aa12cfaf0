"""Choosing the classical methods' relative λ on MNI *training* slices.

``sgilo tune-classical`` simulates the benchmark's settings (single-coil, and 8-coil with ESPIRiT
maps; 4× with an 8 % centre and 8× with 4 %) on training slices only, sweeps ``λ_rel`` on a log
grid for ℓ1-wavelet and TV (and the number of CG-SENSE iterations, its regulariser; and BART's
``pics`` λ when the ``bart`` command is installed, :mod:`sgilo.pipeline.research.bart`), and reports
the volume PSNR of each value beside zero-filling. For each
method and kind of data (single- or multi-coil) the value with the best PSNR averaged over the two
accelerations becomes the default in :mod:`sgilo.pipeline.solvers.classical`. Validation slices, on
which the demo and benchmarks score, are never used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sgilo.pipeline.experiment import Setting, espirit_operator
from sgilo.pipeline.metrics import psnr
from sgilo.pipeline.solvers.classical import CLASSICAL

#: method → (the parameter swept, its values)
GRID: dict[str, tuple[str, tuple[float, ...]]] = {
    "l1-wavelet": ("lam", (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)),
    "tv": ("lam", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    "cg-sense": ("iterations", (3, 5, 10, 20, 40, 80)),
    # BART's pics (pipeline/research/bart.py; swept only when the bart command is installed)
    "bart-pics": ("lam", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)),
}


@dataclass(frozen=True)
class TuningRow:
    """PSNR of ``method`` on ``setting`` with its swept parameter (λ_rel or iterations) at
    ``lam``."""

    method: str
    setting: str
    lam: float
    psnr: float


def sweep(
    slices: np.ndarray,
    settings: list[Setting],
    methods: tuple[str, ...] = ("cg-sense", "l1-wavelet", "tv"),
    grid: dict[str, tuple[str, tuple[float, ...]]] = GRID,
    seed: int = 1,
    progress: bool = True,
) -> list[TuningRow]:
    """PSNR of zero-filling and of every (method, setting, λ_rel) on ``slices`` (``(S, H, W)``)."""
    rows = []
    for setting in settings:
        acq = setting.simulate(slices, seed=seed)
        y, op = espirit_operator(acq)
        zf = CLASSICAL["zero-filled"](y, op)
        rows.append(TuningRow("zero-filled", setting.label, 0.0, psnr(acq.target, zf.magnitude)))
        for method in methods:
            if method == "cg-sense" and setting.coils is None:
                continue
            name, values = grid[method]
            for value in values:
                if method == "bart-pics":
                    from sgilo.pipeline.research.bart import bart_pics

                    k = (y[:, None] if setting.coils is None else y).numpy()
                    maps = None if setting.coils is None else op.maps.numpy()
                    magnitude = np.abs(bart_pics(k, maps, lam=value))
                else:
                    magnitude = CLASSICAL[method](y, op, **{name: value}).magnitude
                quality = psnr(acq.target, magnitude)
                rows.append(TuningRow(method, setting.label, value, quality))
                if progress:
                    print(f"  {setting.label:<16} {method:<11} {name}={value:<7g} {quality:.2f} dB")
    return rows


def coil_kind(setting_label: str) -> str:
    return "single-coil" if setting_label.startswith("single-coil") else "multi-coil"


def best_lambda(rows: list[TuningRow]) -> dict[tuple[str, str], float]:
    """Per (method, single-/multi-coil), the λ_rel with the best PSNR averaged over settings."""
    best = {}
    tuned = [r for r in rows if r.method != "zero-filled"]
    for method, kind in sorted({(r.method, coil_kind(r.setting)) for r in tuned}):
        group = [r for r in tuned if r.method == method and coil_kind(r.setting) == kind]
        lams = sorted({r.lam for r in group})
        means = [np.mean([r.psnr for r in group if r.lam == lam]) for lam in lams]
        best[(method, kind)] = lams[int(np.argmax(means))]
    return best


def markdown_table(rows: list[TuningRow]) -> str:
    """Zero-filled PSNR per setting, then per method a table of λ_rel (down) × setting (across)."""
    zf = [r for r in rows if r.method == "zero-filled"]
    out = [
        "\n### zero-filled (reference)\n",
        "| " + " | ".join(r.setting for r in zf) + " |",
        "|---" * len(zf) + "|",
        "| " + " | ".join(f"{r.psnr:.2f}" for r in zf) + " |",
    ]
    tuned = [r for r in rows if r.method != "zero-filled"]
    for method in sorted({r.method for r in tuned}):
        settings = list(dict.fromkeys(r.setting for r in tuned if r.method == method))
        lams = sorted({r.lam for r in tuned if r.method == method})
        out.append(f"\n### {method}\n")
        out.append(f"| {GRID[method][0]} | " + " | ".join(settings) + " |")
        out.append("|---" * (len(settings) + 1) + "|")
        for lam in lams:
            vals = [
                next(r.psnr for r in tuned if (r.method, r.setting, r.lam) == (method, s, lam))
                for s in settings
            ]
            out.append(f"| {lam:g} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return "\n".join(out) + "\n"


def run(
    num_slices: int = 12,
    size: int = 128,
    only: tuple[str, ...] | None = None,
    values: tuple[float, ...] | None = None,
) -> tuple[list[TuningRow], dict[tuple[str, str], float]]:
    """Sweep on ``num_slices`` evenly spaced MNI training slices; returns rows and the best λs.
    ``only``: sweep just these methods (default: CG-SENSE, ℓ1-wavelet, TV and, when installed,
    BART's pics); ``values``: these values of every swept method's parameter instead of
    :data:`GRID`'s."""
    from sgilo.pipeline.data.mni import mni_slices
    from sgilo.pipeline.experiment import DEFAULT_SETTINGS
    from sgilo.pipeline.research.bart import bart_available

    torch.set_num_threads(2)
    train = mni_slices("train", size=size)
    pick = np.linspace(0, len(train) - 1, num_slices).round().astype(int)
    methods = ("cg-sense", "l1-wavelet", "tv") + (("bart-pics",) if bart_available() else ())
    if only is not None:
        unknown = sorted(set(only) - set(methods))
        if unknown:
            raise ValueError(f"cannot tune {', '.join(unknown)}; choose from {', '.join(methods)}")
        methods = tuple(m for m in methods if m in only)
    grid = GRID
    if values is not None:  # CG-SENSE's parameter is a whole number of iterations
        grid = {
            m: (name, tuple(int(v) if name == "iterations" else v for v in values))
            for m, (name, _) in GRID.items()
        }
    rows = sweep(train[pick], DEFAULT_SETTINGS, methods=methods, grid=grid)
    return rows, best_lambda(rows)
