"""The demo's steps: simulate acquisitions of MNI validation slices, reconstruct, report.

Each step reads and writes small files under ``<out>/work`` and returns their paths, so the Prefect
flow in :mod:`sgilo.flows.demo` passes references, not arrays, between tasks. Multi-coil methods use
ESPIRiT maps estimated from each acquisition's calibration region (as for real data without maps),
never the simulated true maps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sgilo.pipeline.experiment import (
    DEFAULT_SETTINGS,
    Setting,
    load_acquisition,
    load_refit,
    make_operator,
    save_acquisition,
)
from sgilo.pipeline.metrics import evaluate
from sgilo.pipeline.report import (
    MetricRow,
    comparison_figure,
    metrics_json,
    metrics_markdown,
    reconstruction_figure,
)


class DemoConfig(BaseModel):
    """Everything that determines the demo's outputs (written to ``config.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_slices: int = Field(4, ge=1, le=16, description="validation slices (evenly spaced)")
    size: int = Field(128, ge=32, le=256)
    seed: int = 0
    snr_db: float = 30.0
    settings: list[tuple[int | None, float, float]] = Field(
        default_factory=lambda: [
            (s.coils, s.acceleration, s.center_fraction) for s in DEFAULT_SETTINGS
        ],
        description="(coils or None for single-coil, acceleration, centre fraction)",
    )
    methods: list[str] = Field(
        default_factory=lambda: ["zero-filled", "cg-sense", "l1-wavelet", "tv"]
    )
    generative: list[str] = Field(
        default_factory=lambda: ["csgm", "ilo", "sgilo", "auto"],
        description="generative methods (and auto, which chooses per slice between sgilo and "
        "the classical ones), run when a prior is installed",
    )
    generative_settings: list[str] = Field(
        default_factory=lambda: ["single-coil 8x"],
        description="the settings (by label) the generative methods run on",
    )
    generative_options: dict[str, dict] = Field(
        default_factory=lambda: {
            "csgm": {"steps": 100, "restarts": 2},
            "ilo": {"steps": [100, 70, 35, 35]},
            "sgilo": {"steps": [100, 70, 35, 35]},
            "auto": {"generative_settings": {"steps": [100, 70, 35, 35]}},
        },
        description="the demo's short schedules (about a third of the defaults' steps; "
        "`sgilo bench` runs the defaults)",
    )
    model: str | None = Field(None, description="prior name or generator path (None: default)")
    export_settings: list[str] = Field(
        default_factory=lambda: ["8-coil 4x"],
        description="settings whose acquisitions are also written as fastMRI k-space files and "
        "reconstructed through the batch flow into NIfTI, DICOM, HDF5 and PNG (exports/)",
    )
    export_method: str = Field("cg-sense", description="the method of the exported series")
    samples: int = Field(2, ge=1, description="SGILO chains (≥ 2: a per-pixel std map)")

    def setting_objects(self) -> list[Setting]:
        return [Setting(c, r, f) for c, r, f in self.settings]

    def methods_for(self, setting: Setting, with_prior: bool = False) -> list[str]:
        """CG-SENSE is a multi-coil method; the classical ones run on every setting, the
        generative ones (``with_prior``) on the settings named in ``generative_settings``."""
        methods = [m for m in self.methods if m != "cg-sense" or setting.coils is not None]
        if with_prior and setting.label in self.generative_settings:
            methods += [m for m in self.generative if m not in methods]
        return methods


def prior_available(config: DemoConfig) -> str | None:
    """``None`` when the demo's prior loads by name/path, else the one-line reason."""
    from sgilo.models.registry import resolve_model

    try:
        resolve_model(config.model)
    except ValueError as exc:
        return str(exc)
    return None


def _slug(setting: Setting) -> str:
    return setting.label.replace(" ", "_")


def prepare_slices(config: DemoConfig, work: Path) -> Path:
    """Pick ``num_slices`` evenly spaced MNI validation slices; writes ``slices.npz``."""
    from sgilo.pipeline.data.mni import mni_slice_z, mni_slices

    work.mkdir(parents=True, exist_ok=True)
    slices = mni_slices("validation", size=config.size)
    z = np.asarray(mni_slice_z("validation"))
    pick = np.linspace(0, len(slices) - 1, config.num_slices).round().astype(int)
    path = work / "slices.npz"
    np.savez(path, target=slices[pick], z=z[pick])
    return path


def simulate(config: DemoConfig, setting: Setting, slices_path: Path, work: Path) -> Path:
    """Simulate one setting's acquisition (and ESPIRiT maps for multi-coil); writes an npz."""
    target = np.load(slices_path)["target"]
    acq = setting.simulate(target, snr_db=config.snr_db, seed=config.seed)
    path = work / f"acq_{_slug(setting)}.npz"
    save_acquisition(path, acq)
    return path


def write_kspace_file(acq_path: Path, setting: Setting, out: Path) -> Path:
    """The acquisition as a fastMRI-format k-space file ``out/demo_<setting>.h5`` (undersampled
    k-space, its mask, the target as ``reconstruction_rss``; no coil maps: the reconstruction
    estimates ESPIRiT maps as for a real scan)."""
    from sgilo.pipeline.io.fastmri import write_kspace

    acq, _ = load_acquisition(acq_path)
    kspace = acq.kspace if acq.multicoil else acq.kspace[:, 0]
    out.mkdir(parents=True, exist_ok=True)
    return write_kspace(
        out / f"demo_{_slug(setting)}.h5",
        kspace,
        mask=acq.mask,
        target=acq.target,
        attrs={"source": "sgilo demo: simulated from MNI152 validation slices"},
    )


def reconstruct(acq_path: Path, method: str, work: Path, config: DemoConfig | None = None) -> Path:
    """Run one method on one acquisition; writes the magnitude, timing and (SGILO with K ≥ 2
    chains) the per-pixel std to an npz."""
    from sgilo.pipeline.methods import NEEDS_PRIOR, load_prior, solve

    config = config or DemoConfig()
    acq, espirit = load_acquisition(acq_path)
    maps = None if espirit is None else torch.from_numpy(espirit)
    y, op = make_operator(acq, maps=maps, refit=load_refit(acq_path))
    prior = load_prior(config.model) if method in NEEDS_PRIOR else None
    if prior is not None:
        prior.stats()
    start = time.perf_counter()
    samples = config.samples if method in ("sgilo", "auto") else 1
    options = config.generative_options.get(method, {}) if prior is not None else {}
    blocks = prior.generator.num_blocks if prior is not None else 0
    if "steps" in options and method in ("ilo", "sgilo"):
        options = {**options, "steps": tuple(options["steps"])[:blocks]}
    inner = options.get("generative_settings", {})
    if "steps" in inner and method == "auto":
        inner = {**inner, "steps": tuple(inner["steps"])[:blocks]}
        options = {**options, "generative_settings": inner}
    result = solve(
        y, op, method, prior=prior, samples=samples, seed=config.seed, solver_options=options
    )
    seconds = time.perf_counter() - start
    path = work / f"rec_{acq_path.stem.removeprefix('acq_')}_{method}.npz"
    extra = {}
    std = getattr(result, "std", None)
    if std is not None and samples > 1:
        extra["std"] = std.detach().cpu().numpy()
    np.savez(path, magnitude=result.magnitude, seconds=seconds, **extra)
    return path


def write_report(
    config: DemoConfig, results: list[tuple[Setting, Path, dict[str, Path]]], out: Path
) -> str:
    """Metrics (Markdown + JSON), the comparison figure and the config; returns the table."""
    rows, panels, uncertainty = [], {}, {}
    for setting, acq_path, recs in results:
        target = np.load(acq_path)["target"]
        mags = {}
        for method, rec_path in recs.items():
            d = np.load(rec_path)
            mags[method] = d["magnitude"]
            if "std" in d:
                uncertainty[setting.label] = (target[0], d["magnitude"][0], d["std"][0])
            m = evaluate(target, d["magnitude"])
            rows.append(
                MetricRow(
                    setting.label,
                    method,
                    m["psnr"],
                    m["ssim"],
                    m["nmse"],
                    float(d["seconds"]) / len(target),
                )
            )
        panels[setting.label] = (target, mags)
    note = (
        f"MNI152 validation slices: {config.num_slices} at {config.size}², simulated with a smooth "
        f"random phase, birdcage coils, SNR {config.snr_db:g} dB, fastMRI random column masks "
        f"(seed {config.seed}); multi-coil methods use ESPIRiT maps. PSNR over the volume "
        "(data range = volume max), SSIM per slice averaged, NMSE over the volume."
    )
    table = metrics_markdown(rows, note=note)
    (out / "metrics.md").write_text(table)
    (out / "metrics.json").write_text(metrics_json(rows))
    (out / "config.json").write_text(json.dumps(config.model_dump(), indent=2))
    comparison_figure(
        panels,
        out / "comparison.png",
        slice_index=0,
        title="sgilo demo: MNI152 validation slice, reconstructions and |error|",
    )
    for label, (gt, mean, std) in uncertainty.items():
        reconstruction_figure(
            {
                "target": gt,
                f"SGILO mean of {config.samples}": mean,
                "|error|": np.abs(mean - gt),
                "std over chains": std,
            },
            out / f"uncertainty_{label.replace(' ', '_')}.png",
            title=f"SGILO posterior spread, {label} (error and std on their own scales)",
            reference="target",
        )
    return table
