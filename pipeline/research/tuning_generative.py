"""Choosing the generative methods' parameters on MNI *training* slices.

``sgilo tune-generative --method ilo --param radius_fraction --values 0.1,0.3,1`` simulates the
benchmark's settings on evenly spaced training slices (never the validation slices the demo and
the benchmarks score), runs the method with each value of one field of its config
(``CSGMConfig`` / ``ILOConfig`` / ``SGILOConfig``: ``lam``, ``tau``, ``t``, ``radius_fraction``,
``steps``, ``lr``, ``fit_gain``, …), and reports the volume PSNR of each value beside
zero-filling and TV. A field of the final data-consistency step alone
(:data:`FINAL_STEP_FIELDS`) is swept on one fit per setting (one sample). The value with the best
PSNR averaged over the settings is the one to make the default (by editing the config's default
and recording the table in docs/).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.experiment import Setting, espirit_operator
from sgilo.pipeline.methods import Prior, solve
from sgilo.pipeline.metrics import psnr
from sgilo.pipeline.model_images import generator_resolution
from sgilo.pipeline.solvers.consistency import finish_model_image
from sgilo.pipeline.solvers.fit_config import MRIFitConfig

#: config fields of the final data-consistency step alone: a sweep of one of them fits once
FINAL_STEP_FIELDS = frozenset({"dc_wavelet", "dc_weight", "dc_iterations"})


@dataclass(frozen=True)
class GenerativeTuningRow:
    """PSNR of ``method`` on ``setting`` with ``param = value`` (``value`` as JSON text)."""

    method: str
    setting: str
    param: str
    value: str
    psnr: float
    seconds: float


def parse_value(text: str) -> object:
    """A command-line value as JSON (numbers, true/false, [lists]) or a plain string;
    ``steps`` values are written like ``300-200-100-100``."""
    if "-" in text and all(part.isdigit() for part in text.split("-")):
        return [int(part) for part in text.split("-")]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def sweep_generative(
    prior: Prior,
    slices: np.ndarray,
    settings: Sequence[Setting],
    method: str,
    param: str,
    values: Sequence[object],
    *,
    base_options: dict | None = None,
    samples: int = 1,
    seed: int = 1,
    log: Callable[[str], None] = print,
) -> list[GenerativeTuningRow]:
    """PSNR of zero-filling, TV and of ``method`` with every value of ``param`` on ``slices``."""
    import time

    rows = []
    for setting in settings:
        acq = setting.simulate(slices, seed=seed)
        y, op = espirit_operator(acq)
        for reference in ("zero-filled", "tv"):
            start = time.perf_counter()
            result = solve(y, op, reference)
            quality = psnr(acq.target, result.magnitude)
            seconds = time.perf_counter() - start
            rows.append(GenerativeTuningRow(reference, setting.label, "", "", quality, seconds))
            log(f"  {setting.label:<16} {reference:<11} {quality:.2f} dB")
        if param in FINAL_STEP_FIELDS and samples == 1:
            rows += _sweep_final_step(
                prior,
                y,
                op,
                acq.target,
                setting.label,
                method,
                param,
                values,
                base_options or {},
                seed,
                log,
            )
            continue
        for value in values:
            options = {**(base_options or {}), param: value}
            start = time.perf_counter()
            result = solve(
                y, op, method, prior=prior, samples=samples, seed=seed, solver_options=options
            )
            seconds = time.perf_counter() - start
            quality = psnr(acq.target, result.magnitude)
            text = json.dumps(value)
            rows.append(GenerativeTuningRow(method, setting.label, param, text, quality, seconds))
            log(f"  {setting.label:<16} {method:<6} {param}={text:<12} {quality:.2f} dB")
    return rows


def _sweep_final_step(
    prior: Prior,
    y: torch.Tensor,
    op: LinearOperator,
    target: np.ndarray,
    setting: str,
    method: str,
    param: str,
    values: Sequence[object],
    base_options: dict,
    seed: int,
    log: Callable[[str], None],
) -> list[GenerativeTuningRow]:
    """A sweep of a field of the final data-consistency step: the method runs once without it,
    then the final step (:func:`sgilo.pipeline.solvers.consistency.finish_model_image`: data
    consistency and the coil-support mask, as the solvers apply them) runs for every value. Same
    images as separate runs (the model image is already 0 outside the support, where the step
    zeroes it again); ``seconds`` is the fit's time plus the step's."""
    import time

    start = time.perf_counter()
    fit = solve(
        y,
        op,
        method,
        prior=prior,
        seed=seed,
        solver_options={**base_options, "data_consistency": False},
    )
    fit_seconds = time.perf_counter() - start
    resolution = generator_resolution(prior)
    fields = {k: v for k, v in base_options.items() if k in MRIFitConfig.model_fields}
    rows = []
    for value in values:
        start = time.perf_counter()
        config = MRIFitConfig(**{**fields, param: value, "data_consistency": True})
        image = finish_model_image(fit.image, y, op, config, resolution)
        seconds = fit_seconds + time.perf_counter() - start
        quality = psnr(target, image.abs().to(torch.float32).cpu().numpy())
        text = json.dumps(value)
        rows.append(GenerativeTuningRow(method, setting, param, text, quality, seconds))
        log(f"  {setting:<16} {method:<6} {param}={text:<12} {quality:.2f} dB")
    return rows


def best_value(rows: list[GenerativeTuningRow]) -> str:
    """The swept value (JSON text) with the best PSNR averaged over the settings."""
    swept = [r for r in rows if r.param]
    values = list(dict.fromkeys(r.value for r in swept))
    means = [np.mean([r.psnr for r in swept if r.value == v]) for v in values]
    return values[int(np.argmax(means))]


def markdown_table(rows: list[GenerativeTuningRow]) -> str:
    """References, then the swept values (down) × settings (across), PSNR in dB."""
    settings = list(dict.fromkeys(r.setting for r in rows))
    swept = [r for r in rows if r.param]
    param = swept[0].param if swept else "value"
    header = f"| {param} | " + " | ".join(settings) + " | mean seconds (all slices) |"
    out = [header, "|---" * (len(settings) + 2) + "|"]
    labels = [(r.method, "") for r in rows if not r.param]
    labels += [(swept[0].method, v) for v in dict.fromkeys(r.value for r in swept)] if swept else []
    for method, value in dict.fromkeys(labels):
        cells = [
            next(r for r in rows if (r.method, r.value, r.setting) == (method, value, s))
            for s in settings
        ]
        name = f"{method} {value}" if value else method
        seconds = np.mean([c.seconds for c in cells])
        psnrs = " | ".join(f"{c.psnr:.2f}" for c in cells)
        out.append(f"| {name} | {psnrs} | {seconds:.1f} |")
    return "\n".join(out) + "\n"
