"""Classical reconstructions: zero-filled, CG-SENSE, ℓ1-wavelet and total variation.

All take ``y`` and an MRI operator of :mod:`sgilo.operators.mri` (batched over slices) and return a
:class:`ReconResult`. Regularisation weights are *relative*: the absolute weight is
``λ = λ_rel · s`` with ``s`` the 99th percentile of the zero-filled magnitude of the slice
(:func:`data_scale`), so a default carries over between scanners and intensity units. (Both terms
of ``½‖A x − y‖² + λ R(x)`` scale as ``s²`` when ``R`` is replaced by ``s·R``; hence λ ∝ s.) The
defaults below were chosen on MNI *training* slices by ``sgilo tune-classical`` (see
docs/CLASSICAL_TUNING.md), never on the slices being scored.

- zero-filled: ``|A^H y|`` per coil combined by root-sum-of-squares (Cartesian; the fastMRI
  baseline), or the density-compensated gridding ``A^H (w ⊙ y)`` with its scale fitted to ``y``
  (non-Cartesian);
- CG-SENSE: conjugate gradients on ``(A^H A + μ I) x = A^H y`` in torch, batched over slices
  (:mod:`sgilo.pipeline.algorithms.conjugate_gradient`; FISTA, the power iteration and PDHG
  below are :mod:`sgilo.pipeline.algorithms.fista`,
  :mod:`sgilo.pipeline.algorithms.power_iteration` and :mod:`sgilo.pipeline.algorithms.pdhg`);
- ℓ1-wavelet: ``argmin ½‖A x − y‖² + λ‖Ψ x‖₁`` (Daubechies-4, the transform of sigpy's
  ``Wavelet`` computed in torch, :mod:`sgilo.pipeline.algorithms.wavelet`) by FISTA with
  cycle spinning, batched over slices in complex128
  (:mod:`sgilo.pipeline.algorithms.wavelet_least_squares`): in iteration ``k`` the wavelet
  shrinkage acts on the image circularly shifted by a random ``s_k ∈ [0, 16)²`` pixels and is
  shifted back, ``x ← S_k⁻¹ Ψ^H soft_{tλ}(Ψ S_k (z − t A^H(A z − y)))`` with
  ``t = 1/‖A^H A‖`` (power iteration). The random shifts average out the blocking of a fixed
  dyadic grid, as BART's ``pics`` does with its random wavelet shifts; on
  training slices at single-coil 4× it gains about 2 dB over the unshifted iteration (sigpy's
  ``L1WaveletRecon``, which gives the same images as ``shifts=False`` for a 0/1 mask: sigpy
  weights the residual by ``√M``, the operator here applies ``M``; docs/CLASSICAL_TUNING.md).
  The shifts come from a fixed seed, so a reconstruction is a function of its input;
- TV: ``argmin ½‖A x − y‖² + λ‖G x‖₁``, ``G`` the circular finite differences and ``|·|`` the
  complex modulus of each, by the package's PDHG with the steps of sigpy's ``TotalVariationRecon``
  (``σ = 1``, ``τ = 1/λ_max(AᴴA + GᴴG)`` per slice, ``θ = 1``), batched over slices in complex128:
  sigpy's images to rounding (:func:`total_variation`,
  :func:`sgilo.pipeline.algorithms.total_variation.anisotropic_tv_least_squares`);
  both started from 10 CG-SENSE iterations (for single-coil Cartesian data: the zero-filled image).

``lam="auto"`` (ℓ1-wavelet and TV, opt-in): λ per slice from held-out k-space, by
:mod:`sgilo.pipeline.solvers.kspace_cv` (a grid of 1/30 … 30 times the default, scored by the
prediction error of each outer column held out of the fit, in disjoint folds of 8 %, and chosen by
the one-standard-error rule towards the default, :mod:`sgilo.pipeline.solvers.lambda_rule`), then
a refit on every measurement; the grid, the held-out errors and the data's noise level go into the
diagnostics. A slice with fewer than two measured outer columns gets the noise-based λ
(:func:`sgilo.pipeline.solvers.lambda_rule.noise_lambda`) and a ``lambda_note``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.fft import ifft2c
from sgilo.pipeline.algorithms.conjugate_gradient import conjugate_gradient
from sgilo.pipeline.algorithms.total_variation import anisotropic_tv_least_squares
from sgilo.pipeline.algorithms.wavelet_least_squares import wavelet_l1_least_squares
from sgilo.pipeline.solvers.base import Progress, ReconResult
from sgilo.pipeline.solvers.diagnostics import ClassicalDiagnostics
from sgilo.pipeline.solvers.known_noise import known_sigma
from sgilo.pipeline.solvers.kspace_cv import LambdaChoice, choose_lambda, estimate_noise_sigma
from sgilo.pipeline.solvers.lambda_rule import NOISE_RAISE, noise_lambda, raised_for_noise
from sgilo.pipeline.solvers.sampling import interpolate_by_fraction, sampled_fraction
from sgilo.pipeline.solvers.slice_chunks import in_chunks

#: relative regularisation weights per (method, single- or multi-coil data) as ``(λ at 8×,
#: λ at 4×)``, set per slice from its sampled fraction
#: (:func:`sgilo.pipeline.solvers.sampling.interpolate_by_fraction`: geometric between the two,
#: constant outside). Single-coil: one value at both, chosen on MNI training slices by
#: `sgilo tune-classical`; multi-coil: one per acceleration, chosen by
#: :mod:`sgilo.pipeline.research.kspace_cv_rules` on the tuning images of
#: :mod:`sgilo.pipeline.research.auto_margin` (docs/CLASSICAL_TUNING.md). Multi-coil ℓ1-wavelet's
#: is raised on data noisier than the tuning's (:func:`tuned_lambda`)
DEFAULT_LAMBDA: dict[tuple[str, str], tuple[float, float]] = {
    ("l1-wavelet", "single-coil"): (0.003, 0.003),
    ("l1-wavelet", "multi-coil"): (1e-3, 3e-4),
    ("tv", "single-coil"): (0.1, 0.1),
    ("tv", "multi-coil"): (0.03, 0.01),
}
DEFAULT_ITERATIONS = {"cg-sense": 40, "l1-wavelet": 100, "tv": 100}
#: CG-SENSE iterations that initialise the ℓ1-wavelet and TV solvers
WARM_START_ITERATIONS = 10
#: the precision of the ℓ1-wavelet and TV fits that only *score* held-out k-space: the λ grid of
#: ``lam="auto"`` (:mod:`sgilo.pipeline.solvers.kspace_cv`) and the classical candidates of the
#: prior-fit check and of ``auto`` on a split (:func:`scoring_options`). An output is always
#: solved in complex128, as sigpy; a score needs no more than complex64: the held-out error moves by
#: about 1e-5 relative, for 1.2–1.9× less time (docs/SPEED.md §16)
SCORING_DTYPE = torch.complex64


def coil_kind(op: LinearOperator) -> str:
    """ "multi-coil" for operators with coil maps, else "single-coil"."""
    return "single-coil" if op.coil_maps is None else "multi-coil"


def default_lambda(method: str, op: LinearOperator, batch: int) -> torch.Tensor:
    """The tuned relative λ of ``method`` per slice, float64 ``(B,)``: :data:`DEFAULT_LAMBDA`
    for the kind of data ``op`` models at each slice's sampled fraction."""
    at_8x, at_4x = DEFAULT_LAMBDA[(method, coil_kind(op))]
    return interpolate_by_fraction(sampled_fraction(op, batch).cpu(), at_8x, at_4x)


def noise_level(
    y: torch.Tensor, op: LinearOperator, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``r = σ̂ / s`` per slice, float64 ``(B,)`` on the CPU: the noise std
    (:func:`sgilo.pipeline.solvers.kspace_cv.estimate_noise_sigma`; a noise scan's σ where the
    input has one) over the slice's data scale ``s`` (``scale``, :func:`data_scale` when not
    given)."""
    scale = data_scale(y, op) if scale is None else scale
    return estimate_noise_sigma(y, op) / scale.detach().cpu().to(torch.float64)


def tuned_lambda(
    method: str, y: torch.Tensor, op: LinearOperator, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """The default relative λ of ``method`` for the slices ``y`` ``(B,)``: :func:`default_lambda`
    raised where the data are noisier than the tuning's
    (:func:`sgilo.pipeline.solvers.lambda_rule.raised_for_noise` of ``σ̂ / s``, ``scale`` the
    slices' data scale ``s`` ``(B,)``, :func:`data_scale` when not given)."""
    default = default_lambda(method, op, y.shape[0])
    if (method, coil_kind(op)) not in NOISE_RAISE:
        return default
    return raised_for_noise(method, coil_kind(op), default, noise_level(y, op, scale))


def _check_op(op: LinearOperator) -> None:
    if op.kind != "mri":
        raise ValueError(f"classical solvers need an MRI operator, got {type(op).__name__}")


def zero_filled(
    y: torch.Tensor,
    op: LinearOperator,
    *,
    dcf: torch.Tensor | None = None,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
) -> ReconResult:
    """Zero-filled reconstruction; for multi-coil Cartesian data the image is the RSS magnitude
    (real, as fastMRI's baseline), otherwise the complex adjoint. ``dcf``: real ``(K,)``
    density compensation for non-Cartesian data."""
    _check_op(op)
    start = time.perf_counter()
    mask = op.sampling_mask
    if mask is not None and op.coil_maps is not None:
        coil_images = ifft2c(mask.unsqueeze(-3).to(y.real.dtype) * y)
        image = coil_images.abs().pow(2).sum(dim=1).sqrt().to(y.dtype)
    elif mask is None:  # non-Cartesian
        weighted = y if dcf is None else y * dcf.to(y.real.dtype)
        image = op.A_adjoint(weighted)
        # fit the overall scale c of c·A^H(w y) to the measurements (not to any reference)
        ax = op.A(image)
        dims = tuple(range(1, ax.ndim))
        c = (ax.conj() * y).sum(dim=dims).real / ax.abs().pow(2).sum(dim=dims).clamp_min(1e-30)
        image = image * c.view(-1, 1, 1)
    else:
        image = op.A_adjoint(y)
    return ReconResult(
        image=image, seconds=time.perf_counter() - start, diagnostics=ClassicalDiagnostics()
    )


def cg_sense(
    y: torch.Tensor,
    op: LinearOperator,
    *,
    iterations: int = DEFAULT_ITERATIONS["cg-sense"],
    damping: float = 0.0,
    tolerance: float = 1e-5,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
) -> ReconResult:
    """CG-SENSE: ``iterations`` conjugate-gradient steps on ``(A^H A + μ I) x = A^H y`` from
    ``x₀ = 0``, batched over slices; ``μ = damping · s²`` (relative to the data scale). Early
    stopping (a few iterations) is the regulariser, as usual for CG-SENSE. A slice whose residual
    falls below ``tolerance · ‖A^H y‖`` has converged and is left as it is (single-coil Cartesian
    data converge in one step: further steps would divide rounding noise by ~0)."""
    _check_op(op)
    start = time.perf_counter()
    b = op.A_adjoint(y)
    mu = damping * data_scale(y, op).pow(2).view(-1, 1, 1)

    def normal(v: torch.Tensor) -> torch.Tensor:
        return op.normal(v) + mu * v

    history: list[float] = []

    def record(k: int, rs: torch.Tensor) -> None:
        history.append(float(rs.sum().sqrt()))
        if callback:
            callback(k, iterations, "cg-sense")

    x = conjugate_gradient(
        normal, b, iterations=iterations, tolerance=tolerance, on_iteration=record
    )
    return ReconResult(
        image=x,
        history=history,
        seconds=time.perf_counter() - start,
        diagnostics=ClassicalDiagnostics(iterations=len(history), damping=damping),
    )


def scoring_options(method: str) -> dict:
    """The solver options of a classical ``method``'s fit that only scores held-out k-space
    (:data:`SCORING_DTYPE` for ℓ1-wavelet and TV; nothing for the others, which run in the
    data's precision)."""
    return {"dtype": SCORING_DTYPE} if method in ("l1-wavelet", "tv") else {}


def data_scale(y: torch.Tensor, op: LinearOperator) -> torch.Tensor:
    """Per-slice scale ``s``: the 99th percentile of the zero-filled magnitude, ``(B,)``."""
    mag = zero_filled(y, op).image.abs().reshape(y.shape[0], -1).to(torch.float64)
    s = torch.quantile(mag, 0.99, dim=1)
    return torch.where(s > 0, s, mag.max(dim=1).values.clamp_min(1e-30)).to(y.real.dtype)


#: cycle spinning of the ℓ1-wavelet solver: shifts are drawn from [0, SHIFT_RANGE) per axis
SHIFT_RANGE = 16


def cycle_shifts(iterations: int, seed: int = 0) -> list[tuple[int, int]]:
    """The ℓ1-wavelet solver's shifts ``s_1 … s_K`` (module docstring): pairs drawn uniformly
    from ``[0, SHIFT_RANGE)`` by numpy's generator seeded with ``seed``, the same for every
    slice."""
    rng = np.random.default_rng(seed)
    return [tuple(int(k) for k in rng.integers(0, SHIFT_RANGE, size=2)) for _ in range(iterations)]


def _sigpy_start(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """``(1, *shape)`` complex128: the start of sigpy's ``MaxEig`` after ``np.random.seed(seed)``
    (normal real and imaginary parts of variance ½), so the step size is the one sigpy's app
    gave (drawn from a private ``RandomState``: the global one is left alone)."""
    rs = np.random.RandomState(seed)  # noqa: NPY002 - the legacy stream sigpy draws from
    draw = rs.normal(size=(*shape, 2), scale=1 / 2**0.5).view(np.complex128).reshape(shape)
    return torch.from_numpy(draw)[None]


def l1_wavelet(
    y: torch.Tensor,
    op: LinearOperator,
    *,
    lam: float | torch.Tensor | Literal["auto"] | None = None,
    iterations: int = DEFAULT_ITERATIONS["l1-wavelet"],
    shifts: bool = True,
    center: torch.Tensor | None = None,
    dtype: torch.dtype = torch.complex128,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
) -> ReconResult:
    """ℓ1-wavelet compressed sensing by FISTA with cycle spinning (module docstring), slices
    batched, from 10 CG-SENSE iterations; ``lam`` is relative (``None``: the tuned default for the
    data's kind and each slice's sampled fraction, :func:`default_lambda`; a ``(B,)`` tensor: one
    per slice; ``"auto"``: per slice from held-out k-space,
    :func:`sgilo.pipeline.solvers.kspace_cv.choose_lambda`, then refitted on every measurement);
    ``shifts=False``: the plain iteration (as sigpy's
    ``L1WaveletRecon``). ``rng`` is unused: every slice gets the same fixed sequence of shifts,
    so a slice's image does not depend on the batch it is in.

    ``center`` (complex ``(B, H, W)``): penalise the deviation from it instead of the image,
    ``argmin ½‖A x − y‖² + λ‖Ψ (x − x_c)‖₁``, solved as ``x = x_c + ν`` with ν the ℓ1-wavelet
    reconstruction of the residual data ``y − A x_c`` (λ still relative to the scale of ``y``).
    This is the sparse-deviation model of a generative image (Dhar et al., ICML 2018) that the
    generative solvers' final data-consistency step uses
    (:mod:`sgilo.pipeline.solvers.consistency`).

    ``dtype``: the precision FISTA runs in, complex128 as sigpy (the classical method), or
    complex64 (the generative final step, whose model image comes from a float32 generator:
    1.5–2× faster, the image within about 1e-4 relative, docs/SPEED.md §11).
    """
    _check_op(op)
    start = time.perf_counter()
    scale = data_scale(y, op).cpu().numpy().astype(np.float64)
    data = y if center is None else y - op.A(center.to(y.dtype))
    choice = None
    if isinstance(lam, str):
        _check_auto(lam)

        def fit(v: torch.Tensor, sub: LinearOperator, lam_abs: torch.Tensor) -> torch.Tensor:
            images = _l1_wavelet_images(
                v, sub, lam_abs.tolist(), iterations, shifts, dtype=SCORING_DTYPE
            )
            return images.to(dtype)

        choice = choose_lambda(
            data,
            op,
            fit,
            tuned_lambda("l1-wavelet", data, op, torch.from_numpy(scale)),
            torch.from_numpy(scale),
            fallback=_noise_fallback("l1-wavelet", data, op, torch.from_numpy(scale)),
            skip=_skip_heldout(op),
        )
        lam = torch.tensor(choice.lam_rel, dtype=torch.float64)
    if lam is None:
        lam = tuned_lambda("l1-wavelet", data, op, torch.from_numpy(scale))
    lams = torch.as_tensor(lam, dtype=torch.float64).expand(y.shape[0]).tolist()
    lam_abs = [v * s for v, s in zip(lams, scale, strict=True)]
    image = _l1_wavelet_images(data, op, lam_abs, iterations, shifts, callback, dtype)
    image = image.to(y.dtype)
    if center is not None:
        image = center.detach().to(image) + image
    return ReconResult(
        image=image,
        seconds=time.perf_counter() - start,
        diagnostics=ClassicalDiagnostics(
            iterations=iterations,
            lambda_rel=[float(v) for v in lams],
            lambda_abs=[float(v) for v in lam_abs],
            shifts=bool(shifts),
            **_auto_fields(choice, y, op),
        ),
    )


def _l1_wavelet_images(
    data: torch.Tensor,
    op: LinearOperator,
    lam_abs: list[float],
    iterations: int,
    shifts: bool,
    callback: Progress | None = None,
    dtype: torch.dtype = torch.complex128,
) -> torch.Tensor:
    """The ℓ1-wavelet images of ``data`` ``(B, *op.oshape)`` from 10 CG-SENSE iterations, with
    the absolute weights ``lam_abs`` ``(B,)``: complex ``(B, H, W)`` of ``dtype``
    (:func:`sgilo.pipeline.algorithms.wavelet_least_squares.wavelet_l1_least_squares` with the
    step-size start of sigpy's ``MaxEig``), complex128 as sigpy by default, on the CPU in chunks
    of slices (:func:`~sgilo.pipeline.solvers.slice_chunks.in_chunks`; the result does not
    depend on the chunks)."""
    warm = cg_sense(data, op, iterations=WARM_START_ITERATIONS).image.detach()
    lam = torch.tensor(lam_abs, dtype=torch.float64, device=data.device)
    step_start = _sigpy_start(op.ishape).to(dtype).to(data.device)
    cycle = cycle_shifts(iterations) if shifts else None

    def solve(index: list[int], sub: LinearOperator) -> torch.Tensor:
        return wavelet_l1_least_squares(
            data[index].detach().to(dtype),
            sub,
            lam[index],
            warm[index].to(dtype),
            iterations,
            start=step_start.expand(len(index), *op.ishape),
            shifts=cycle,
        )

    return in_chunks(data, op, solve, callback, "l1-wavelet", dtype)


def _check_auto(lam: str) -> None:
    if lam != "auto":
        raise ValueError(f"lam: expected a number, None or 'auto', got {lam!r}")


def _noise_fallback(
    method: str, y: torch.Tensor, op: LinearOperator, scale: torch.Tensor
) -> torch.Tensor:
    """The noise-based relative λ ``(B,)`` of ``lam="auto"`` when nothing can be held out: the
    default raised for the noise (:func:`tuned_lambda`) for the methods with that rule
    (:data:`sgilo.pipeline.solvers.lambda_rule.NOISE_RAISE`, measured at 128² and 12–30 dB),
    else :func:`sgilo.pipeline.solvers.lambda_rule.noise_lambda` of ``σ̂ / s``."""
    if (method, coil_kind(op)) in NOISE_RAISE:
        return tuned_lambda(method, y, op, scale)
    default = default_lambda(method, op, y.shape[0])
    return noise_lambda(method, coil_kind(op), default, noise_level(y, op, scale))


def _skip_heldout(op: LinearOperator) -> str | None:
    """Why ``lam="auto"`` does not hold out k-space for ``op``'s data: single-coil data, where a
    held-out column is predicted by the regulariser alone and its error does not tell λ
    (docs/CLASSICAL_TUNING.md); ``None`` for multi-coil data."""
    if coil_kind(op) == "single-coil":
        return "single-coil data: a held-out column is predicted by the regulariser alone"
    return None


def _auto_fields(choice: LambdaChoice | None, y: torch.Tensor, op: LinearOperator) -> dict:
    """The diagnostics of a ``lam="auto"`` run (none for a fixed λ): the grid, the held-out
    errors, the held-out fraction, the note of a fallback and the data's noise level."""
    if choice is None:
        return {}
    return {
        "lambda_grid": choice.grid,
        "heldout_errors": choice.errors,
        "heldout_fraction": choice.fraction,
        "lambda_note": choice.note,
        "noise_sigma": estimate_noise_sigma(y, op).tolist(),
        "noise_source": "k-space corners" if known_sigma() is None else "noise scan",
    }


def total_variation(
    y: torch.Tensor,
    op: LinearOperator,
    *,
    lam: float | torch.Tensor | Literal["auto"] | None = None,
    iterations: int = DEFAULT_ITERATIONS["tv"],
    dtype: torch.dtype = torch.complex128,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
) -> ReconResult:
    """Total-variation reconstruction ``argmin ½‖A x − y‖² + λ‖G x‖₁`` (module docstring),
    batched over slices; ``lam`` is relative (``None``: the tuned default for the data's kind and
    each slice's sampled fraction, :func:`default_lambda`; a ``(B,)`` tensor: one per slice;
    ``"auto"``: per slice from held-out k-space,
    :func:`sgilo.pipeline.solvers.kspace_cv.choose_lambda`, every grid point and slice as one
    batch, then refitted on every measurement). ``rng`` is unused (the step-size start is
    fixed).

    The iteration is sigpy's ``TotalVariationRecon`` run by the package's own PDHG
    (:func:`sgilo.pipeline.algorithms.total_variation.anisotropic_tv_least_squares`): circular
    finite differences, ``σ = 1``, ``τ = 1/λ_max(AᴴA + GᴴG)`` per slice from the power iteration
    started where sigpy's ``MaxEig`` starts after ``np.random.seed(0)``, ``θ = 1``, from 10
    CG-SENSE iterations, in complex128 as sigpy (``dtype``; complex64 for a fit that only scores,
    :data:`SCORING_DTYPE`; the image is returned in ``y``'s dtype). It gives
    sigpy's images to rounding (a relative 1e-7 for complex64 data, the rounding of the output;
    tests/pipeline/test_classical.py) for the cases sigpy's app covers the same way: a 0/1
    Cartesian mask, which sigpy applies as data weights (its ``√M ⊙ (F S x − y)`` is
    ``M ⊙ F S x − M ⊙ y``), and non-Cartesian data without density compensation (sigpy's app
    weights nothing when given a trajectory). The operator's own mask is used as it is, so a
    non-binary weighting mask gives the operator's ``½‖M ⊙ F S x − y‖²``, not sigpy's
    ``½‖√M ⊙ (F S x − y)‖²``.
    """
    _check_op(op)
    start = time.perf_counter()
    scale = data_scale(y, op).to(torch.float64)
    choice = None
    if isinstance(lam, str):
        _check_auto(lam)

        def fit(v: torch.Tensor, sub: LinearOperator, lam_abs: torch.Tensor) -> torch.Tensor:
            return _tv_images(v, sub, lam_abs, iterations, dtype=SCORING_DTYPE).to(dtype)

        fallback = _noise_fallback("tv", y, op, scale)
        default = default_lambda("tv", op, y.shape[0])
        skip = _skip_heldout(op)
        choice = choose_lambda(y, op, fit, default, scale, fallback=fallback, skip=skip)
        lams = torch.tensor(choice.lam_rel, dtype=torch.float64)
        lam_abs = lams * scale.cpu()
    else:
        lam = default_lambda("tv", op, y.shape[0]) if lam is None else lam
        lams = torch.as_tensor(lam, dtype=torch.float64).expand(y.shape[0]).clone()
        lam_abs = lams.to(scale.device) * scale
    image = _tv_images(y, op, lam_abs, iterations, callback, dtype)
    return ReconResult(
        image=image.to(y.dtype),
        seconds=time.perf_counter() - start,
        diagnostics=ClassicalDiagnostics(
            iterations=iterations,
            lambda_rel=lams.tolist(),
            lambda_abs=lam_abs.tolist(),
            **_auto_fields(choice, y, op),
        ),
    )


def _tv_images(
    y: torch.Tensor,
    op: LinearOperator,
    lam_abs: torch.Tensor,
    iterations: int,
    callback: Progress | None = None,
    dtype: torch.dtype = torch.complex128,
) -> torch.Tensor:
    """The TV images of ``y`` ``(B, *op.oshape)`` with the absolute weights ``lam_abs``
    ``(B,)`` float64: complex ``(B, H, W)`` of ``dtype`` (:func:`total_variation`), on the CPU
    in chunks of slices (:func:`~sgilo.pipeline.solvers.slice_chunks.in_chunks`; the result
    does not depend on the chunks)."""
    # warm start from a few CG-SENSE iterations: the first-order solver converges slowly from
    # zero (measured on training slices, 8-coil 4×, TV 100 iterations: 27.8 dB cold, 30.8 warm)
    warm = cg_sense(y, op, iterations=WARM_START_ITERATIONS).image.detach()
    lam = lam_abs.to(y.device)
    step_start = _sigpy_start(op.ishape).to(y.device)

    def solve(index: list[int], sub: LinearOperator) -> torch.Tensor:
        return anisotropic_tv_least_squares(
            y[index].detach().to(dtype),
            sub,
            lam[index],
            warm[index].to(dtype),
            iterations,
            start=step_start.expand(len(index), *op.ishape),
        )

    return in_chunks(y, op, solve, callback, "tv", dtype)


CLASSICAL: dict[str, Callable[..., ReconResult]] = {
    "zero-filled": zero_filled,
    "cg-sense": cg_sense,
    "l1-wavelet": l1_wavelet,
    "tv": total_variation,
}
