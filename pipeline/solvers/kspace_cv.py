"""λ from held-out k-space: k-space cross-validation of a classical solver's weight, and the
noise level of the data.

The classical solvers' ``lam="auto"`` (:mod:`sgilo.pipeline.solvers.classical`) chooses, per
slice, the weight ``λ`` of ``argmin ½‖A x − y‖² + λ R(x)`` from the measurements alone:

1. hold out ``K = CV_FOLDS`` disjoint seeded random sets of the measured k-space columns outside
   the fully sampled centre, each a fraction ``f`` (``CV_FRACTION`` = 8 %) of them
   (:func:`sgilo.pipeline.solvers.heldout_columns.draw_folds`: the candidates and the draw of
   ILO's and SGILO's hold-out, whose draw is the first fold; single samples for non-Cartesian
   data);
2. for each fold, reconstruct from the other measurements for every ``λ_g`` of a log-spaced grid
   around the slice's default (which depends on its acceleration),
   ``λ_g = λ_default · 30^{(g − 3)/3}``, ``g = 0 … 6`` (1/30 … 30 times the default), all grid
   points × slices as one batch (one per slice for non-Cartesian data, whose
   operator shares one trajectory between slices);
3. score each held-out column ``j`` of each fold by its mean squared prediction error,
   ``e_{g,j} = ‖M_j ⊙ (A x_{b,g} − y_b)‖² / n_j`` (``M_j`` the measured entries of column ``j``,
   ``n_j`` their number, coils included); the recorded curve is their pooled mean
   ``e_{b,g} = Σ_j n_j e_{g,j} / Σ_j n_j``;
4. choose ``λ_b`` on the columns' errors by the one-standard-error rule towards the default
   (:func:`sgilo.pipeline.solvers.lambda_rule.choose_on_curve`): a flat or noisy curve keeps the
   default, a minimum that the held-out columns agree on moves it;
5. the caller refits on every measurement with ``λ_b``.

The fit in step 2 has a data term over ``m_fit`` of the ``m`` measurements, so it runs with
``λ_g · m_fit/m``: the weight per measurement of the refit (as the lasso's ``(1/2m)‖·‖² + λ‖·‖₁``
carries its λ between sample sizes). The weights are relative, ``λ_abs = λ_rel · s`` with ``s`` the
slice's data scale of *all* measurements (the caller's ``scale``), so the chosen relative λ is the
one the refit uses. Cost: ``7 K`` fits of the split data (in complex64, which scores as well
as complex128: :data:`sgilo.pipeline.solvers.classical.SCORING_DTYPE`) and the refit.

With fewer than two candidate columns in a slice (a fully sampled or centre-only mask) nothing
can be held out: every slice gets the caller's noise-based λ (``fallback``, from the estimated
noise level :func:`estimate_noise_sigma`; :func:`sgilo.pipeline.solvers.lambda_rule.noise_lambda`)
or, without one, the default, and the choice says so (``note``); never an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers import heldout_columns as columns
from sgilo.pipeline.solvers.known_noise import known_sigma
from sgilo.pipeline.solvers.kspace_split import heldout_column_errors, split_measurements
from sgilo.pipeline.solvers.lambda_rule import choose_on_curve

#: the fraction of the measured outer columns held out, and the seed of the draw
CV_FRACTION = 0.08
CV_SEED = 0
#: the number of disjoint held-out folds whose errors are pooled
CV_FOLDS = 1
#: the relative grid: the default λ times these factors, 1/30 … 30 in 7 log-spaced steps
GRID_FACTORS = tuple(30.0 ** ((g - 3) / 3) for g in range(7))
#: a fit: ``(y, op, λ_abs (B,)) -> image (B, H, W)`` (the solver with absolute weights)
Fit = Callable[[torch.Tensor, LinearOperator, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LambdaChoice:
    """The λ chosen per slice and how: ``lam_rel`` ``(B,)``; ``grid`` ``(B, G)`` the relative
    weights tried per slice (its default times :data:`GRID_FACTORS`); ``errors`` ``(B, G)`` their
    held-out errors ``e_{b,g}`` (all folds pooled);
    ``column_errors`` per slice ``(G, J_b)`` the mean squared error of each of its ``J_b``
    held-out columns (all folds); ``fraction`` the held-out fraction of the outer columns per
    fold; ``folds`` their number; ``note`` how the choice was made when it was not from held-out
    k-space (then ``grid``, ``errors``, ``column_errors`` and ``fraction`` are ``None``)."""

    lam_rel: list[float]
    grid: list[list[float]] | None = None
    errors: list[list[float]] | None = None
    column_errors: list[torch.Tensor] | None = None
    fraction: float | None = None
    folds: int | None = None
    note: str | None = None


def heldout_curves(
    y: torch.Tensor,
    op: LinearOperator,
    fit: Fit,
    grid: torch.Tensor,
    scale: torch.Tensor,
    *,
    fraction: float = CV_FRACTION,
    folds: int = CV_FOLDS,
    seed: int = CV_SEED,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The held-out error curves of every slice over the relative ``grid`` ``(G,)``: the mean
    ``e_{b,g}`` float64 ``(B, G)`` and per slice the ``(G, J_b)`` mean squared error of each of its
    held-out columns, pooled over ``folds`` disjoint held-out sets
    (:func:`sgilo.pipeline.solvers.heldout_columns.draw_folds`; each fold's fit gets every other
    measurement, with ``λ_g · s_b · m_fit/m``; a per-slice default enters as a factor of
    ``s_b``). Every slice needs 2 candidate columns."""
    batch, size = y.shape[0], grid.numel()
    held_folds = columns.draw_folds(columns.candidate_columns(op, y), fraction, folds, seed)
    counts = columns.measured_per_column(op, y, torch.float64).cpu()  # (B, L)
    scale = scale.detach().to(torch.float64).cpu()
    sse = torch.zeros(batch, size, y.shape[-1], dtype=torch.float64)  # (B, G, L)
    held_any = torch.zeros(batch, y.shape[-1], dtype=torch.bool)
    for held in held_folds:
        held_cpu = held.cpu()
        if not held_cpu.any():
            continue
        kept = 1.0 - (counts * held_cpu).sum(dim=1) / counts.sum(dim=1)  # m_fit / m
        for part in split_measurements(op, y, held, size):
            index = torch.tensor(part.slices)
            lam_abs = (grid[:, None] * (scale * kept)[index][None, :]).flatten()
            image = fit(part.fit_y, part.fit_op, lam_abs.to(y.device))
            per_column = heldout_column_errors(part, image)  # (G, n, L_part)
            if per_column.shape[-1] == y.shape[-1]:  # Cartesian: columns of y
                sse[index] += per_column.transpose(0, 1) * held_cpu[index][:, None, :]
            else:  # non-Cartesian: the held-out samples of one slice
                b = part.slices[0]
                where = held_cpu[b].nonzero().flatten()
                sse[b][:, where] += per_column[:, 0]
        held_any |= held_cpu
    per_slice, means = [], torch.empty(batch, size, dtype=torch.float64)
    for b in range(batch):
        where = held_any[b].nonzero().flatten()
        n_column = counts[b, where]  # (J,)
        means[b] = sse[b][:, where].sum(dim=1) / n_column.sum().clamp_min(1)
        per_slice.append(sse[b][:, where] / n_column.clamp_min(1))
    return means, per_slice


def choose_lambda(
    y: torch.Tensor,
    op: LinearOperator,
    fit: Fit,
    default: float | torch.Tensor,
    scale: torch.Tensor,
    *,
    fallback: torch.Tensor | None = None,
    skip: str | None = None,
    fraction: float = CV_FRACTION,
    folds: int = CV_FOLDS,
    seed: int = CV_SEED,
) -> LambdaChoice:
    """Choose the relative λ per slice by k-space cross-validation (module docstring).

    Args:
        y: complex ``(B, *op.oshape)``, the measurements.
        op: the MRI operator (Cartesian with a mask, or non-Cartesian).
        fit: the solver with absolute weights, ``(y', op', λ_abs (B',)) -> image (B', H, W)``.
        default: the relative λ at the centre of the grid, one or per slice ``(B,)``.
        scale: ``(B,)`` the data scale ``s`` of every slice (of all measurements).
        fallback: ``(B,)`` the relative λ of the noise-based rule, used when nothing can be held
            out (``None``: the default).
        skip: why not to hold out at all (then the fallback is used and the note says why), or
            ``None``.
        fraction, folds, seed: the held-out fraction of the outer columns per fold, the number
            of disjoint folds and the draw's seed.
    """
    batch = y.shape[0]
    default = torch.as_tensor(default, dtype=torch.float64).cpu().expand(batch)
    reason = skip or columns.too_few_columns(op, y)
    if reason is not None:
        if fallback is None:
            note = f"λ from held-out k-space skipped ({reason}): the default λ is used"
            return LambdaChoice(lam_rel=default.tolist(), note=note)
        note = f"λ from held-out k-space skipped ({reason}): λ from the noise level σ̂"
        return LambdaChoice(lam_rel=[float(v) for v in fallback.tolist()], note=note)
    factors = torch.tensor(GRID_FACTORS, dtype=torch.float64)
    scaled = scale.detach().to(torch.float64).cpu() * default  # the grid's λ_g · s_b
    means, per_slice = heldout_curves(
        y, op, fit, factors, scaled, fraction=fraction, folds=folds, seed=seed
    )
    pairs = zip(default.tolist(), per_slice, strict=True)
    chosen = [d * choose_on_curve(factors, e) for d, e in pairs]
    return LambdaChoice(
        lam_rel=chosen,
        grid=(default[:, None] * factors[None, :]).tolist(),
        errors=means.tolist(),
        column_errors=per_slice,
        fraction=float(fraction),
        folds=int(folds),
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

    Where the input measured the noise (an ISMRMRD noise scan), that ``σ`` is returned for every
    slice instead (:func:`sgilo.pipeline.solvers.known_noise.known_noise_sigma`).
    """
    batch = y.shape[0]
    known = known_sigma()
    if known is not None:
        return torch.full((batch,), known, dtype=torch.float64)
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
