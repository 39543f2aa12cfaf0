"""The choice of λ on a held-out error curve: the rule of ``lam="auto"``
(:mod:`sgilo.pipeline.solvers.kspace_cv`).

Input: the relative grid ``λ_g`` ``(G,)`` (log-spaced, the default at its centre) and the mean
squared prediction error ``e_{g,j}`` of each held-out column ``j = 1 … J`` of one slice fitted
with ``λ_g``, ``(G, J)``. The plain rule, ``argmin_g ē_g`` with ``ē_g = mean_j e_{g,j}``, is
noise when the curve is flat (single-coil data: a held-out column is predicted by the regulariser
alone) and ``J`` is 1–3 (64² slices). The rule here:

1. ``g* = argmin_g ē_g``;
2. the paired standard error of each grid point against the minimum,
   ``SE_g = std_j(e_{g,j} − e_{g*,j}) / √J`` (over the held-out columns);
3. the candidates are the ``g`` with ``ē_g ≤ ē_{g*} + k · SE_g`` (the one-standard-error rule,
   ``k = SE_WIDTH``; with ``J = 1`` there is no spread and every grid point is a candidate);
4. of those, the one nearest the centre of the grid (the default) in ``log λ``; ties go to the
   larger λ.

So a flat or noisy curve keeps the default, and only a minimum that the held-out columns agree on
moves λ away from it.
"""

from __future__ import annotations

import math

import torch

#: the width of the one-standard-error rule, in standard errors
SE_WIDTH = 1.0


def choose_on_curve(
    grid: torch.Tensor,
    errors: torch.Tensor,
    *,
    width: float = SE_WIDTH,
    centre: float | None = None,
) -> float:
    """The relative λ of one slice from its held-out errors (module docstring).

    Args:
        grid: float64 ``(G,)``, the relative λ tried, increasing.
        errors: float64 ``(G, J)``, the mean squared error of each held-out column per λ.
        width: ``k``, the candidates' margin in paired standard errors (0: the plain argmin).
        centre: the λ the rule leans to (``None``: the grid's middle point).
    """
    errors = errors.to(torch.float64)
    mean = errors.mean(dim=1)  # (G,)
    best = int(mean.argmin())
    count = errors.shape[1]
    if count > 1:
        spread = (errors - errors[best]).std(dim=1, unbiased=True) / math.sqrt(count)
    else:
        spread = torch.full_like(mean, math.inf)
    within = mean <= mean[best] + width * spread  # (G,)
    within[best] = True
    target = math.log(float(grid[grid.numel() // 2]) if centre is None else centre)
    distance = (grid.log() - target).abs() - 1e-9 * grid.log()  # ties: the larger λ
    distance[~within] = math.inf
    return float(grid[int(distance.argmin())])


#: the noise-based rule per (method, kind of data): ``(r_ref, p)`` of
#: ``λ = λ_default · (r / r_ref)^p`` with ``r = σ̂ / s``. Multi-coil TV: ``r_ref`` the median ``r``
#: and ``p`` the slope of log(oracle λ) on log r, fitted on 12 MNI training curves (2 slices, 64²,
#: 8-coil 4×/8×, 20/30/40 dB; docs/CLASSICAL_TUNING.md). Single-coil: ``p = 0`` (the default):
#: the training curves were measured at one noise level only. Multi-coil ℓ1-wavelet has none: its
#: default raised for the noise (:data:`NOISE_RAISE`, measured at 128² on more slices and noise
#: levels) is its noise-based λ (``p`` = 0.2 on the 64² curves before that)
NOISE_RULE = {
    ("l1-wavelet", "single-coil"): (0.0113, 0.0),
    ("tv", "single-coil"): (0.0113, 0.0),
    ("tv", "multi-coil"): (0.0047, 0.17),
}


def noise_lambda(
    method: str, kind: str, default: float | torch.Tensor, sigma_rel: torch.Tensor
) -> torch.Tensor:
    """The noise-based relative λ per slice, float64 ``(B,)``: ``λ_default · (r / r_ref)^p``
    (``default`` a number or per slice ``(B,)``)
    (:data:`NOISE_RULE`) with ``r = σ̂ / s`` ``(B,)`` the estimated noise level relative to the
    slice's data scale (:func:`sgilo.pipeline.solvers.kspace_cv.estimate_noise_sigma`); the ratio
    is clipped to ``[1/30, 30]`` (the span of the held-out grid)."""
    reference, power = NOISE_RULE[(method, kind)]
    ratio = (sigma_rel.to(torch.float64) / reference).clamp(1 / 30, 30)
    return default * ratio.pow(power)


#: the default raised for noisy data, per (method, kind of data): ``(r_0, p)`` of
#: ``λ = λ_default · max(1, r / r_0)^p`` with ``r = σ̂ / s`` (:func:`raised_for_noise`). Chosen on
#: the tuning images of :mod:`sgilo.pipeline.research.auto_margin` (4 of the base set, 4 of the
#: heads, 12/20/30 dB, ESPIRiT maps, masks seed 3; docs/CLASSICAL_TUNING.md, "Noisier data"):
#: multi-coil ℓ1-wavelet's tuned λ was 4.2 dB short of the best at 8-coil 4× and 12 dB, while
#: at 30 dB (``r`` ≈ 0.006) it was the best; ``r_0`` lies above every 30-dB slice, so the
#: defaults there are unchanged. Not for TV (its default was within 0.1 dB of the best at every
#: noise level) nor single-coil ℓ1-wavelet (+0.1 dB at most, and 30-dB slices lie above any
#: useful ``r_0``).
NOISE_RAISE = {("l1-wavelet", "multi-coil"): (0.015, 1.0)}


def raised_for_noise(
    method: str, kind: str, default: torch.Tensor, sigma_rel: torch.Tensor
) -> torch.Tensor:
    """The tuned relative λ ``default`` ``(B,)``, raised on slices whose estimated noise level
    ``r = σ̂ / s`` ``(B,)`` is above the rule's ``r_0`` (:data:`NOISE_RAISE`; λ ∝ σ there, as the
    lasso's weight scales with the noise): ``default · max(1, r / r_0)^p``, at most 30 times the
    default (the span of the held-out grid). ``default`` itself for the pairs without a rule.
    ``σ̂`` is an upper bound (:func:`sgilo.pipeline.solvers.kspace_cv.estimate_noise_sigma`): at
    high SNR it overstates the noise, which stays under ``r_0``."""
    if (method, kind) not in NOISE_RAISE:
        return default
    reference, power = NOISE_RAISE[(method, kind)]
    ratio = (sigma_rel.to(torch.float64) / reference).clamp(1.0, 30.0)
    return default * ratio.pow(power).clamp(max=30.0)
