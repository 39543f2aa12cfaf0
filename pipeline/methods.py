"""The reconstruction methods by name, and the generative prior they use.

``solve(y, op, method, prior=..., samples=K)`` runs one of :data:`METHODS` on a batch of slices:
the classical ones (:mod:`sgilo.pipeline.solvers.classical`) or the generative ones (CSGM, ILO,
SGILO) with a :class:`Prior` — a generator, its Gaussianized-latent statistics and, for SGILO,
latent score models. ``solver_options`` override the method's defaults (the classical solvers'
keyword arguments, or fields of ``CSGMConfig`` / ``ILOConfig`` / ``SGILOConfig``); the generative
methods use as many rounds as the generator has blocks unless told otherwise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers.base import Progress, ReconResult
from sgilo.pipeline.solvers.classical import CLASSICAL
from sgilo.pipeline.solvers.random_source import solver_rng

#: the latent-space methods (each needs a generative prior, ``--model``)
GENERATIVE: tuple[str, ...] = ("csgm", "ilo", "sgilo")
#: per slice the classical or generative method that best predicts held-out k-space
#: (:mod:`sgilo.pipeline.method_choice`)
AUTO = "auto"
METHODS: tuple[str, ...] = tuple(CLASSICAL) + GENERATIVE + (AUTO,)
#: the methods that need a generative prior
NEEDS_PRIOR: tuple[str, ...] = (*GENERATIVE, AUTO)


@dataclass
class Prior:
    """A loaded generator and its Gaussianized-latent statistics (fitted on first need)."""

    generator: object
    latent_stats: object | None
    path: Path
    score_models: dict = field(default_factory=dict)

    def stats(self) -> object:
        if self.latent_stats is None:
            from sgilo.models.stylegan2.checkpoint import fit_latent_stats

            rng = torch.Generator().manual_seed(0)
            self.latent_stats = fit_latent_stats(self.generator, n=100_000, generator_rng=rng)
        return self.latent_stats


def load_prior(model: str | Path | None, device: str = "cpu") -> Prior:
    """Load a prior for the generative methods: a shipped prior by name (``brain-t1-128``, with
    its score models), a generator file by path (sgilo's format or the rosinality StyleGAN-2
    format), or the default shipped prior for ``None``. Raises ``ValueError`` with one line naming
    the file."""
    from sgilo.models.registry import resolve_model
    from sgilo.models.stylegan2.checkpoint import load_generator

    files = resolve_model(model)
    generator, info = load_generator(files.generator, device=device)
    prior = Prior(generator, info.latent_stats, files.generator)
    if files.score_models:
        prior.score_models = load_score_models(files.score_models, device=device)
    return prior


def load_score_models(paths: list[str | Path], device: str = "cpu") -> dict:
    """Score models keyed by the latent space each was trained on ("z" or "block<k>");
    raises ``ValueError`` with one line naming the file."""
    from sgilo.models.score.model import load_score_model

    models = {}
    for p in paths:
        if not Path(p).exists():
            raise ValueError(f"{p}: no such score model file")
        model = load_score_model(p, device=device)
        if not model.space:
            raise ValueError(f"{p}: the score model does not record its latent space")
        models[model.space] = model
    return models


def _on_prior_device(
    y: torch.Tensor, op: LinearOperator, prior: Prior
) -> tuple[torch.Tensor, LinearOperator]:
    """``y`` and ``op`` moved to the generator's device (``--device cuda``); the solvers draw
    their random numbers on the CPU, so results do not depend on the device's generator. An
    operator that ``runs_on_cpu_only`` (sigpy's NUFFT) is refused."""
    device = next(prior.generator.parameters()).device
    if device == y.device:
        return y, op
    if op.runs_on_cpu_only:
        raise ValueError("non-Cartesian data run on the CPU only (sigpy's NUFFT); drop --device")
    return y.to(device), copy.deepcopy(op).to(device)


def solve(
    y: torch.Tensor,
    op: LinearOperator,
    method: str,
    *,
    prior: Prior | None = None,
    samples: int = 1,
    seed: int = 0,
    callback: Progress | None = None,
    solver_options: dict | None = None,
) -> ReconResult:
    """Reconstruct the slices ``y`` (``(B, *op.oshape)``) with ``method``; deterministic for a
    given ``seed``. ``samples`` is SGILO's number of chains K.

    The generative methods on MRI data run with the prior-fit check unless
    ``prior_fit=False`` (:mod:`sgilo.pipeline.prior_fit`: the latent fit leaves 10 % of the
    outer k-space columns out, and the diagnostics say how well the prior predicted them against
    the classical methods); ``auto`` chooses per slice (:mod:`sgilo.pipeline.method_choice`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method in NEEDS_PRIOR and prior is None:
        raise ValueError(f"{method} needs a generative prior (--model NAME|PATH)")
    options = dict(solver_options or {})
    if method == AUTO:
        from sgilo.pipeline.method_choice import solve_auto

        return solve_auto(
            y, op, prior=prior, samples=samples, seed=seed, callback=callback, options=options
        )
    if method in GENERATIVE and op.kind == "mri" and options.get("prior_fit", True):
        from sgilo.pipeline.prior_fit import checked_generative

        result, _ = checked_generative(
            y,
            op,
            method,
            prior=prior,
            samples=samples,
            seed=seed,
            callback=callback,
            solver_options=options,
        )
        return result
    return run_method(
        y,
        op,
        method,
        prior=prior,
        samples=samples,
        seed=seed,
        callback=callback,
        solver_options=options,
    )


def run_method(
    y: torch.Tensor,
    op: LinearOperator,
    method: str,
    *,
    prior: Prior | None = None,
    samples: int = 1,
    seed: int = 0,
    callback: Progress | None = None,
    solver_options: dict | None = None,
) -> ReconResult:
    """One classical or latent-space solver on all of ``y``, as :func:`solve` but without the
    prior-fit check (the ``prior_fit`` options are ignored) and without ``auto``."""
    if method in GENERATIVE and prior is None:
        raise ValueError(f"{method} needs a generative prior (--model NAME|PATH)")
    options = dict(solver_options or {})
    rng = torch.Generator().manual_seed(seed)
    if method in GENERATIVE:
        y, op = _on_prior_device(y, op, prior)
        rng = solver_rng(seed, y.device)  # random numbers on the problem's device
    if method == "csgm":
        from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm

        config = CSGMConfig(**options)
        return csgm(y, op, generator=prior.generator, config=config, rng=rng, callback=callback)
    if method == "ilo":
        from sgilo.pipeline.solvers.ilo import ILOConfig, ilo

        options.setdefault("steps", ILOConfig().steps[: prior.generator.num_blocks])
        return ilo(
            y,
            op,
            generator=prior.generator,
            latent_stats=prior.stats(),
            config=ILOConfig(**options),
            rng=rng,
            callback=callback,
        )
    if method == "sgilo":
        from sgilo.pipeline.solvers.sgilo import SGILOConfig, sgilo

        options.setdefault("steps", SGILOConfig().steps[: prior.generator.num_blocks])
        return sgilo(
            y,
            op,
            generator=prior.generator,
            latent_stats=prior.stats(),
            score_models=prior.score_models,
            config=SGILOConfig(**options, chains=samples),
            rng=rng,
            callback=callback,
        )
    return CLASSICAL[method](y, op, rng=rng, callback=callback, **options)
