"""What a solver reports about its run, as typed values: one frozen dataclass per solver family.

A :class:`sgilo.pipeline.solvers.base.ReconResult` carries one of them in ``diagnostics``:

- :class:`ClassicalDiagnostics`: zero-filled, CG-SENSE, ℓ1-wavelet and TV (their keyword
  options are their whole configuration);
- :class:`CSGMDiagnostics`, :class:`ILODiagnostics`, :class:`SGILODiagnostics`: the resolved
  config object the solver ran with (``config``) plus what the fit did, per slice.

Values are plain Python: lists of floats and ints (per slice ``B``, per round, per chain ``K``),
never JSON text. They are serialized once, at the edge, by :func:`diagnostics_record` (through
:meth:`ReconResult.diagnostics_dict`), for the HDF5 attributes of ``sgilo reconstruct``, DICOM
series descriptions and ``run.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgilo.pipeline.solvers.csgm import CSGMConfig
    from sgilo.pipeline.solvers.ilo import ILOConfig
    from sgilo.pipeline.solvers.sgilo import SGILOConfig


@dataclass(frozen=True)
class ClassicalDiagnostics:
    """Of a classical solver; a field that does not apply to the method is ``None``.

    - ``lambda_rel``: the relative regularisation weight per slice ``(B,)`` (ℓ1-wavelet, TV);
    - ``iterations``: CG steps run (CG-SENSE), or iterations (ℓ1-wavelet, TV);
    - ``damping``: CG-SENSE's Tikhonov weight;
    - ``shifts``: whether ℓ1-wavelet cycle-spun its wavelet grid;
    - ``lambda_abs``: the weight actually used per slice, ``λ_rel · s`` with ``s`` the slice's
      data scale (:func:`sgilo.pipeline.solvers.classical.data_scale`).

    With ``lam="auto"`` (λ from held-out k-space, :mod:`sgilo.pipeline.solvers.kspace_cv`),
    ``lambda_rel`` is the choice per slice and these say how it was made (all ``None`` for a
    fixed λ):

    - ``lambda_grid``: the relative weights tried per slice ``(B, G)`` (each slice's default,
      which depends on its acceleration, times the same factors);
    - ``heldout_errors``: ``(B, G)`` the mean squared error on the held-out samples of the fit
      with each grid weight, ``‖M_h ⊙ (A x − y)‖² / n_h``; the choice is the one-standard-error
      rule towards the default on each held-out column's error
      (:mod:`sgilo.pipeline.solvers.lambda_rule`);
    - ``heldout_fraction``: the fraction of the measured outer columns held out (per fold);
    - ``lambda_note``: why nothing was held out (single-coil data, or too few outer columns): λ
      is then the noise-based rule's (:func:`sgilo.pipeline.solvers.lambda_rule.noise_lambda`);
    - ``noise_sigma``: the noise level per slice ``(B,)``, in the units of ``y``
      (:func:`sgilo.pipeline.solvers.kspace_cv.estimate_noise_sigma`);
    - ``noise_source``: where it came from, ``"noise scan"`` (the input's, e.g. ISMRMRD noise
      lines: :mod:`sgilo.pipeline.solvers.known_noise`) or ``"k-space corners"`` (estimated).
    """

    lambda_rel: list[float] | None = None
    iterations: int | None = None
    damping: float | None = None
    shifts: bool | None = None
    lambda_abs: list[float] | None = None
    lambda_grid: list[list[float]] | None = None
    heldout_errors: list[list[float]] | None = None
    heldout_fraction: float | None = None
    lambda_note: str | None = None
    noise_sigma: list[float] | None = None
    noise_source: str | None = None


@dataclass(frozen=True)
class HeldoutChoice:
    """The iterate a hold-out run kept, per slice ``(B,)`` (per chain and slice ``(K·B,)`` for
    SGILO): its loss on the held-out measurements, its round and its step in that round
    (``steps`` is ``None`` when only the round was chosen)."""

    losses: list[float]
    rounds: list[int]
    steps: list[int] | None = None

    def record(self) -> dict[str, list[float] | list[int]]:
        """The run record's ``heldout_losses``, ``selected_rounds`` and ``selected_steps``."""
        out: dict[str, list[float] | list[int]] = {
            "heldout_losses": self.losses,
            "selected_rounds": self.rounds,
        }
        if self.steps is not None:
            out["selected_steps"] = self.steps
        return out


@dataclass(frozen=True)
class PriorFit:
    """How well the prior predicted k-space it did not fit (:mod:`sgilo.pipeline.prior_fit`).

    - ``heldout_fraction``: the fraction of the measured outer columns held out (``None`` when
      nothing was held out, then ``note`` says why);
    - ``heldout_errors``: per method (the generative one and each classical candidate) the mean
      squared error on the held-out samples per slice ``(B,)``, ``‖M_h ⊙ (A x − y)‖² / n_h``;
    - ``best_classical``: per slice the classical candidate with the lowest error;
    - ``ratio``: per slice the generative error over the best classical one (< 1: the prior
      predicts unmeasured k-space better);
    - ``margin``: per slice the ratio above which the data counts as unlike the prior's
      training images (:func:`sgilo.pipeline.prior_fit.prior_margin` of its acceleration and
      coils);
    - ``unexplained``: per slice the fraction of the fitted samples' energy that the
      generator's model image leaves unexplained beyond the best classical fit
      (:func:`sgilo.pipeline.prior_fit.unexplained_fraction`);
    - ``unexplained_limit``: per slice the fraction above which the data counts as unlike the
      prior's training images (``None``: reported, not judged;
      :func:`sgilo.pipeline.prior_fit.unexplained_limit`);
    - ``noise_level``: per slice the estimated noise level ``σ̂/s`` (noise std over the data
      scale, :func:`sgilo.pipeline.solvers.classical.noise_level`);
    - ``noise_limit``: per slice the level above which the classical methods were the better
      images on the tuning slices (``None``: not judged;
      :func:`sgilo.pipeline.prior_fit_rule.noise_limit`).
    """

    heldout_fraction: float | None
    heldout_errors: dict[str, list[float]] | None = None
    best_classical: list[str] | None = None
    ratio: list[float] | None = None
    note: str | None = None
    margin: list[float] | None = None
    unexplained: list[float] | None = None
    unexplained_limit: list[float | None] | None = None
    noise_level: list[float] | None = None
    noise_limit: list[float | None] | None = None

    def record(self) -> dict[str, Any]:
        """The run record's ``prior_fit_*`` fields (those that apply)."""
        out = {
            "prior_fit_ratio": self.ratio,
            "prior_fit_best_classical": self.best_classical,
            "prior_fit_heldout_errors": self.heldout_errors,
            "prior_fit_fraction": self.heldout_fraction,
            "prior_fit_note": self.note,
            "prior_fit_margin": self.margin,
            "prior_fit_unexplained": self.unexplained,
            "prior_fit_unexplained_limit": self.unexplained_limit,
            "prior_fit_noise_level": self.noise_level,
            "prior_fit_noise_limit": self.noise_limit,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class LatentDiagnostics:
    """What every latent-space solver (CSGM, ILO, SGILO) reports.

    - ``config``: the solver's config object as it ran (phase still as given);
    - ``phase``: the resolved phase model (``"from-calibration"``, ``"from-sense"`` or
      ``"none"``);
    - ``dc_lambdas``: the relative λ of the final data-consistency step per slice ``(B,)`` (0:
      exact consistency); ``None`` when there is no such step (switched off, natural images);
    - ``prior_fit``: how well the prior predicted held-out k-space against the classical methods
      (:class:`PriorFit`; set by :mod:`sgilo.pipeline.prior_fit`, ``None`` when not run).
    """

    config: Any
    phase: str
    dc_lambdas: list[float] | None = None
    prior_fit: PriorFit | None = None


@dataclass(frozen=True, kw_only=True)
class CSGMDiagnostics(LatentDiagnostics):
    """CSGM's fit, ``B`` slices, ``R`` restarts.

    - ``measurement_loss``: the mean of ``measurement_losses``, ``‖A x − y/s‖²/m`` per slice
      ``(B,)`` of the kept restart (``chosen_restart``, ``(B,)``);
    - ``restart_losses``: ``(R, B)`` every restart's final loss;
    - ``steps_run``: ``(R,)`` Adam steps each restart ran (fewer than ``steps`` when it stopped
      early);
    - ``data_scale``: ``s`` per slice ``(B,)``.
    """

    config: CSGMConfig
    measurement_loss: float
    measurement_losses: list[float]
    chosen_restart: list[int]
    restart_losses: list[list[float]]
    steps_run: list[int]
    data_scale: list[float]


@dataclass(frozen=True, kw_only=True)
class ILODiagnostics(LatentDiagnostics):
    """ILO's fit, ``B`` slices, ``rounds`` rounds.

    - ``measurement_loss``, ``measurement_losses``: the kept iterate's loss, mean and ``(B,)``;
    - ``round_losses``, ``round_start_losses``: ``(rounds,)`` the batch-mean loss at the end and
      at the start of each round;
    - ``steps_run``: ``(rounds,)`` Adam steps each round ran;
    - ``last_round_losses``: ``(B, steps)`` the last round's loss per slice and step;
    - ``data_scale``: ``s`` ``(B,)``; ``radius_fractions``: the ℓ1 balls' relative radius
      ``(B,)``;
    - ``heldout``: the iterate a hold-out run kept (``None`` without a hold-out).
    """

    config: ILOConfig
    rounds: int
    measurement_loss: float
    measurement_losses: list[float]
    round_losses: list[float]
    round_start_losses: list[float]
    steps_run: list[int]
    last_round_losses: list[list[float]]
    data_scale: list[float]
    radius_fractions: list[float]
    heldout: HeldoutChoice | None = None


@dataclass(frozen=True, kw_only=True)
class SGILODiagnostics(LatentDiagnostics):
    """SGILO's fit, ``K`` chains of ``B`` slices, ``rounds`` rounds.

    - ``prior_spaces``: the spaces of the score models given (``"z"`` or a block index);
      ``prior_spaces_used``: those in which a round took prior steps;
    - ``measurement_loss``: the mean of ``measurement_losses`` ``(K, B)``;
    - ``round_losses``, ``round_start_losses``: ``(K, rounds)`` each chain's slice-mean loss at
      the end and at the start of each round;
    - ``steps_run``: ``(rounds,)`` Adam steps each round ran;
    - ``data_scale``: ``s`` ``(B,)``; ``radius_fractions``: ``(B,)`` (empty without ℓ1 balls);
    - ``heldout``: the iterates a hold-out run kept, ``(K·B,)`` (``None`` without a hold-out).
    """

    config: SGILOConfig
    rounds: int
    prior_spaces: list[int | str]
    prior_spaces_used: list[int | str]
    measurement_loss: float
    measurement_losses: list[list[float]]
    round_losses: list[list[float]]
    round_start_losses: list[list[float]]
    steps_run: list[int]
    data_scale: list[float]
    radius_fractions: list[float]
    heldout: HeldoutChoice | None = None


Diagnostics = ClassicalDiagnostics | CSGMDiagnostics | ILODiagnostics | SGILODiagnostics


def diagnostics_record(diagnostics: Diagnostics | None) -> dict[str, Any]:
    """A JSON-able flat dict of ``diagnostics`` (``{}`` for ``None``): the config's fields
    (``model_dump(mode="json")``, tuples as lists; ``phase`` replaced by the resolved one), then
    the diagnostic fields in declaration order, with :class:`HeldoutChoice` spread into
    ``heldout_losses``/``selected_rounds``/``selected_steps`` and :class:`PriorFit` into its
    ``prior_fit_*`` fields; diagnostic fields that are ``None``
    (not applicable) are left out."""
    if diagnostics is None:
        return {}
    out: dict[str, Any] = {}
    config = getattr(diagnostics, "config", None)
    if config is not None:
        out.update({k: v for k, v in config.model_dump(mode="json").items() if k != "phase"})
    for f in fields(diagnostics):
        value = getattr(diagnostics, f.name)
        if f.name == "config" or value is None:
            continue
        if isinstance(value, HeldoutChoice | PriorFit):
            out.update(value.record())
        else:
            out[f.name] = value
    return out
