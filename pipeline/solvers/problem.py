"""A latent-space solver's checked input (CSGM, ILO, SGILO): the input checks, the data scale
and normalised data, the phase carrier, the generator output convention (:meth:`Problem.image`),
the measurement loss and the final unscaling + data-consistency step (:func:`finish_image`).

Two kinds of problem reach the solvers, and :func:`prepare_problem` returns the matching object:

- **MRI** (:class:`Problem`): an operator of :mod:`sgilo.operators.mri`, complex k-space ``y``; the
  generator's 1-channel magnitude ``(G + 1)/2`` (times a phase carrier) or 2-channel real/imaginary
  image, placed on the operator's grid, in units normalised by the data scale ``s``; the final
  image is unscaled and (by default) made consistent with ``y``.
- **Natural images** (:class:`ImageProblem`): the papers' operators of :mod:`sgilo.operators.image`
  or the identity (denoising), real ``y``; the image is ``x = (G + 1)/2`` ``(B, C, R, R)``,
  nominally in [0, 1], with no phase, scale, gain, placement or data-consistency step (the papers'
  form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers.calibration import calibration_phase, num_measurements, sense_phase
from sgilo.pipeline.solvers.classical import data_scale
from sgilo.pipeline.solvers.consistency import final_lambdas, finish_model_image
from sgilo.pipeline.solvers.fit_config import MRIFitConfig, PhaseModel, resolve_phase
from sgilo.pipeline.solvers.generator_state import latent_dtype_device
from sgilo.pipeline.solvers.resample import GridPlacement
from sgilo.pipeline.solvers.sampling import sampled_columns

#: the bounds of the fitted intensity gain (``Problem.gain``)
GAIN_RANGE = (0.5, 2.0)


def _check_image_inputs(
    y: torch.Tensor, op: LinearOperator, generator: Any, solver: str, rounds: int | None
) -> None:
    channels = int(generator.config.image_channels)
    resolution = int(generator.config.resolution)
    want = (channels, resolution, resolution)
    if tuple(op.ishape) != want:
        raise ValueError(
            f"{solver}: {type(op).__name__} acts on images {tuple(op.ishape)}; the generator "
            f"makes {want} (natural-image operators are not resampled: build the operator on "
            "the generator's grid)"
        )
    if torch.is_complex(y) or not torch.is_floating_point(y) or tuple(y.shape[1:]) != op.oshape:
        raise ValueError(
            f"y must be real (B, {', '.join(map(str, op.oshape))}) for {type(op).__name__}, "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    if rounds is not None and rounds > generator.num_blocks:
        raise ValueError(
            f"{rounds} rounds need as many synthesis blocks; the generator has "
            f"{generator.num_blocks}"
        )


def check_inputs(
    y: torch.Tensor, op: LinearOperator, generator: Any, solver: str, rounds: int | None = None
) -> None:
    """``ValueError`` unless the inputs form an MRI or a natural-image problem (module docstring)
    and (when ``rounds`` is given) the generator has at least ``rounds`` synthesis blocks.

    MRI: ``op`` an MRI operator, ``y`` complex ``(B, *op.oshape)``, the generator 1- or
    2-channel. The operator's image grid may differ from the generator's resolution: the
    generator's image is then placed on it by
    :class:`sgilo.pipeline.solvers.resample.GridPlacement`. Natural images: ``op`` a natural-image
    operator (``op.kind == "image"``: :mod:`sgilo.operators.image`, or a real
    :class:`sgilo.operators.base.Identity` on a ``(C, H, W)`` image) on exactly the generator's
    ``(C, R, R)``, ``y`` real ``(B, *op.oshape)``."""
    if op.kind == "image":
        _check_image_inputs(y, op, generator, solver, rounds)
        return
    if op.kind != "mri":
        raise ValueError(
            f"{solver} needs an MRI operator or a natural-image operator, got {type(op).__name__}"
        )
    if not torch.is_complex(y) or y.ndim < 2 or tuple(y.shape[1:]) != op.oshape:
        raise ValueError(
            f"y must be complex (B, {', '.join(map(str, op.oshape))}) for {type(op).__name__}, "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    channels = int(generator.config.image_channels)
    if min(op.ishape) < 8:
        raise ValueError(f"the operator's image grid {tuple(op.ishape)} is too small (< 8)")
    if channels not in (1, 2):
        raise ValueError(
            f"{solver} needs a 1-channel (magnitude) or 2-channel (real, imaginary) generator, "
            f"got {channels} channels"
        )
    if rounds is not None and rounds > generator.num_blocks:
        raise ValueError(
            f"{rounds} rounds need as many synthesis blocks; the generator has "
            f"{generator.num_blocks}"
        )


@dataclass
class Problem:
    """A checked solver input: ``y_normalized = y / s`` per slice, ``scale`` ``s`` ``(B,)``,
    ``phase`` the carrier ``c`` ``(B, H, W)`` (resolved model ``phase_model``), ``m`` ``(B,)``
    measurements per slice, the generator's ``channels``, the latent ``dtype``/``device`` and
    ``placement`` ``P`` from the generator's ``(R, R)`` grid to the operator's ``(H, W)``.

    ``heldout`` (``(B, L)`` bool over the last axis of ``y``: k-space columns, or non-Cartesian
    samples; :mod:`sgilo.pipeline.solvers.holdout`) splits the measurements: the fit loss, the gain
    and ``m`` then use only the other entries, and :meth:`image_and_losses` also returns the loss on
    the held-out ones (``m_heldout`` of them per slice). ``None``: every measurement is fitted.

    ``columns`` (``(L',)`` long, :func:`~sgilo.pipeline.solvers.sampling.sampled_columns`): the
    last-axis entries of ``y`` that some slice samples; the losses and the gain read ``A x`` and
    ``y/s`` there only (:meth:`LinearOperator.A_columns`), where every other entry of both is
    zero. ``None``: all."""

    y: torch.Tensor
    op: LinearOperator
    y_normalized: torch.Tensor
    scale: torch.Tensor
    phase: torch.Tensor
    phase_model: str
    m: torch.Tensor
    channels: int
    dtype: torch.dtype
    device: torch.device
    placement: GridPlacement
    fit_gain: bool = False
    heldout: torch.Tensor | None = None
    m_heldout: torch.Tensor | None = None
    columns: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    def _read(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``A x``, ``y/s`` and the held-out flags ``(B, L')`` on the entries the losses read
        (:attr:`columns`)."""
        if self.columns is None:
            return self.op.A(x), self.y_normalized, self.heldout
        columns = self.columns
        heldout = None if self.heldout is None else self.heldout[:, columns]
        yn = self.y_normalized.index_select(-1, columns)
        return self.op.A_columns(x, columns), yn, heldout

    def _on_last_axis(self, columns: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` → broadcastable against ``y`` ``(B, …, L)``."""
        return columns.view(self.batch, *([1] * (self.y.ndim - 2)), columns.shape[-1])

    def image(self, g: torch.Tensor) -> torch.Tensor:
        """Generator output ``(B, C, R, R)`` → complex ``c ⊙ P x`` ``(B, H, W)`` (1 channel:
        ``x = (G + 1)/2``; 2 channels: ``x = G₀ + i G₁``), in normalised units; with
        ``fit_gain`` scaled by :meth:`gain`."""
        x = self._model_image(g)
        if self.fit_gain:
            x = x * self.gain(x).view(-1, *([1] * (x.ndim - 1)))
        return x

    def image_and_loss(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image(g), measurement_loss(image(g)))`` with one application of ``A``: with
        ``fit_gain`` the residual is ``a·(A x) − y/s``, reusing the ``A x`` of the gain (equal to
        the two calls up to float rounding; a solver step's image model and loss)."""
        x, loss, _ = self.image_and_losses(g)
        return x, loss

    def image_and_losses(
        self, g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`image_and_loss` plus the held-out loss ``‖a·A x − y/s‖²`` over the held-out
        entries ``/ m_heldout`` per slice ``(B,)`` (``None`` without a hold-out), all from one
        application of ``A``."""
        x = self._model_image(g)
        ax, yn, heldout = self._read(x)
        if self.fit_gain:
            a = self._gain_of(ax, yn, heldout)
            x = x * a.view(-1, *([1] * (x.ndim - 1)))
            ax = a.view(-1, *([1] * (ax.ndim - 1))) * ax
        fit, held = self._split_losses(ax - yn, heldout)
        return x, fit, held

    def _split_losses(
        self, r: torch.Tensor, heldout: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The residual ``r`` ``(B, …, L)`` and held-out flags ``(B, L)`` → (fit loss, held-out
        loss or ``None``) ``(B,)``."""
        sq = r.abs().pow(2)
        if heldout is None:
            return sq.reshape(self.batch, -1).sum(dim=1) / self.m, None
        out = self._on_last_axis(heldout)
        held = torch.where(out, sq, 0.0).reshape(self.batch, -1).sum(dim=1)
        fit = torch.where(out, 0.0, sq).reshape(self.batch, -1).sum(dim=1)
        assert self.m_heldout is not None
        return fit / self.m, held / self.m_heldout

    def _model_image(self, g: torch.Tensor) -> torch.Tensor:
        if self.channels == 1:
            x = ((g[:, 0] + 1) / 2).to(self.y.dtype)
        else:
            x = torch.complex(g[:, 0], g[:, 1]).to(self.y.dtype)
        return self.phase * self.placement.A(x)

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        """The per-slice gain ``a = clamp(Re⟨A x, y/s⟩ / ‖A x‖², 0.5, 2)`` ``(B,)`` that best
        matches ``a·x`` to the data (the least-squares optimum, kept in the autograd graph, so the
        latents are fitted to the gain-corrected residual)."""
        return self._gain_of(*self._read(x))

    def _gain_of(
        self, ax: torch.Tensor, yn: torch.Tensor, heldout: torch.Tensor | None
    ) -> torch.Tensor:
        """:meth:`gain` from ``A x`` and ``y/s`` ``(B, …, L)`` (on the fitted entries only)."""
        if heldout is not None:
            fitted = ~self._on_last_axis(heldout)
            ax, yn = torch.where(fitted, ax, 0), torch.where(fitted, yn, 0)
        ax = ax.reshape(self.batch, -1)
        yn = yn.reshape(self.batch, -1)
        num = (ax.conj() * yn).real.sum(dim=1)
        den = ax.abs().pow(2).sum(dim=1).clamp_min(torch.finfo(num.dtype).tiny)
        return (num / den).clamp(GAIN_RANGE[0], GAIN_RANGE[1])

    def measurement_loss(self, x: torch.Tensor) -> torch.Tensor:
        """``‖A x − y/s‖² / m`` per slice ``(B,)`` (over the fitted entries)."""
        ax, yn, heldout = self._read(x)
        return self._split_losses(ax - yn, heldout)[0]


@dataclass
class ImageProblem:
    """A checked natural-image problem (same interface as :class:`Problem`): ``y`` real
    ``(B, *op.oshape)``, used as is (``y_normalized = y``, ``scale`` = 1), ``m`` ``(B,)`` the
    number of measurements per image ``prod(op.oshape)``, the generator's ``channels`` and the
    latent ``dtype``/``device``."""

    y: torch.Tensor
    op: LinearOperator
    y_normalized: torch.Tensor
    scale: torch.Tensor
    m: torch.Tensor
    channels: int
    dtype: torch.dtype
    device: torch.device
    phase_model: str = "none"

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    def image(self, g: torch.Tensor) -> torch.Tensor:
        """Generator output ``(B, C, R, R)`` → the image ``x = (G + 1)/2`` (same shape)."""
        return ((g + 1) / 2).to(self.y.dtype)

    def measurement_loss(self, x: torch.Tensor) -> torch.Tensor:
        """``‖A x − y‖² / m`` per image ``(B,)``."""
        r = self.op.A(x) - self.y
        return r.pow(2).reshape(self.batch, -1).sum(dim=1) / self.m

    def image_and_loss(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image(g), measurement_loss(image(g)))``."""
        x = self.image(g)
        return x, self.measurement_loss(x)

    def image_and_losses(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """:meth:`image_and_loss` and no held-out loss (natural images have no hold-out)."""
        x, loss = self.image_and_loss(g)
        return x, loss, None


def prepare_problem(
    y: torch.Tensor,
    op: LinearOperator,
    generator: Any,
    *,
    phase: PhaseModel,
    normalize: bool,
    fit_gain: bool = False,
) -> Problem | ImageProblem:
    """The data scale, normalised data, phase carrier and measurement count of checked inputs
    (:func:`check_inputs`); ``ValueError`` for a phase model the generator cannot use. For a
    natural-image operator an :class:`ImageProblem` (the MRI options ``phase``, ``normalize`` and
    ``fit_gain`` do not apply and are ignored)."""
    if op.kind == "image":
        batch = y.shape[0]
        dtype, device = latent_dtype_device(generator, y)
        m = torch.full((batch,), float(math.prod(op.oshape)), dtype=y.dtype, device=y.device)
        ones = torch.ones(batch, dtype=y.dtype, device=y.device)
        channels = int(generator.config.image_channels)
        return ImageProblem(y, op, y, ones, m, channels, dtype, device)
    channels = int(generator.config.image_channels)
    phase_model = resolve_phase(phase, channels, multicoil=op.coil_maps is not None)
    batch = y.shape[0]
    scale = data_scale(y, op) if normalize else torch.ones(batch, dtype=y.real.dtype)
    scale = scale.to(device=y.device, dtype=y.real.dtype)
    y_n = y / scale.view(-1, *([1] * (y.ndim - 1)))
    if phase_model == "from-calibration":
        carrier = calibration_phase(y_n, op)
    elif phase_model == "from-sense":
        carrier = sense_phase(y_n, op)
    else:
        carrier = torch.ones(batch, *op.ishape, dtype=y.dtype, device=y.device)
    m = num_measurements(op, y)
    dtype, device = latent_dtype_device(generator, y)
    placement = GridPlacement(int(generator.config.resolution), tuple(op.ishape))
    return Problem(
        y,
        op,
        y_n,
        scale,
        carrier,
        phase_model,
        m,
        channels,
        dtype,
        device,
        placement,
        fit_gain,
        columns=sampled_columns(op, batch),
    )


def finish_image(
    problem: Problem | ImageProblem, x: torch.Tensor, config: MRIFitConfig
) -> torch.Tensor:
    """A normalised-units image ``(B, H, W)`` back in the units of ``y`` (× ``s``), then the
    final step (:func:`sgilo.pipeline.solvers.consistency.finish_model_image`): if
    ``config.data_consistency`` made consistent with ``y``, and set to 0 outside the coils'
    support; detached. The consistency step is the sparse deviation ``x̂ + ν``
    (:mod:`sgilo.pipeline.solvers.sparse_deviation`; from ``x̂``'s low band,
    :mod:`sgilo.pipeline.solvers.trusted_band`) when ``config.dc_wavelet`` resolves to λ > 0,
    else exact (:func:`data_consistency`). A natural-image problem's image ``(B, C, R, R)`` is
    returned as is (detached): the papers' form has no data-consistency step."""
    if isinstance(problem, ImageProblem):
        return x.detach()
    out = x.detach() * problem.scale.view(-1, 1, 1).to(problem.y.dtype)
    return finish_model_image(out, problem.y, problem.op, config, problem.placement.resolution)


def final_step_lambdas(problem: Problem | ImageProblem, config: MRIFitConfig) -> list[float] | None:
    """The relative λ of :func:`finish_image`'s data-consistency step per slice ``(B,)`` (0 =
    exact consistency; ``LatentDiagnostics.dc_lambdas``), ``None`` when there is no such step (a
    natural-image problem, or ``config.data_consistency`` off)."""
    if not isinstance(problem, Problem) or not config.data_consistency:
        return None
    return final_lambdas(problem.op, config, problem.batch, problem.placement.resolution, problem.y)
