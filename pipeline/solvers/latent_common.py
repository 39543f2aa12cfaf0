"""Glue shared by the latent-space solvers (CSGM, ILO, SGILO): input checks, the data scale,
generator freezing, measurement counts, the phase estimated from the calibration region, the
generator output convention and the final unscaling + data-consistency step.

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

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from sgilo.operators.base import Identity, LinearOperator
from sgilo.operators.fft import fft2c, ifft2c
from sgilo.operators.image import (
    Colorization,
    GaussianCompressedSensing,
    Inpainting,
    PartialCirculant,
    SuperResolution,
)
from sgilo.operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI
from sgilo.pipeline.solvers.classical import batch_dot, data_scale
from sgilo.pipeline.solvers.resample import GridPlacement
from sgilo.pipeline.solvers.sampling import cartesian_mask
from sgilo.pipeline.solvers.sparse_deviation import (
    DCWaveletSetting,
    resolve_dc_wavelet,
    sparse_deviation,
)

PhaseModel = Literal["auto", "none", "from-calibration"]
#: the bounds of the fitted intensity gain (``Problem.gain``)
GAIN_RANGE = (0.5, 2.0)


def latent_dtype_device(generator: object, y: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    if isinstance(generator, torch.nn.Module):
        for p in generator.parameters():
            return p.dtype, p.device
    return y.real.dtype, y.device


def freeze(generator: object) -> list[tuple[torch.nn.Parameter, bool]]:
    if not isinstance(generator, torch.nn.Module):
        return []
    flags = [(p, p.requires_grad) for p in generator.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    return flags


def unfreeze(generator: object, flags: list[tuple[torch.nn.Parameter, bool]]) -> None:
    for p, flag in flags:
        p.requires_grad_(flag)


def num_measurements(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """``m`` per slice ``(B,)``: sampled entries × coils (Cartesian), else all of ``y``."""
    batch = y.shape[0]
    if isinstance(op, NonCartesianMRI):
        return torch.full((batch,), float(y[0].numel()), dtype=y.real.dtype, device=y.device)
    coils = op.num_coils if isinstance(op, MultiCoilMRI) else 1
    count = (cartesian_mask(op, batch) > 0).reshape(batch, -1).sum(dim=1) * coils
    return count.clamp_min(1).to(y.real.dtype)


def centre_columns(mask: torch.Tensor) -> torch.Tensor:
    """``(W,)`` 0/1: the contiguous run of fully sampled columns around the centre ``W // 2``."""
    full = (mask > 0).all(dim=0)
    width = full.shape[0]
    window = torch.zeros_like(full)
    centre = width // 2
    if not bool(full[centre]):
        return window
    lo = hi = centre
    while lo > 0 and bool(full[lo - 1]):
        lo -= 1
    while hi < width - 1 and bool(full[hi + 1]):
        hi += 1
    window[lo : hi + 1] = True
    return window


def calibration_phase(y: torch.Tensor, op: LinearOperator) -> torch.Tensor:
    """``e^{iφ}`` ``(B, H, W)``, φ the phase of the image of the fully sampled centre columns
    (coils combined with the conjugate maps for SENSE)."""
    if isinstance(op, NonCartesianMRI):
        raise ValueError(
            "phase='from-calibration' needs a Cartesian operator; use phase='none' for "
            "non-Cartesian data"
        )
    batch = y.shape[0]
    mask = cartesian_mask(op, batch)
    windows = torch.stack([centre_columns(mask[b]) for b in range(batch)])  # (B, W)
    if not bool(windows.any(dim=1).all()):
        raise ValueError(
            "phase='from-calibration' needs fully sampled centre columns in every slice's mask"
        )
    window = windows[:, None, :].to(y.real.dtype)  # (B, 1, W) → broadcasts over rows
    if isinstance(op, MultiCoilMRI):
        coil_images = ifft2c(window[:, None] * y)
        maps = op.maps.to(y.dtype)
        low = (maps.conj() * coil_images).sum(dim=1)
    else:
        low = ifft2c(window * y)
    mag = low.abs()
    return torch.where(mag > 0, low / mag.clamp_min(torch.finfo(mag.dtype).tiny), 1.0).to(y.dtype)


def data_consistency(
    x: torch.Tensor,
    y: torch.Tensor,
    op: LinearOperator,
    *,
    weight: float = 1e-3,
    iterations: int = 50,
) -> torch.Tensor:
    """Make ``x`` (complex ``(B, H, W)``) consistent with the measurements ``y``.

    Single-coil Cartesian: exact k-space replacement, ``F x ← y`` where sampled. Otherwise
    (SENSE, non-Cartesian): ``iterations`` CG steps from ``x̂ = x`` on
    ``(A^H A + μ I) x = A^H y + μ x̂`` with ``μ = weight · ‖A^H A‖``: ``‖A^H A‖`` is 1 for the
    Cartesian operators (normalised maps, 0/1 mask), and for the non-Cartesian one, whose
    ``A^H A`` scales with the number of samples (no density compensation), its largest
    eigenvalue per slice (:func:`normal_norm`), so ``weight`` means the same for both.
    """
    if isinstance(op, SingleCoilMRI):
        mask = cartesian_mask(op, x.shape[0]).to(y.real.dtype)
        k = fft2c(x)
        measured = y / mask.clamp_min(torch.finfo(mask.dtype).tiny)
        return ifft2c(torch.where(mask > 0, measured, k))
    # (A^H A + μ I) x = A^H y + μ x̂ by CG, started from x̂
    mu: float | torch.Tensor = weight
    if isinstance(op, NonCartesianMRI):
        mu = weight * normal_norm(op, x).view(-1, 1, 1)
    b = op.A_adjoint(y) + mu * x
    sol = x.clone()
    r = b - (op.normal(sol) + mu * sol)
    p = r.clone()
    rs = batch_dot(r, r)
    for _ in range(iterations):
        ap = op.normal(p) + mu * p
        alpha = rs / batch_dot(p, ap).clamp_min(1e-30)
        sol = sol + alpha.view(-1, 1, 1) * p
        r = r - alpha.view(-1, 1, 1) * ap
        rs_new = batch_dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)).view(-1, 1, 1) * p
        rs = rs_new
    return sol


def normal_norm(op: LinearOperator, like: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """The largest eigenvalue of ``A^H A`` per slice ``(B,)`` (real), by ``iterations`` power
    iterations from a fixed random start shaped like ``like`` ``(B, *op.ishape)``."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(like.shape, generator=g, dtype=like.dtype).to(like.device)
    norm = torch.ones(like.shape[0], dtype=like.real.dtype, device=like.device)
    with torch.no_grad():
        for _ in range(iterations):
            v = op.normal(v)
            norm = v.reshape(v.shape[0], -1).norm(dim=1)
            v = v / norm.clamp_min(torch.finfo(norm.dtype).tiny).view(-1, *([1] * (v.ndim - 1)))
    return norm


# ---------------------------------------------------------------------- solver input / output
#: the natural-image operators of the papers' baseline suite (real images, real measurements)
IMAGE_OPERATORS = (
    Inpainting,
    SuperResolution,
    GaussianCompressedSensing,
    PartialCirculant,
    Colorization,
)


def is_image_operator(op: LinearOperator) -> bool:
    """True for a natural-image operator: one of :data:`IMAGE_OPERATORS` or a real
    :class:`sgilo.operators.base.Identity` on a ``(C, H, W)`` image (denoising)."""
    if isinstance(op, IMAGE_OPERATORS):
        return True
    return isinstance(op, Identity) and not op.complex_input and len(op.ishape) == 3


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
    operator (:func:`is_image_operator`) on exactly the generator's ``(C, R, R)``, ``y`` real ``(B,
    *op.oshape)``."""
    if is_image_operator(op):
        _check_image_inputs(y, op, generator, solver, rounds)
        return
    if not isinstance(op, SingleCoilMRI | MultiCoilMRI | NonCartesianMRI):
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


def resolve_phase(phase: PhaseModel, channels: int) -> str:
    """``"auto"`` → from-calibration (1 channel) / none (2 channels); from-calibration is refused
    for 2-channel generators."""
    if phase == "auto":
        phase = "from-calibration" if channels == 1 else "none"
    if phase == "from-calibration" and channels == 2:
        raise ValueError("phase='from-calibration' is for 1-channel generators only")
    return phase


class MRIFitConfig(BaseModel):
    """The MRI options every latent-space solver shares: phase model, scale normalisation,
    intensity gain and the final data-consistency step (fields of CSGM/ILO/SGILO configs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: PhaseModel = Field(
        "auto",
        description="phase of a 1-channel (magnitude) generator: 'from-calibration' "
        "(e^{iφ} of the centre-of-k-space image) or 'none'; 'auto' = from-calibration for "
        "1-channel and none for 2-channel generators",
    )
    normalize: bool = Field(True, description="divide y by the data scale s, multiply back")
    fit_gain: bool = Field(
        True,
        description="scale the model image by a per-slice gain a ∈ [0.5, 2] fitted in closed "
        "form (corrects s, which undershoots the image's scale at high acceleration)",
    )
    data_consistency: bool = Field(True, description="final data-consistency step")
    dc_wavelet: DCWaveletSetting = Field(
        "auto",
        description="relative λ of the final step's sparse deviation from the model image, "
        "x = argmin ½‖Ax − y‖² + λ‖Ψ(x − x̂)‖₁ (0: exact data consistency; 'auto': per kind "
        "of data and sampled fraction, chosen on training slices; "
        "pipeline/solvers/sparse_deviation.py)",
    )
    dc_iterations: int = Field(
        50, ge=1, description="CG steps of multi-coil data consistency (about converged at μ)"
    )
    dc_weight: float = Field(
        1e-3,
        gt=0,
        description="μ of the multi-coil data consistency (chosen on training slices, "
        "docs/GENERATIVE_TUNING.md)",
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
    the held-out ones (``m_heldout`` of them per slice). ``None``: every measurement is fitted."""

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

    @property
    def batch(self) -> int:
        return self.y.shape[0]

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
        ax = self.op.A(x)
        if self.fit_gain:
            a = self._gain_of(ax)
            x = x * a.view(-1, *([1] * (x.ndim - 1)))
            ax = a.view(-1, *([1] * (ax.ndim - 1))) * ax
        fit, heldout = self._split_losses(ax - self.y_normalized)
        return x, fit, heldout

    def _split_losses(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The residual ``r`` ``(B, *oshape)`` → (fit loss, held-out loss or ``None``) ``(B,)``."""
        sq = r.abs().pow(2)
        if self.heldout is None:
            return sq.reshape(self.batch, -1).sum(dim=1) / self.m, None
        out = self._on_last_axis(self.heldout)
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
        return self._gain_of(self.op.A(x))

    def _gain_of(self, ax: torch.Tensor) -> torch.Tensor:
        """:meth:`gain` from ``A x`` ``(B, *op.oshape)`` (on the fitted entries only)."""
        yn = self.y_normalized
        if self.heldout is not None:
            fitted = ~self._on_last_axis(self.heldout)
            ax, yn = torch.where(fitted, ax, 0), torch.where(fitted, yn, 0)
        ax = ax.reshape(self.batch, -1)
        yn = yn.reshape(self.batch, -1)
        num = (ax.conj() * yn).real.sum(dim=1)
        den = ax.abs().pow(2).sum(dim=1).clamp_min(torch.finfo(num.dtype).tiny)
        return (num / den).clamp(GAIN_RANGE[0], GAIN_RANGE[1])

    def measurement_loss(self, x: torch.Tensor) -> torch.Tensor:
        """``‖A x − y/s‖² / m`` per slice ``(B,)`` (over the fitted entries)."""
        return self._split_losses(self.op.A(x) - self.y_normalized)[0]


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
    if is_image_operator(op):
        batch = y.shape[0]
        dtype, device = latent_dtype_device(generator, y)
        m = torch.full((batch,), float(math.prod(op.oshape)), dtype=y.dtype, device=y.device)
        ones = torch.ones(batch, dtype=y.dtype, device=y.device)
        channels = int(generator.config.image_channels)
        return ImageProblem(y, op, y, ones, m, channels, dtype, device)
    channels = int(generator.config.image_channels)
    phase_model = resolve_phase(phase, channels)
    batch = y.shape[0]
    scale = data_scale(y, op) if normalize else torch.ones(batch, dtype=y.real.dtype)
    scale = scale.to(device=y.device, dtype=y.real.dtype)
    y_n = y / scale.view(-1, *([1] * (y.ndim - 1)))
    carrier = (
        calibration_phase(y_n, op)
        if phase_model == "from-calibration"
        else torch.ones(batch, *op.ishape, dtype=y.dtype, device=y.device)
    )
    m = num_measurements(op, y)
    dtype, device = latent_dtype_device(generator, y)
    placement = GridPlacement(int(generator.config.resolution), tuple(op.ishape))
    return Problem(
        y, op, y_n, scale, carrier, phase_model, m, channels, dtype, device, placement, fit_gain
    )


def finish_image(
    problem: Problem | ImageProblem, x: torch.Tensor, config: MRIFitConfig
) -> torch.Tensor:
    """A normalised-units image ``(B, H, W)`` back in the units of ``y`` (× ``s``), then, if
    ``config.data_consistency``, made consistent with ``y`` and set to 0 outside the coils'
    support (:func:`coil_support`); detached. The consistency step is the sparse deviation
    ``x̂ + ν`` (:mod:`sgilo.pipeline.solvers.sparse_deviation`) when ``config.dc_wavelet`` resolves
    to λ > 0, else exact (:func:`data_consistency`). A natural-image problem's image
    ``(B, C, R, R)`` is returned as is (detached): the papers' form has no data-consistency
    step."""
    if isinstance(problem, ImageProblem):
        return x.detach()
    y = problem.y
    out = x.detach() * problem.scale.view(-1, 1, 1).to(y.dtype)
    if config.data_consistency:
        out = make_consistent(out, y, problem.op, config)
    support = coil_support(problem.op)
    if support is not None:
        out = out * support.to(out.device)
    return out.detach()


def make_consistent(
    x: torch.Tensor, y: torch.Tensor, op: LinearOperator, config: MRIFitConfig
) -> torch.Tensor:
    """The final step on a model image ``x`` (complex ``(B, H, W)``, units of ``y``): the sparse
    deviation ``x + ν`` (:func:`sgilo.pipeline.solvers.sparse_deviation.sparse_deviation`) when
    ``config.dc_wavelet`` resolves to λ > 0 (``"auto"`` always does), else exact data consistency
    (:func:`data_consistency` with ``config.dc_weight``, ``config.dc_iterations``)."""
    lam = resolve_dc_wavelet(config.dc_wavelet, op, x.shape[0])
    if bool((lam > 0).all()):
        return sparse_deviation(x, y, op, lam)
    return data_consistency(x, y, op, weight=config.dc_weight, iterations=config.dc_iterations)


def coil_support(op: LinearOperator) -> torch.Tensor | None:
    """Where the coil maps see the image, ``Σ_c |S_c|² > 0``: bool ``(H, W)`` or ``(B, H, W)``
    (``None`` for operators without maps). Outside it the measurements carry no information
    (ESPIRiT zeroes its maps outside the object), so a model image there is pure prior: a
    generator asked for a brain where a slice has almost none leaves one there that no amount
    of data consistency removes. SENSE reconstructions are 0 there; so are ours."""
    maps = getattr(op, "maps", None)
    if not isinstance(op, MultiCoilMRI | NonCartesianMRI) or maps is None:
        return None
    return maps.abs().pow(2).sum(dim=-3) > 0


def config_params(
    config: BaseModel, problem: Problem | ImageProblem
) -> dict[str, float | int | str]:
    """A solver config as ``ReconResult.params`` entries (``None`` and tuples as JSON), with the
    resolved ``phase`` of ``problem`` and, for an MRI problem with data consistency, the relative
    λ of the final step per slice (``dc_lambdas``, JSON; 0 = exact consistency)."""
    params: dict[str, float | int | str] = {
        **{
            key: (json.dumps(v) if v is None or isinstance(v, tuple) else v)
            for key, v in config.model_dump().items()
            if key != "phase"
        },
        "phase": problem.phase_model,
    }
    if isinstance(problem, Problem) and isinstance(config, MRIFitConfig):
        if config.data_consistency:
            lam = resolve_dc_wavelet(config.dc_wavelet, problem.op, problem.batch)
            params["dc_lambdas"] = json.dumps([float(v) for v in lam])
    return params


@contextmanager
def frozen(generator: object) -> Iterator[None]:
    """The generator's parameters frozen (``requires_grad`` off) inside, restored on exit."""
    flags = freeze(generator)
    try:
        yield
    finally:
        unfreeze(generator, flags)
