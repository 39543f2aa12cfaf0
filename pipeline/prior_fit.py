"""How well a generative prior explains the data: held-out k-space against the classical methods.

A generator fitted to undersampled k-space always explains the samples it fitted; what tells a
prior that knows the anatomy from one that does not is how well it *predicts* samples it did not
see. So every generative reconstruction of Cartesian MRI data (unless ``prior_fit=False``) runs
as follows, per batch of ``B`` slices:

1. a seeded fraction ``f`` (``prior_fit_fraction``, default 10 %) of the measured k-space
   columns outside the fully sampled centre is held out
   (:mod:`sgilo.pipeline.solvers.heldout_columns`, the draw ILO's hold-out and the classical
   ``lam="auto"`` use; :mod:`sgilo.pipeline.solvers.kspace_split` builds the two problems);
2. the latent fit (CSGM, ILO or SGILO, all chains) runs on the other samples, giving the model
   image ``x̂`` (for SGILO one per chain);
3. the final data-consistency step (:func:`sgilo.pipeline.solvers.consistency.make_consistent`
   with the method's settings) is applied twice to the same ``x̂``: on the fitted samples, which
   gives the generative method's prediction of the held-out ones, and on *all* samples, which
   gives the output; so the output uses every measurement, and the latent fit is the only part
   that did not see the held-out columns (the output's step trusts only the model image's low
   band, :mod:`sgilo.pipeline.solvers.trusted_band`; the prediction uses the whole model image,
   since it is the prior that is judged);
4. the classical candidates (CG-SENSE for multi-coil, ℓ1-wavelet and TV at their defaults) are
   fitted on the same fitted samples (ℓ1-wavelet and TV in complex64, which scores as well as the
   output's complex128: :data:`sgilo.pipeline.solvers.classical.SCORING_DTYPE`; not
   zero-filled: predicting 0 for every unmeasured
   sample scores well on the weak high-frequency columns that make up most held-out samples,
   and gives the worst image);
5. every fit is scored by its mean squared error on the held-out samples,
   ``e = ‖M_h ⊙ (A x − y)‖² / n_h`` (coils included), per slice.

The **prior-fit ratio** per slice is ``r = e_generative / min_c e_c`` over the classical
candidates ``c``: below 1 the prior predicts unmeasured k-space better than the best classical
reconstruction of the same samples. Most held-out columns lie far from the centre, where a
generator's texture is least right, while the image error is dominated by the few unmeasured
columns next to the centre, where the prior helps most: on the prior's own training slices ``r``
is about 0.8–1.05 even where SGILO beats the best classical method by 4 dB. So the ratio that
says "unlike the training images" is a margin above 1 (:func:`prior_margin`, by acceleration
and for data of one coil or more, chosen on a tuning set, docs/GENERATIVE.md); above it
``sgilo reconstruct`` says so on stderr and ``auto`` keeps the classical method. Both ``e``
include the noise of the held-out samples, so ``r`` tends to 1 as the noise dominates.
``auto`` (:mod:`sgilo.pipeline.method_choice`) decides with the same test (optionally, with
``second_fit_below``, by a second generative fit that holds out more columns on another split).

A second statistic needs no held-out samples: the **unexplained fraction** per slice,
``u = (‖M_f ⊙ (A x̂ − y)‖² − min_c ‖M_f ⊙ (A x_c − y)‖²) / ‖M_f ⊙ y‖²``, how much of the energy
of the *fitted* samples the generator's model image ``x̂`` (before the final data-consistency
step, the chains' mean of their residuals) leaves unexplained beyond what the best classical fit
``x_c`` of the same samples leaves (which is about the noise, so the noise cancels to first
order). A generator explains the measured samples of an image like its training images (its
centre above all) down to a few percent; of a coronal or sagittal slice, another contrast, a head
or a body, or of data whose coil maps are wrong, 10–60 % (docs/GENERATIVE.md). It uses every
fitted sample, so it is far less noisy than the held-out error at 8×, where one or two columns
are held out. On slices accelerated :data:`UNEXPLAINED_FROM` times or more (4× and 8× data) a
``u`` above its limit (:func:`sgilo.pipeline.prior_fit_rule.unexplained_limit`) also counts as
unlike the training images (the warning, and ``auto`` keeps the classical method); below that it
is reported and not judged (not tuned there: more of k-space to explain).

With fewer than two candidate columns in a slice (a fully sampled or centre-only mask) or
non-Cartesian data nothing is held out: the method runs on all samples as without the check,
and the report says why (``note``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.model_images import chains_of, finish_chains, generator_resolution
from sgilo.pipeline.prior_fit_rule import (  # noqa: F401  (re-exported)
    PRIOR_MARGINS,
    SINGLE_COIL_PRIOR_MARGINS,
    SINGLE_COIL_UNEXPLAINED_LIMITS,
    UNEXPLAINED_FROM,
    UNEXPLAINED_LIMIT,
    noise_limit,
    prior_margin,
    unexplained_limit,
)
from sgilo.pipeline.solvers import heldout_columns as columns
from sgilo.pipeline.solvers.base import Progress, ReconResult
from sgilo.pipeline.solvers.classical import noise_level, scoring_options
from sgilo.pipeline.solvers.consistency import final_lambdas
from sgilo.pipeline.solvers.diagnostics import PriorFit
from sgilo.pipeline.solvers.kspace_split import (
    SplitPart,
    fitted_energy,
    fitted_residual,
    heldout_error,
    split_measurements,
)

#: the default fraction of the measured outer columns held out, and the draw's seed
HELDOUT_FRACTION = 0.1
HELDOUT_SEED = 0


def slice_accelerations(op: LinearOperator, batch: int) -> list[float]:
    """Per slice ``R = 1 / (sampled fraction of its mask)`` (``(B,)``, 1.0 without a mask)."""
    masks = op.slice_masks(batch)
    if masks is None:
        return [1.0] * batch
    fraction = (masks != 0).flatten(1).to(torch.float64).mean(dim=1).clamp_min(1e-12)
    return (1.0 / fraction).tolist()


def classical_candidates(op: LinearOperator) -> tuple[str, ...]:
    """The classical methods the generative fit is compared with: CG-SENSE (multi-coil only),
    ℓ1-wavelet and TV, at their default settings."""
    if op.coil_maps is not None:
        return ("cg-sense", "l1-wavelet", "tv")
    return ("l1-wavelet", "tv")


def why_not_checked(y: torch.Tensor, op: LinearOperator) -> str | None:
    """Why no k-space can be held out of ``y`` (non-Cartesian data, or a slice with fewer than
    two measured columns outside the fully sampled centre), or ``None``."""
    if op.kind != "mri" or op.slice_masks(y.shape[0]) is None:
        return "held-out k-space needs Cartesian MRI data"
    return columns.too_few_columns(op, y)


@dataclass
class HeldoutFits:
    """Fits of one split of the measurements (:func:`heldout_split`): the ``part`` (fitted and
    held-out problems), and per method its held-out error ``(B,)`` float64 (``errors``) and the
    squared residual on the fitted samples ``(B,)`` float64 (``fitted``; the generative
    method's: its model image's, before the final step)."""

    part: SplitPart
    fraction: float
    errors: dict[str, torch.Tensor]
    fitted: dict[str, torch.Tensor] = field(default_factory=dict)

    def classical_best(self, candidates: tuple[str, ...]) -> tuple[list[str], torch.Tensor]:
        """Per slice the classical candidate with the lowest held-out error, and that error."""
        stacked = torch.stack([self.errors[c] for c in candidates], dim=1)  # (B, C)
        best = stacked.argmin(dim=1)
        return [candidates[i] for i in best.tolist()], stacked.min(dim=1).values


def heldout_split(y: torch.Tensor, op: LinearOperator, fraction: float, seed: int) -> HeldoutFits:
    """Hold out ``fraction`` of the measured outer columns of every slice (seeded); ``y`` and
    ``op`` must pass :func:`why_not_checked`."""
    held = columns.draw_columns(columns.candidate_columns(op, y), fraction, seed)
    (part,) = split_measurements(op, y, held)
    return HeldoutFits(part, float(fraction), {})


def score_classical(
    fits: HeldoutFits, candidates: tuple[str, ...], seed: int = 0
) -> dict[str, torch.Tensor]:
    """Fit each classical candidate (default settings) on the fitted samples of ``fits`` and
    record its held-out error and fitted residual; returns the images ``(B, H, W)`` fitted on
    the split."""
    from sgilo.pipeline.methods import run_method

    images = {}
    for name in candidates:
        options = scoring_options(name)  # scores only: complex64
        result = run_method(
            fits.part.fit_y, fits.part.fit_op, name, seed=seed, solver_options=options
        )
        images[name] = result.image
        fits.errors[name] = heldout_error(fits.part, result.image)[0]
        fits.fitted[name] = fitted_residual(fits.part, result.image)[0]
    return images


def _latent_fit(
    part: SplitPart,
    method: str,
    *,
    prior: object,
    samples: int,
    seed: int,
    callback: Progress | None,
    options: dict,
) -> tuple[ReconResult, object]:
    """Step 2 of the module docstring: the latent fit of the generative ``method`` on the fitted
    samples of ``part``, without its final step; returns the result (model images) and the
    method's config with the data consistency that the final step is to use."""
    from sgilo.pipeline.methods import run_method

    model = run_method(
        part.fit_y,
        part.fit_op,
        method,
        prior=prior,
        samples=samples,
        seed=seed,
        callback=callback,
        solver_options={**options, "data_consistency": False},
    )
    config = model.diagnostics.config.model_copy(
        update={"data_consistency": options.get("data_consistency", True)}
    )
    return model, config


def fit_on_split(
    y: torch.Tensor,
    op: LinearOperator,
    part: SplitPart,
    method: str,
    *,
    prior: object,
    samples: int = 1,
    seed: int = 0,
    callback: Progress | None = None,
    solver_options: dict | None = None,
) -> tuple[ReconResult, torch.Tensor, torch.Tensor]:
    """Steps 2–3 of the module docstring for one split ``part`` of ``y``: the latent fit of the
    generative ``method`` on the fitted samples, then the final data-consistency step on the
    same model image(s) twice. Returns the result whose image is the output on *all* samples
    (the chains' mean with their spread in ``std`` for SGILO with several chains; its config
    says the data consistency it used), the prediction from the fitted samples only
    (complex ``(B, H, W)``, the chains' mean), which :func:`heldout_error` scores, and the
    model images' squared residual on the fitted samples (float64 ``(B,)``, the chains'
    mean; before the final step: what the generator itself leaves unexplained)."""
    fit = {"prior": prior, "samples": samples, "seed": seed, "callback": callback}
    model, config = _latent_fit(part, method, **fit, options=dict(solver_options or {}))
    device = part.fit_y.device
    residuals = [fitted_residual(part, x.to(device))[0] for x in chains_of(model)]
    residual = torch.stack(residuals).mean(dim=0)
    predicted = finish_chains(model, config, part.fit_y, part.fit_op).mean(dim=0)
    on_all = finish_chains(model, config, y, op, generator_resolution(prior))
    if getattr(model, "samples", None) is not None and model.samples.numel():
        std = (on_all.abs() if on_all.is_complex() else on_all).std(dim=0, correction=0)
        model = replace(model, image=on_all.mean(dim=0), samples=on_all, std=std)
    else:
        model = replace(model, image=on_all[0])
    lambdas = None
    if getattr(config, "data_consistency", False):  # the output's step, as run.json reports it
        lambdas = final_lambdas(op, config, y.shape[0], generator_resolution(prior), y)
    model = replace(model, diagnostics=replace(model.diagnostics, config=config))
    if hasattr(model.diagnostics, "dc_lambdas"):
        model = replace(model, diagnostics=replace(model.diagnostics, dc_lambdas=lambdas))
    return model, predicted, residual


def predict_on_split(
    y: torch.Tensor,
    part: SplitPart,
    method: str,
    *,
    prior: object,
    samples: int = 1,
    seed: int = 0,
    callback: Progress | None = None,
    solver_options: dict | None = None,
) -> torch.Tensor:
    """Only the prediction of :func:`fit_on_split` (complex ``(B, H, W)``, the chains' mean):
    the latent fit and the final step on the fitted samples, for a fit that scores and whose
    output is not used (no final step on every sample)."""
    fit = {"prior": prior, "samples": samples, "seed": seed, "callback": callback}
    model, config = _latent_fit(part, method, **fit, options=dict(solver_options or {}))
    return finish_chains(model, config, part.fit_y, part.fit_op).mean(dim=0)


def checked_generative(
    y: torch.Tensor,
    op: LinearOperator,
    method: str,
    *,
    prior: object,
    samples: int = 1,
    seed: int = 0,
    callback: Progress | None = None,
    solver_options: dict | None = None,
) -> tuple[ReconResult, HeldoutFits | None]:
    """Run a generative ``method`` with the prior-fit check of the module docstring. Returns
    the result (its diagnostics carry the :class:`PriorFit` report) and the split's fits (the
    generative error under ``method``, each classical candidate's under its name; ``None``
    when nothing could be held out)."""
    from sgilo.pipeline.methods import run_method

    options = dict(solver_options or {})
    fraction = float(options.get("prior_fit_fraction", HELDOUT_FRACTION))
    reason = why_not_checked(y, op)
    if reason is not None:
        result = run_method(
            y,
            op,
            method,
            prior=prior,
            samples=samples,
            seed=seed,
            callback=callback,
            solver_options=options,
        )
        report = PriorFit(heldout_fraction=None, note=f"prior fit not measured: {reason}")
        return _with_report(result, report), None
    fits = heldout_split(y, op, fraction, HELDOUT_SEED)
    part = fits.part
    model, predicted, residual = fit_on_split(
        y,
        op,
        part,
        method,
        prior=prior,
        samples=samples,
        seed=seed,
        callback=callback,
        solver_options=options,
    )
    fits.errors[method] = heldout_error(part, predicted)[0]
    fits.fitted[method] = residual
    candidates = classical_candidates(op)
    score_classical(fits, candidates, seed=seed)
    best, best_error = fits.classical_best(candidates)
    accelerations = slice_accelerations(op, y.shape[0])
    multi_coil = op.num_coils > 1
    report = PriorFit(
        heldout_fraction=fits.fraction,
        heldout_errors={name: error.tolist() for name, error in fits.errors.items()},
        best_classical=best,
        ratio=(fits.errors[method] / best_error.clamp_min(1e-300)).tolist(),
        margin=[prior_margin(r, multi_coil=multi_coil) for r in accelerations],
        unexplained=unexplained_fraction(fits, method, candidates).tolist(),
        unexplained_limit=[unexplained_limit(r, multi_coil=multi_coil) for r in accelerations],
        noise_level=noise_level(y, op).tolist(),
        noise_limit=[noise_limit(r, multi_coil=multi_coil) for r in accelerations],
    )
    return _with_report(model, report), fits


def unexplained_fraction(
    fits: HeldoutFits, method: str, candidates: tuple[str, ...]
) -> torch.Tensor:
    """``u`` of the module docstring per slice, float64 ``(B,)``: the generative ``method``'s
    fitted residual less the lowest of the ``candidates``', over the fitted samples' energy."""
    lowest = torch.stack([fits.fitted[c] for c in candidates], dim=1).min(dim=1).values
    return (fits.fitted[method] - lowest) / fitted_energy(fits.part)[0].clamp_min(1e-300)


def _with_report(result: ReconResult, report: PriorFit) -> ReconResult:
    """``result`` with the prior-fit report in its diagnostics."""
    if result.diagnostics is None:
        return result
    return replace(result, diagnostics=replace(result.diagnostics, prior_fit=report))


def _margins(report: PriorFit) -> list[float]:
    """The report's per-slice margins (the 4× margin for a report without them)."""
    ratios = report.ratio or []
    return list(report.margin) if report.margin else [PRIOR_MARGINS[0][1]] * len(ratios)


def above_margin(report: PriorFit | None) -> list[int]:
    """The slices whose prior-fit ratio is above their margin (none without a ratio)."""
    if report is None or not report.ratio:
        return []
    return [i for i, (r, t) in enumerate(zip(report.ratio, _margins(report), strict=True)) if r > t]


def _above(values: list[float] | None, limits: list[float | None] | None) -> list[int]:
    """The indices where a value is above its limit (a ``None`` limit: not judged; none
    without either list)."""
    if not values or not limits:
        return []
    pairs = zip(values, limits, strict=True)
    return [i for i, (v, t) in enumerate(pairs) if t is not None and v > t]


def above_unexplained_limit(report: PriorFit | None) -> list[int]:
    """The slices whose unexplained fraction is above their limit (none where no limit
    applies, :func:`unexplained_limit`, or without the statistic)."""
    return [] if report is None else _above(report.unexplained, report.unexplained_limit)


def above_noise_limit(report: PriorFit | None) -> list[int]:
    """The slices whose estimated noise level is above their limit (none where no limit
    applies, :func:`noise_limit`, or without the statistic)."""
    return [] if report is None else _above(report.noise_level, report.noise_limit)


def unlike_prior(report: PriorFit | None) -> list[int]:
    """The slices that either test counts as unlike the prior's training images:
    :func:`above_margin` or :func:`above_unexplained_limit`."""
    return sorted(set(above_margin(report)) | set(above_unexplained_limit(report)))


def ratio_text(report: PriorFit | None) -> str | None:
    """``"prior-fit 0.71"`` (the mean ratio over slices; ``" (unlike prior on 2/5)"`` added when
    some slices fail a test of :func:`unlike_prior`), ASCII, for summary lines and file
    descriptions; ``None`` without a ratio."""
    if report is None or not report.ratio:
        return None
    ratios = report.ratio
    text = f"prior-fit {sum(ratios) / len(ratios):.2f}"
    worse = len(unlike_prior(report))
    if worse and len(ratios) > 1:
        text += f" (unlike prior on {worse}/{len(ratios)})"
    return text


def unexplained_text(report: PriorFit | None) -> str | None:
    """``"unexplained 4% (limit 9%)"``: the largest unexplained fraction over the slices where it
    is judged (``"unexplained 14% (not judged below 3x)"`` over all slices where it is judged on
    none), in percent, ASCII; ``None`` without the statistic."""
    if report is None or not report.unexplained:
        return None
    limits = report.unexplained_limit or [None] * len(report.unexplained)
    judged = [(u, t) for u, t in zip(report.unexplained, limits, strict=True) if t is not None]
    if not judged:
        worst = max(report.unexplained)
        return f"unexplained {100 * worst:.0f}% (not judged below {UNEXPLAINED_FROM:g}x)"
    u, t = max(judged)
    return f"unexplained {100 * u:.0f}% (limit {100 * t:.0f}%)"


def mismatch_warning(
    report: PriorFit | None, method: str, *, auto: bool = False, choice: list[str] | None = None
) -> str | None:
    """One line for stderr when some slice is unlike the prior's training images
    (:func:`unlike_prior`: the prior predicted held-out k-space worse than a classical method by
    more than the slice's margin, :func:`prior_margin`, or its model image left more of the
    fitted k-space unexplained than :func:`unexplained_limit`), else ``None``. ``auto``: the
    line says what auto kept there (``choice``: its method per slice; without it, that it kept
    a classical method)."""
    worse = unlike_prior(report)
    if not worse:
        return None
    advice = "compare with a classical method, or use --method auto"
    if auto:
        kept = [i for i in worse if choice is not None and choice[i] == method]
        advice = (
            f"auto kept {method} on {len(kept)} of them (its own settings)"
            if kept
            else "auto kept a classical method there"
        )
    reasons = []
    heldout = above_margin(report)
    if heldout:
        worst = max(heldout, key=lambda i: report.ratio[i])
        margin = _margins(report)[worst]
        how = "worse" if margin <= 1.0 else f"more than {margin:.2g}x worse"
        reasons.append(
            f"predicted held-out k-space {how} than {report.best_classical[worst]} "
            f"(ratio up to {report.ratio[worst]:.2f})"
        )
    unexplained = above_unexplained_limit(report)
    if unexplained:
        worst = max(unexplained, key=lambda i: report.unexplained[i])
        reasons.append(
            f"left {100 * report.unexplained[worst]:.0f}% more of the fitted k-space energy "
            f"unexplained than {report.best_classical[worst]} "
            f"(limit {100 * report.unexplained_limit[worst]:.0f}%)"
        )
    return (
        f"warning: {method}'s prior {' and '.join(reasons)} on {len(worse)} of "
        f"{len(report.ratio)} slice(s): the data may be unlike the prior's training images "
        f"(docs/GENERATIVE.md); {advice}"
    )


def noise_warning(report: PriorFit | None, method: str) -> str | None:
    """One line for stderr when a generative ``method`` ran on slices noisier than their
    :func:`noise_limit` (single-coil data at low acceleration, where on the tuning slices the
    classical methods gave the better image and the held-out error cannot tell: it is the
    noise), else ``None``. ``auto`` applies the same limit itself and needs no warning."""
    noisy = above_noise_limit(report)
    if not noisy:
        return None
    worst = max(noisy, key=lambda i: report.noise_level[i])
    return (
        f"warning: {len(noisy)} of {len(report.noise_level)} slice(s) are single-coil data with "
        f"a noise level sigma/s up to {report.noise_level[worst]:.2f}, above "
        f"{report.noise_limit[worst]:.2f}, where the classical methods gave better images than "
        f"the generative ones on the tuning slices (docs/GENERATIVE.md); compare {method} with "
        "a classical method, or use --method auto"
    )


def prior_warnings(
    report: PriorFit | None, method: str, *, auto: bool = False, choice: list[str] | None = None
) -> list[str]:
    """The stderr lines of a generative reconstruction's report: :func:`mismatch_warning` and,
    unless ``auto`` (which keeps a classical method there), :func:`noise_warning`."""
    lines = [mismatch_warning(report, method, auto=auto, choice=choice)]
    if not auto:
        lines.append(noise_warning(report, method))
    return [line for line in lines if line]
