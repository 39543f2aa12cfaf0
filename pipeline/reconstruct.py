"""Reconstruct a k-space study with a named method, and the `sgilo reconstruct` file workflow.

``reconstruct_study(study, method)`` builds the forward model from the study (single-coil
``M ⊙ F``; multi-coil SENSE with the file's coil maps, or ESPIRiT maps estimated from the
calibration region when the file has none), runs the solver on all slices at once, and returns the
magnitude ``(slices, H, W)`` on the k-space grid. ``reconstruct_file`` adds reading any
accepted input (:mod:`sgilo.pipeline.io.ingest`), retrospective undersampling and the all-or-nothing
export (:mod:`sgilo.pipeline.export`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.coil_map_check import edge_warning
from sgilo.pipeline.coil_map_refine import MapCheck, checked_maps
from sgilo.pipeline.io.types import InputError, KSpaceStudy
from sgilo.pipeline.methods import (  # noqa: F401  (re-exported: the public names of this module)
    GENERATIVE,
    METHODS,
    NEEDS_PRIOR,
    Prior,
    load_prior,
    load_score_models,
    solve,
)
from sgilo.pipeline.prior_fit import prior_warnings
from sgilo.pipeline.solvers.base import Progress
from sgilo.pipeline.solvers.diagnostics import (
    CSGMDiagnostics,
    Diagnostics,
    ILODiagnostics,
    SGILODiagnostics,
    diagnostics_record,
)
from sgilo.pipeline.solvers.known_noise import known_noise_sigma
from sgilo.pipeline.split_maps import refinable_operator


@dataclass
class StudyReconstruction:
    """The output of one study: float32 magnitude ``(slices, H, W)`` and how it was made:
    the solver's typed ``diagnostics`` (:class:`sgilo.pipeline.solvers.base.ReconResult`), the
    source of the coil maps (``maps``: "file", "espirit" or "none"), the metrics against the
    file's reference image, SGILO's per-pixel std over its chains and, for ESPIRiT maps, the
    per-slice fraction of the phase-encode edge columns they cover and the refinement of the
    slices that reach them (``maps_check``, :class:`sgilo.pipeline.coil_map_refine.MapCheck`)."""

    name: str
    magnitude: np.ndarray
    method: str
    seconds: float
    diagnostics: Diagnostics | None = None
    metrics: dict | None = None
    std: np.ndarray | None = None
    maps: str = "none"
    noise_std: float | None = None
    maps_check: MapCheck | None = None

    def record(self) -> dict[str, Any]:
        """The diagnostics as a flat JSON-able dict (real lists;
        :func:`sgilo.pipeline.solvers.diagnostics.diagnostics_record`) plus ``maps``, for ESPIRiT
        maps ``maps_edge_fraction`` and ``maps_refined_rounds`` (per slice) and, when the input
        had a noise scan, ``noise_std`` (the study's): what ``run.json`` records per study."""
        noise = {} if self.noise_std is None else {"noise_std": self.noise_std}
        edge = {} if self.maps_check is None else self.maps_check.record()
        return {**diagnostics_record(self.diagnostics), "maps": self.maps, **edge, **noise}

    def attributes(self) -> dict[str, bool | int | float | str]:
        """:meth:`record` as scalar file attributes (HDF5 attributes, DICOM series
        descriptions): scalars as they are, lists and ``None`` as compact JSON text (an HDF5
        attribute holds no ragged or mixed list)."""
        return {
            key: value if isinstance(value, bool | int | float | str) else json.dumps(value)
            for key, value in self.record().items()
        }


#: seconds between two progress lines of the coil-map estimation
MAPS_PROGRESS_EVERY_S = 10.0


def _maps_progress(
    log: Callable[[str], None] | None, slices: int, coils: int
) -> Callable[[int, int], None] | None:
    """A line before ESPIRiT starts (it takes 0.1–12 s per slice, more with more coils and
    pixels), then, after a slice other than the last, a line when :data:`MAPS_PROGRESS_EVERY_S`
    seconds have passed since the previous one; ``None`` without ``log``."""
    if log is None:
        return None
    log(f"estimating coil maps (ESPIRiT) for {slices} slice(s) of {coils} coils")
    last = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last
        if done < total and time.monotonic() - last >= MAPS_PROGRESS_EVERY_S:
            last = time.monotonic()
            log(f"coil maps: {done}/{total} slices")

    return progress


def study_operator(
    study: KSpaceStudy, *, need_maps: bool = True, log: Callable[[str], None] | None = None
) -> tuple[torch.Tensor, LinearOperator, str, MapCheck | None]:
    """``(y, op, maps_source, maps_check)`` for a study; ``y`` complex64 ``(S, H, W)``
    single-coil or ``(S, C, H, W)`` multi-coil. ``maps_source`` is "file", "espirit" or "none";
    ESPIRiT maps of slices whose object reaches the phase-encode edges are refined by a joint
    image-and-map fit (:func:`sgilo.pipeline.coil_map_refine.checked_maps`; ``log`` gets a line
    before it starts), and ``maps_check`` says where (``None`` unless the maps were estimated)."""
    mask = torch.from_numpy(study.sampling_mask().astype(np.float32))
    kspace = torch.from_numpy(study.kspace)
    if not study.multicoil:
        return kspace[:, 0], SingleCoilMRI(mask), "none", None
    check = None
    if study.maps is not None:
        maps, source = torch.from_numpy(study.maps), "file"
    elif need_maps:
        from sgilo.pipeline.espirit import estimate_maps

        progress = _maps_progress(log, len(study.kspace), study.num_coils)
        try:
            mask_np = study.mask if study.mask is not None else study.sampling_mask()
            if study.calibration is not None:  # a reference scan: its own calibration region
                maps_np = estimate_maps(study.calibration, study.calibration_mask, progress)
            else:
                maps_np = estimate_maps(study.kspace, mask_np, progress)
        except ValueError as exc:
            raise InputError(f"{study.source.name}: cannot estimate coil maps: {exc}") from exc
        refined, check = checked_maps(study.kspace, study.sampling_mask(), maps_np, log=log)
        op = refinable_operator(torch.from_numpy(refined), mask, maps_np, check.refined_rounds)
        return kspace, op, "espirit", check
    else:
        maps = torch.ones(study.kspace.shape[1:], dtype=torch.complex64) / study.num_coils**0.5
        source = "none"
    return kspace, MultiCoilMRI(maps, mask), source, check


def reconstruct_study(
    study: KSpaceStudy,
    method: str,
    *,
    seed: int = 0,
    callback: Progress | None = None,
    solver_options: dict | None = None,
    prior: Prior | None = None,
    samples: int = 1,
    log: Callable[[str], None] | None = None,
) -> StudyReconstruction:
    """Reconstruct every slice of ``study`` with ``method`` (one of :data:`METHODS`); the
    generative methods need ``prior``; ``log`` gets progress lines of the coil-map estimate. A
    study with a noise scan (``noise_std``) gives the solvers its noise level
    (:mod:`sgilo.pipeline.solvers.known_noise`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method in NEEDS_PRIOR and prior is None:
        raise ValueError(f"{method} needs a generative prior (--model PATH)")
    start = time.perf_counter()
    y, op, maps_source, maps_check = study_operator(
        study, need_maps=method != "zero-filled", log=log
    )
    with known_noise_sigma(study.noise_std):
        options = {"solver_options": solver_options, "callback": callback}
        result = solve(y, op, method, prior=prior, samples=samples, seed=seed, **options)
    magnitude = result.magnitude
    metrics = None
    if study.target is not None and study.target.shape == magnitude.shape:
        from sgilo.pipeline.metrics import evaluate

        metrics = evaluate(study.target, magnitude)
    std = getattr(result, "std", None)
    return StudyReconstruction(
        study.name,
        magnitude,
        method,
        time.perf_counter() - start,
        result.diagnostics,
        metrics,
        None if std is None or samples < 2 else std.detach().cpu().numpy(),
        maps_source,
        study.noise_std,
        maps_check,
    )


@dataclass
class FileResult:
    """What ``reconstruct_file`` did for one input: the files it wrote and its figures.

    ``outputs`` lists every file and folder written (per study: the fastMRI-format HDF5 first,
    then NIfTI, DICOM folders, PNG); ``metrics`` is set when the input carried a reference image
    (slice-weighted mean over the series of a multi-series DICOM folder); ``diagnostics`` has
    one :meth:`StudyReconstruction.record` per study, in the order of the studies.
    """

    name: str
    source: Path
    method: str
    outputs: list[Path]
    seconds: float
    num_slices: int
    metrics: dict | None = None
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


def reconstruct_file(
    path: str | Path,
    out_dir: str | Path,
    method: str,
    *,
    acceleration: float | None = None,
    center_fraction: float | None = None,
    seed: int | None = None,
    mask_kind: str = "random",
    callback: Progress | None = None,
    log: Callable[[str], None] = lambda message: None,
    prior: Prior | None = None,
    samples: int = 1,
    formats: tuple[str, ...] | None = None,
    anonymize: bool = False,
    max_input_bytes: int | str | None = None,
    max_input_voxels: int | str | None = None,
    claimed: dict[str, str] | None = None,
    solver_options: dict | None = None,
    volumes: str | None = None,
) -> FileResult:
    """Read an input (fastMRI or ISMRMRD HDF5, DICOM file or folder, NIfTI; see
    :func:`sgilo.pipeline.io.ingest.read_input`), undersample it if asked, reconstruct every study
    in it, and write the outputs into ``out_dir``.

    ``formats`` (from :data:`sgilo.pipeline.export.OUTPUT_FORMATS`): ``None`` writes ``h5`` plus the
    input's own image format (NIfTI or DICOM) for image inputs. HDF5 inputs always get
    ``out_dir/<input file name>`` (the fastMRI submission file); other inputs get
    ``out_dir/<stem>.h5`` when ``h5`` is asked for, ``<stem>`` being the study name made safe
    (:func:`sgilo.pipeline.io.dicom_write.safe_file_stem`; a DICOM folder with several series
    has one study, and one set of outputs, per series). ``anonymize`` applies to DICOM outputs.

    An ISMRMRD input with several volumes (contrasts, phases, repetitions, sets) gives one study
    per volume, named ``<stem>_<counters>`` (``raw_r1``), each with its own outputs
    (``<study name>.h5`` instead of the input file name).

    ``max_input_bytes`` / ``max_input_voxels`` override the input limits
    (:mod:`sgilo.pipeline.io.limits`; ``None``: the environment's or the defaults); the input is
    checked against them before anything is read. ``claimed`` maps the output stems
    (lower-cased) already written in this call to the input that wrote them: a study whose
    outputs would overwrite another input's is refused before it is reconstructed, and the
    stems written here are added to it. ``solver_options`` set fields of the method's config
    (checked by :func:`sgilo.pipeline.method_settings.check_settings`; passed to
    :func:`sgilo.pipeline.methods.solve`). ``volumes`` selects ISMRMRD volumes
    (``"repetition=0,1;contrast=0"``, :func:`sgilo.pipeline.io.ismrmrd_dimensions.
    parse_selection`; ``None``: all).

    All outputs of the input are staged and committed together: on any error nothing is
    written. Raises :class:`InputError` (one line, naming the file) for a bad input.
    """
    from sgilo.pipeline.export import default_formats, export_study
    from sgilo.pipeline.io.dicom_write import safe_file_stem
    from sgilo.pipeline.io.ingest import detect_format, read_input
    from sgilo.pipeline.io.ismrmrd_dimensions import volume_selection
    from sgilo.pipeline.io.limits import input_limits, shown_name
    from sgilo.pipeline.io.staging import StagedOutputs

    path = Path(path)
    out_dir = Path(out_dir)
    with input_limits(max_input_bytes, max_input_voxels), volume_selection(volumes):
        studies = read_input(
            path,
            acceleration=acceleration,
            center_fraction=center_fraction,
            seed=seed,
            mask_kind=mask_kind,
        )
        fmt = detect_format(path)
    claimed = {} if claimed is None else claimed
    mine: list[str] = []
    hdf5_input = fmt in ("fastmri", "ismrmrd")
    if acceleration is not None:
        log(
            f"{path.name}: undersampled retrospectively, "
            f"R={acceleration:g}, centre {center_fraction:g}"
        )
    elif not any(s.is_undersampled for s in studies):
        log(f"{path.name}: fully sampled and no --acceleration given: reconstructing as is")

    seconds, metrics = 0.0, []
    diagnostics: list[dict[str, Any]] = []
    with StagedOutputs(out_dir, label=path.name) as stage:
        for study in studies:
            # an HDF5 input of one study keeps its name; ISMRMRD volumes are named by study
            single = hdf5_input and len(studies) == 1 and study.name == path.stem
            stem = safe_file_stem(path.stem if single else study.name, default="recon")
            owner = claimed.get(stem.lower())
            if owner is not None and owner != str(path):
                raise InputError(
                    f"{shown_name(path)}: its outputs ({stem}.*) would overwrite those of "
                    f"{shown_name(owner)} written earlier in this run; rename it or give it "
                    "another --out"
                )
            mine.append(stem.lower())
            h5_name = path.name if single else f"{stem}.h5"
            target = out_dir / h5_name
            if target.exists() and target.resolve() == path.resolve():
                raise InputError(
                    f"{path.name}: the output would overwrite the input; choose another --out"
                )
            chosen = tuple(formats) if formats else default_formats(study)
            if hdf5_input and "h5" not in chosen:
                chosen = ("h5", *chosen)
            recon = reconstruct_study(
                study,
                method,
                seed=seed or 0,
                callback=callback,
                prior=prior,
                samples=samples,
                solver_options=solver_options,
                log=lambda line, name=study.name: log(f"{name}: {line}"),
            )
            attrs = {
                "method": method,
                "input_format": fmt,
                **(
                    {"model": str(prior.path)}
                    if prior is not None and method in NEEDS_PRIOR
                    else {}
                ),
                "acceleration": float(study.acceleration or 1.0),
                "seconds": round(recon.seconds, 3),
                **recon.attributes(),
            }
            export_study(
                stage,
                study,
                recon,
                h5_name=h5_name,
                stem=stem,
                formats=chosen,
                anonymize=anonymize,
                attrs=attrs,
            )
            summary = (
                f"{study.name}: {method} on {study.num_slices} slice(s) in {recon.seconds:.1f} s"
            )
            if recon.metrics:
                summary += " (" + ", ".join(f"{k} {v:.4g}" for k, v in recon.metrics.items()) + ")"
            note = solver_note(recon.diagnostics)
            log(summary + (f"; {note}" if note else ""))
            for warning in prior_warnings(
                getattr(recon.diagnostics, "prior_fit", None),
                getattr(recon.diagnostics.config, "generative", method)
                if method == "auto"
                else method,
                auto=method == "auto",
                choice=getattr(recon.diagnostics, "auto_choice", None),
            ):
                log(f"{study.name}: {warning}")
            check = recon.maps_check
            warning = (
                edge_warning(check.edge_fraction, refined=check.refined_rounds) if check else None
            )
            if warning:
                log(f"{study.name}: {warning}")
            seconds += recon.seconds
            diagnostics.append(recon.record())
            if recon.metrics:
                metrics.append((study.num_slices, recon.metrics))
        outputs = stage.commit()
    claimed.update(dict.fromkeys(mine, str(path)))
    log(f"{shown_name(path)}: wrote " + ", ".join(str(o) for o in outputs))
    return FileResult(
        name=path.name,
        source=path,
        method=method,
        outputs=outputs,
        seconds=seconds,
        num_slices=sum(s.num_slices for s in studies),
        metrics=_mean_metrics(metrics),
        diagnostics=diagnostics,
    )


#: input name endings that are not part of the output stem (``.nii.gz`` before ``.nii``)
_IMAGE_SUFFIXES = (".nii.gz", ".nii")


def output_stem(path: str | Path) -> str:
    """The stem that ``reconstruct_file`` names an input's outputs by, from its path alone:
    ``scan`` for ``scan.h5``, ``scan.nii.gz`` and ``scan.dcm``, the folder's name for a DICOM
    series folder (a folder of several series adds ``_s<N>`` to it), made file-name safe. Two
    inputs of one call with equal stems (compared case-insensitively) would write the same
    outputs."""
    from sgilo.pipeline.io.dicom_write import safe_file_stem

    name = Path(path).name
    lowered = name.lower()
    ending = next((e for e in _IMAGE_SUFFIXES if lowered.endswith(e)), None)
    if ending is not None:
        stem = name[: len(name) - len(ending)]
    elif Path(path).is_dir():
        stem = name
    else:
        stem = Path(name).stem
    return safe_file_stem(stem, default="recon")


def output_clashes(paths: list[Path]) -> dict[int, str]:
    """For each input whose :func:`output_stem` an earlier input of ``paths`` has: its index →
    a one-line reason naming both. The first input with a stem keeps it; later ones are refused
    (deterministic: by position in the call)."""
    from sgilo.pipeline.io.limits import shown_name

    first: dict[str, int] = {}
    clashes: dict[int, str] = {}
    for i, p in enumerate(paths):
        key = output_stem(p).lower()
        if key in first:
            j = first[key]
            clashes[i] = (
                f"{shown_name(p)}: its outputs ({output_stem(p)}.*) would overwrite those of "
                f"input {j + 1} ({shown_name(paths[j])}, from {shown_name(Path(paths[j]).parent)}"
                "/); rename it or reconstruct it into another --out"
            )
        else:
            first[key] = i
    return clashes


#: what the summary line's "unexplained X%" is
UNEXPLAINED_NOTE = "fitted k-space the prior's image explains worse than the best classical fit"


def solver_note(diagnostics: Diagnostics | None) -> str:
    """What a generative run did, for its summary line: the Adam steps each CSGM restart or
    ILO/SGILO round ran (``steps_run``; fewer than the schedule when it stopped early), the
    spaces in which SGILO's score models took prior steps (``prior_spaces_used``), the
    prior-fit ratio (:func:`sgilo.pipeline.prior_fit.ratio_text`) and the unexplained fraction
    (:func:`sgilo.pipeline.prior_fit.unexplained_text`); for ``auto`` the method kept per slice
    and the tests that chose. Empty for the classical methods."""
    from sgilo.pipeline.method_choice import AutoDiagnostics, choice_summary
    from sgilo.pipeline.prior_fit import ratio_text, unexplained_text

    if isinstance(diagnostics, AutoDiagnostics):
        judged = any(t is not None for t in diagnostics.auto_unexplained_limit or [])
        tests = f" (held-out k-space error{' and unexplained fraction' if judged else ''})"
        tests = "" if diagnostics.auto_note else tests  # nothing held out: the note says why
        parts = [f"auto kept {choice_summary(diagnostics.auto_choice)}{tests}"]
        fit = ratio_text(diagnostics.prior_fit)
        if fit:
            parts.append(f"{diagnostics.config.generative} {fit}")
        unexplained = unexplained_text(diagnostics.prior_fit)
        if unexplained:
            parts.append(f"{unexplained}: {UNEXPLAINED_NOTE}")
        return "; ".join([*parts, *([diagnostics.auto_note] if diagnostics.auto_note else [])])
    parts = []
    if isinstance(diagnostics, CSGMDiagnostics | ILODiagnostics | SGILODiagnostics):
        parts.append(f"steps run {diagnostics.steps_run}")
    if isinstance(diagnostics, SGILODiagnostics):
        given, used = diagnostics.prior_spaces, diagnostics.prior_spaces_used
        if used and diagnostics.config.lam == 0 and diagnostics.config.tau == 0:
            parts.append(f"score models reached in space(s) {used}, but λ = τ = 0: no prior step")
        elif used:
            parts.append(f"score-model prior steps in space(s) {used}")
        elif given:
            parts.append(f"no prior step: no round reached the score model(s) of {given}")
        else:
            parts.append("no score model: no prior step")
    if isinstance(diagnostics, CSGMDiagnostics | ILODiagnostics | SGILODiagnostics):
        fit = ratio_text(diagnostics.prior_fit)
        if fit:
            parts.append(f"{fit}: held-out k-space error over the best classical method's")
        unexplained = unexplained_text(diagnostics.prior_fit)
        if unexplained:
            parts.append(f"{unexplained}: {UNEXPLAINED_NOTE}")
    return "; ".join(parts)


def _mean_metrics(per_study: list[tuple[int, dict]]) -> dict | None:
    """Slice-weighted mean of each metric over the studies of one input (the study's own
    metrics when there is one)."""
    if not per_study:
        return None
    if len(per_study) == 1:
        return per_study[0][1]
    total = sum(n for n, _ in per_study)
    keys = per_study[0][1].keys()
    return {k: sum(n * m[k] for n, m in per_study) / total for k in keys}
