"""`sgilo demo` as a Prefect flow: thin tasks, each one call into :mod:`sgilo.pipeline.demo`.

Tasks pass file paths (small, picklable); progress is logged as each reconstruction finishes.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from sgilo.pipeline import demo as steps
from sgilo.pipeline.experiment import Setting


@task(name="prepare-slices")
def prepare_slices(config: steps.DemoConfig, work: Path) -> Path:
    return steps.prepare_slices(config, work)


@task(name="simulate")
def simulate(config: steps.DemoConfig, setting: Setting, slices: Path, work: Path) -> Path:
    return steps.simulate(config, setting, slices, work)


@task(name="reconstruct")
def reconstruct(acq: Path, method: str, work: Path, config: steps.DemoConfig) -> Path:
    return steps.reconstruct(acq, method, work, config)


@task(name="write-kspace-file")
def write_kspace_file(acq: Path, setting: Setting, out: Path) -> Path:
    return steps.write_kspace_file(acq, setting, out)


@task(name="report")
def report(config: steps.DemoConfig, results: list, out: Path) -> str:
    return steps.write_report(config, results, out)


@flow(name="sgilo-demo", log_prints=True)
def demo_flow(out_dir: str = "sgilo-demo", config: steps.DemoConfig | None = None) -> str:
    """Simulate 4×/8× single-coil and 8-coil acquisitions of MNI validation slices, reconstruct
    with the classical methods (and, when a prior is installed, CSGM/ILO/SGILO on single-coil
    8× with short schedules), and write comparison.png, uncertainty_*.png (SGILO's std),
    metrics.md/json and config.json; the acquisitions of ``export_settings`` also go, as
    fastMRI k-space files (inputs/), through the batch flow into NIfTI, DICOM, HDF5 and PNG
    (exports/)."""
    logger = get_run_logger()
    config = config or steps.DemoConfig()
    out = Path(out_dir).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    slices = prepare_slices(config, work)
    settings = config.setting_objects()
    missing = steps.prior_available(config) if config.generative else None
    if missing:
        logger.info("generative methods skipped: %s", missing)
    with_prior = bool(config.generative) and missing is None
    total = sum(len(config.methods_for(s, with_prior)) for s in settings)
    done, results = 0, []
    for setting in settings:
        acq = simulate(config, setting, slices, work)
        recs = {}
        for method in config.methods_for(setting, with_prior):
            recs[method] = reconstruct(acq, method, work, config)
            done += 1
            logger.info("[%d/%d] %s: %s done", done, total, setting.label, method)
        results.append((setting, acq, recs))
    table = report(config, results, out)
    exported = [
        write_kspace_file(acq, setting, out / "inputs")
        for setting, acq, _ in results
        if setting.label in config.export_settings
    ]
    if exported:
        from sgilo.flows.batch import batch_flow

        batch = batch_flow(
            [str(p) for p in exported],
            str(out / "exports"),
            {"method": config.export_method, "recon": {"formats": ["h5", "nifti", "dicom", "png"]}},
        )
        logger.info("exports (NIfTI, DICOM, HDF5, PNG): %s", batch["summary"])
    logger.info(
        "wrote %s",
        ", ".join(
            str(out / n) for n in ("comparison.png", "metrics.md", "metrics.json", "config.json")
        ),
    )
    return table
