"""λ from held-out k-space: k-space cross-validation of a classical solver's weight, and the
noise level of the data.

The classical solvers' ``lam="auto"`` (:mod:`sgilo.pipeline.solvers.classical`) chooses, per
slice, the weight ``λ`` of ``argmin ½‖A x − y‖² + λ R(x)`` from the measurements alone:

1. hold out a seeded random fraction ``f`` (``CV_FRACTION`` = 8 %) of the measured k-space columns
   outside the fully sampled centre (:mod:`sgilo.pipeline.solvers.heldout_columns`: the same
   candidates and draw as ILO's and SGILO's hold-out; single samples for non-Cartesian data);
2. reconstruct from the other measurements for every ``λ_g`` of a log-spaced grid around the
   default, ``λ_g = λ_default · 30^{(g − 3)/3}``, ``g = 0 … 6`` (1/30 … 30 times the default), all
   grid points × slices as one batch (one per slice for non-Cartesian data, whose operator
   shares one trajectory between slices);
3. score each by the mean squared prediction error on the held-out samples,
   ``e_{b,g} = ‖M_h ⊙ (A x_{b,g} − y_b)‖² / n_h`` (``M_h`` the held-out measured entries,
   ``n_h`` their number, coils included), and keep ``λ_b = argmin_g e_{b,g}``;
4. the caller refits on every measurement with ``λ_b``.

The fit in step 2 has a data term over ``m_fit`` of the ``m`` measurements, so it runs with
``λ_g · m_fit/m``: the weight per measurement of the refit (as the lasso's ``(1/2m)‖·‖² + λ‖·‖₁``
carries its λ between sample sizes). The weights are relative, ``λ_abs = λ_rel · s`` with ``s`` the
slice's data scale of *all* measurements (the caller's ``scale``), so the chosen relative λ is the
one the refit uses.

With fewer than two candidate columns in a slice (a fully sampled or centre-only mask) nothing
can be held out: every slice keeps the default λ and the choice says why (``note``); never an
error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers import heldout_columns as columns
from sgilo.pipeline.solvers.kspace_split import heldout_error, split_measurements

#: the fraction of the measured outer columns held out, and the seed of the draw
CV_FRACTION = 0.08
CV_SEED = 0
#: the relative grid: the default λ times these factors, 1/30 … 30 in 7 log-spaced steps
GRID_FACTORS = tuple(30.0 ** ((g - 3) / 3) for g in range(7))
#: a fit: ``(y, op, λ_abs (B,)) -> image (B, H, W)`` (the solver with absolute weights)
Fit = Callable[[torch.Tensor, LinearOperator, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LambdaChoice:
    """The λ chosen per slice and how: ``lam_rel`` ``(B,)``; ``grid`` ``(G,)`` the relative
    weights tried; ``errors`` ``(B, G)`` their held-out errors ``e_{b,g}``; ``fraction`` the
    held-out fraction of the outer columns; ``note`` why there was no choice (then ``grid``,
    ``errors`` and ``fraction`` are ``None`` and ``lam_rel`` is the default)."""

    lam_rel: list[float]
    grid: list[float] | None = None
    errors: list[list[float]] | None = None
    fraction: float | None = None
    note: str | None = None


def choose_lambda(
    y: torch.Tensor,
    op: LinearOperator,
    fit: Fit,
    default: float,
    scale: torch.Tensor,
    *,
    fraction: float = CV_FRACTION,
    seed: int = CV_SEED,
) -> LambdaChoice:
    """Choose the relative λ per slice by k-space cross-validation (module docstring).

    Args:
        y: complex ``(B, *op.oshape)``, the measurements.
        op: the MRI operator (Cartesian with a mask, or non-Cartesian).
        fit: the solver with absolute weights, ``(y', op', λ_abs (B',)) -> image (B', H, W)``.
        default: the relative λ at the centre of the grid.
        scale: ``(B,)`` the data scale ``s`` of every slice (of all measurements).
        fraction, seed: the held-out fraction of the outer columns and the draw's seed.
    """
    batch = y.shape[0]
    reason = columns.too_few_columns(op, y)
    if reason is not None:
        note = f"λ from held-out k-space skipped ({reason}): the default λ is used"
        return LambdaChoice(lam_rel=[float(default)] * batch, note=note)
    held = columns.draw_columns(columns.candidate_columns(op, y), fraction, seed)
    counts = columns.measured_per_column(op, y, torch.float64)  # (B, L)
    n_held = (counts * held).sum(dim=1)  # (B,)
    kept = 1.0 - n_held / counts.sum(dim=1)  # m_fit / m
    grid = torch.tensor([default * f for f in GRID_FACTORS], dtype=torch.float64)
    errors = torch.empty(batch, grid.numel(), dtype=torch.float64)
    scale = scale.detach().to(torch.float64).cpu()
    for part in split_measurements(op, y, held, grid.numel()):
        index = torch.tensor(part.slices)
        lam_abs = (grid[:, None] * (scale * kept.cpu())[index][None, :]).flatten()
        image = fit(part.fit_y, part.fit_op, lam_abs.to(y.device))
        errors[index] = heldout_error(part, image).T  # (slices, G)
    best = errors.argmin(dim=1)
    return LambdaChoice(
        lam_rel=grid[best].tolist(),
        grid=grid.tolist(),
        errors=errors.tolist(),
        fraction=float(fraction),
    )


def estimate_noise_sigma(y: torch.Tensor, op: LinearOperator) -> torch.Tensor:
    """The noise standard deviation per complex k-space sample, ``σ`` (``E|n|² = σ²``), per
    slice ``(B,)``, from the k-space periphery of the measured samples: an upper bound.

    The periphery is the corners of k-space: for a Cartesian mask, the measured entries with
    ``|k_row| ≥ 3H/8`` and ``|k_col| ≥ 3W/8`` (the readout extremes of the outermost measured
    phase-encoding columns; the readout extremes of every measured column for a slice with no
    measured column that far out), every coil; for non-Cartesian data, the samples with
    ``|k| ≥ 3/4`` of the largest radius. There an image's spectrum has decayed furthest, so the
    samples are mostly noise, and ``σ̂ = median|y| / √(ln 2)`` (for complex Gaussian noise ``|n|``
    is Rayleigh with median ``σ √(ln 2)``); the median ignores the minority of samples that an
    edge's spectrum still reaches. Not the calibration region: it holds the most signal and, at a
    4 % centre, 5 columns at 128². What signal is left in the corners biases the estimate up
    where the noise is small: on MNI validation slices (128², 4×) σ̂/σ was 1.06 at 20 dB SNR,
    1.3 at 30 dB and 2.6 at 40 dB (the readout extremes of all measured columns: 1.07, 1.55,
    3.7; tests/pipeline/test_kspace_cv.py checks the bounds). So it is reported with an automatic
    λ (run.json's ``noise_sigma``), not used to centre the grid.
    """
    batch = y.shape[0]
    mag = y.detach().abs().to(torch.float64)
    masks = op.slice_masks(batch)
    if masks is not None:
        h, w = masks.shape[-2:]
        rows = (torch.arange(h, device=masks.device) - h // 2).abs() >= 3 * h / 8  # (H,)
        cols = (torch.arange(w, device=masks.device) - w // 2).abs() >= 3 * w / 8  # (W,)
        measured = (masks > 0) & rows[:, None]  # (B, H, W)
        corners = measured & cols[None, :]
        some = corners.flatten(1).any(dim=1).view(batch, 1, 1)
        where = torch.where(some, corners, measured)
        if mag.ndim == 4:
            where = where.unsqueeze(1).expand_as(mag)
    else:
        radius = op.trajectory.to(torch.float64).norm(dim=-1)  # (K,)
        where = (radius >= 0.75 * radius.max()).to(mag.device).expand_as(mag)
    out = []
    for b in range(batch):
        values = mag[b][where[b].to(mag.device)]
        median = values.median() if values.numel() else mag.new_zeros(())
        out.append(median / math.sqrt(math.log(2.0)))
    return torch.stack(out).cpu()
