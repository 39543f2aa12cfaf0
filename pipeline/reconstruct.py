"""Reconstruct a k-space study with a named method, and the `sgilo reconstruct` file workflow.

``reconstruct_study(study, method)`` builds the forward model from the study (single-coil
``M ⊙ F``; multi-coil SENSE with the file's coil maps, or ESPIRiT maps estimated from the
calibration region when the file has none), runs the solver on all slices at once, and returns the
magnitude ``(slices, H, W)`` on the k-space grid. ``reconstruct_file`` adds reading,
retrospective undersampling and the atomic fastMRI-format write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from operators.base import LinearOperator
from operators.mri import MultiCoilMRI, SingleCoilMRI
from pipeline.io.fastmri import read_fastmri, retrospective_undersample, write_reconstruction
from pipeline.io.types import InputError, KSpaceStudy
from pipeline.solvers.base import Progress, ReconResult
from pipeline.solvers.classical import CLASSICAL

#: methods that need a generative prior (``--model``)
GENERATIVE: tuple[str, ...] = ("csgm", "ilo", "sgilo")
METHODS: tuple[str, ...] = tuple(CLASSICAL) + GENERATIVE


@dataclass
class Prior:
    """A loaded generator and its Gaussianized-latent statistics (fitted on first need)."""

    generator: object
    latent_stats: object | None
    path: Path
    score_models: dict = field(default_factory=dict)

    def stats(self) -> object:
        if self.latent_stats is None:
            from models.stylegan2.checkpoint import fit_latent_stats

            rng = torch.Generator().manual_seed(0)
            self.latent_stats = fit_latent_stats(self.generator, n=100_000, generator_rng=rng)
        return self.latent_stats


def load_prior(model: str | Path | None, device: str = "cpu") -> Prior:
    """Load a prior for the generative methods: a shipped prior by name (``brain-t1-128``, with
    its score models), a generator file by path (sgilo's format or the rosinality StyleGAN-2
    format), or the default shipped prior for ``None``. Raises ``ValueError`` with one line naming
    the file."""
    from models.registry import resolve_model
    from models.stylegan2.checkpoint import load_generator

    files = resolve_model(model)
    generator, info = load_generator(files.generator, device=device)
    prior = Prior(generator, info.latent_stats, files.generator)
    if files.score_models:
        prior.score_models = load_score_models(files.score_models, device=device)
    return prior


def load_score_models(paths: list[str | Path], device: str = "cpu") -> dict:
    """Score models keyed by the latent space each was trained on ("z" or "block<k>");
    raises ``ValueError`` with one line naming the file."""
    from models.score.model import load_score_model

    models = {}
    for p in paths:
        if not Path(p).exists():
            raise ValueError(f"{p}: no such score model file")
        model = load_score_model(p, device=device)
        if not model.space:
            raise ValueError(f"{p}: the score model does not record its latent space")
        models[model.space] = model
    return models


@dataclass
class StudyReconstruction:
    """The output of one study: float32 magnitude ``(slices, H, W)`` and how it was made."""

    name: str
    magnitude: np.ndarray
    method: str
    seconds: float
    params: dict = field(default_factory=dict)
    metrics: dict | None = None
    std: np.ndarray | None = None


def study_operator(
    study: KSpaceStudy, *, need_maps: bool = True
) -> tuple[torch.Tensor, LinearOperator, str]:
    """``(y, op, maps_source)`` for a study; ``y`` complex64 ``(S, H, W)`` single-coil or
    ``(S, C, H, W)`` multi-coil. ``maps_source`` is "file", "espirit" or "none"."""
    mask = torch.from_numpy(study.sampling_mask().astype(np.float32))
    kspace = torch.from_numpy(study.kspace)
    if not study.multicoil:
        return kspace[:, 0], SingleCoilMRI(mask), "none"
    if study.maps is not None:
        maps, source = torch.from_numpy(study.maps), "file"
    elif need_maps:
        from pipeline.espirit import estimate_maps

        try:
            mask_np = study.mask if study.mask is not None else study.sampling_mask()
            maps_np = estimate_maps(study.kspace, mask_np)
        except ValueError as exc:
            raise InputError(f"{study.source.name}: cannot estimate coil maps: {exc}") from exc
        maps, source = torch.from_numpy(maps_np), "espirit"
    else:
        maps = torch.ones(study.kspace.shape[1:], dtype=torch.complex64) / study.num_coils**0.5
        source = "none"
    return kspace, MultiCoilMRI(maps, mask), source


def reconstruct_study(
    study: KSpaceStudy,
    method: str,
    *,
    seed: int = 0,
    callback: Progress | None = None,
    solver_options: dict | None = None,
    prior: Prior | None = None,
    samples: int = 1,
) -> StudyReconstruction:
    """Reconstruct every slice of ``study`` with ``method`` (one of :data:`METHODS`); the
    generative methods need ``prior``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method in GENERATIVE and prior is None:
        raise ValueError(f"{method} needs a generative prior (--model PATH)")
    start = time.perf_counter()
    y, op, maps_source = study_operator(study, need_maps=method != "zero-filled")
    rng = torch.Generator().manual_seed(seed)
    result: ReconResult
    if method == "csgm":
        from pipeline.solvers.csgm import csgm

        result = csgm(y, op, generator=prior.generator, rng=rng, callback=callback)
    elif method == "ilo":
        from pipeline.solvers.ilo import ILOConfig, ilo

        # the default rounds, as many as the generator has blocks
        steps = ILOConfig().steps[: prior.generator.num_blocks]
        result = ilo(
            y,
            op,
            generator=prior.generator,
            latent_stats=prior.stats(),
            config=ILOConfig(steps=steps),
            rng=rng,
            callback=callback,
        )
    elif method == "sgilo":
        from pipeline.solvers.sgilo import SGILOConfig, sgilo

        steps = SGILOConfig().steps[: prior.generator.num_blocks]
        result = sgilo(
            y,
            op,
            generator=prior.generator,
            latent_stats=prior.stats(),
            score_models=prior.score_models,
            config=SGILOConfig(steps=steps, chains=samples),
            rng=rng,
            callback=callback,
        )
    else:
        result = CLASSICAL[method](y, op, rng=rng, callback=callback, **(solver_options or {}))
    magnitude = result.magnitude
    params = {**result.params, "maps": maps_source}
    metrics = None
    if study.target is not None and study.target.shape == magnitude.shape:
        from pipeline.metrics import evaluate

        metrics = evaluate(study.target, magnitude)
    std = getattr(result, "std", None)
    return StudyReconstruction(
        study.name,
        magnitude,
        method,
        time.perf_counter() - start,
        params,
        metrics,
        None if std is None or samples < 2 else std.detach().cpu().numpy(),
    )


@dataclass
class FileResult:
    """What ``reconstruct_file`` did for one input: the files it wrote and its figures.

    ``outputs`` lists every file written (the fastMRI-format HDF5 first); ``metrics`` is set when
    the input carried a reference image; ``params`` are the solver's parameters.
    """

    name: str
    source: Path
    method: str
    outputs: list[Path]
    seconds: float
    num_slices: int
    metrics: dict | None = None
    params: dict = field(default_factory=dict)


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
) -> FileResult:
    """Read ``path``, undersample it if asked, reconstruct, write ``out_dir/<file name>``.

    Raises :class:`InputError` (one line, naming the file) for a bad input; nothing is written
    then.
    """
    path = Path(path)
    target = Path(out_dir) / path.name
    if target.exists() and path.exists() and target.resolve() == path.resolve():
        raise InputError(f"{path.name}: the output would overwrite the input; choose another --out")
    study = read_fastmri(path)
    if acceleration is not None:
        if center_fraction is None:
            raise InputError(f"{path.name}: --acceleration needs --center-fraction")
        study = retrospective_undersample(study, acceleration, center_fraction, seed, mask_kind)
        log(
            f"{path.name}: undersampled retrospectively, "
            f"R={acceleration:g}, centre {center_fraction:g}"
        )
    elif not study.is_undersampled:
        log(f"{path.name}: fully sampled and no --acceleration given: reconstructing as is")
    recon = reconstruct_study(
        study, method, seed=seed or 0, callback=callback, prior=prior, samples=samples
    )
    attrs = {
        "method": method,
        **({"model": str(prior.path)} if prior is not None and method in GENERATIVE else {}),
        "acceleration": float(study.acceleration or 1.0),
        "seconds": round(recon.seconds, 3),
        **{k: v for k, v in recon.params.items() if isinstance(v, int | float | str)},
    }
    out = write_reconstruction(target, recon.magnitude, attrs=attrs, std=recon.std)
    summary = f"{path.name}: {method} on {study.num_slices} slice(s) in {recon.seconds:.1f} s"
    if recon.metrics:
        summary += " (" + ", ".join(f"{k} {v:.4g}" for k, v in recon.metrics.items()) + ")"
    log(summary + f" -> {out}")
    return FileResult(
        name=path.name,
        source=path,
        method=method,
        outputs=[out],
        seconds=recon.seconds,
        num_slices=study.num_slices,
        metrics=recon.metrics,
        params=recon.params,
    )
