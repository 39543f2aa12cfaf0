"""Classical references for the natural-image tasks of the ILO/SGILO papers.

Every baseline is called as ``baseline(y, op, sigma) -> x̂``: ``y`` real float ``(B, *op.oshape)``
(the noisy measurement), ``op`` one of the operators of :mod:`sgilo.operators.image` or
:class:`sgilo.operators.base.Identity` on ``(3, H, W)``, ``sigma`` the known std of the Gaussian
measurement noise; ``x̂`` float32 numpy ``(B, 3, H, W)`` clipped to ``[0, 1]``.

Parameters are fixed by rules stated here, never tuned on the scored images:

- ``biharmonic`` (inpainting): ``skimage.restoration.inpaint_biharmonic`` per image, channels
  handled by ``channel_axis``; the unobserved pixels are filled, the observed ones kept as measured.
- ``tv``: ``argmin_{x ∈ [0,1]} ½‖A x − y‖² + λ TV(x)`` with the isotropic, colour-coupled TV
  ``TV(x) = Σ_p ‖(∇x)_p‖₂`` (norm over the 3 channels × 2 directions of pixel ``p``) and the rule
  **λ = σ** (the noise std; at least 1e-3). Solved by
  :func:`sgilo.pipeline.algorithms.total_variation.tv_least_squares` (Chambolle–Pock,
  :data:`TV_ITERATIONS` = 300 iterations from ``Aᴴ y``, primal step ``τ = 0.1/‖K‖`` and dual step
  ``σ = 10/‖K‖``; the step ratio and the iteration count were chosen so that 300 iterations land
  within 0.25 dB PSNR of a 1000-iteration solve at 64²: random and box inpainting,
  super-resolution ×4, partial-circulant CS, on the training photographs astronaut, rocket,
  immunohistochemistry). For denoising (``A = I``) it is
  ``skimage.restoration.denoise_tv_chambolle(y, weight=σ)`` instead: scikit-image's weight is the λ
  of the same objective (per channel, no box constraint); ``weight = σ`` follows the scikit-image
  gallery (weight 0.1 for noise of std ≈ 0.1–0.15).
- ``nl-means`` (denoising): ``denoise_nl_means(y, patch_size=5, patch_distance=6, h=0.8σ,
  sigma=σ, fast_mode=True)``: the scikit-image gallery's rule for a known σ.
- ``bicubic`` (super-resolution): ``skimage.transform.resize(y, (H, W), order=3)`` (cubic spline,
  pixel centres aligned as in :class:`~sgilo.operators.image.SuperResolution`, whose ``A`` is an
  anti-aliased Keys-bicubic downsampling: the upsampling is not its exact inverse).
- ``min-norm`` (compressed sensing): ``Aᴴ (A Aᴴ)⁻¹ y`` with 25 conjugate-gradient iterations on
  ``A Aᴴ u = y`` (:func:`sgilo.pipeline.algorithms.conjugate_gradient.conjugate_gradient`).
- ``grey`` (colorization): the luminance ``y / 0.9999`` copied to R, G and B.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sgilo.operators.base import Identity, LinearOperator
from sgilo.operators.image import LUMA_WEIGHTS, Colorization, Inpainting, SuperResolution
from sgilo.pipeline.algorithms.conjugate_gradient import conjugate_gradient
from sgilo.pipeline.algorithms.total_variation import tv_least_squares

Baseline = Callable[[torch.Tensor, LinearOperator, float], np.ndarray]

TV_ITERATIONS = 300
CG_ITERATIONS = 25


def _clipped(x: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def _hwc(x: np.ndarray) -> np.ndarray:
    """(3, H, W) → (H, W, 3), float64 for scikit-image."""
    return np.moveaxis(np.asarray(x, dtype=np.float64), 0, -1)


def _chw(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 0)


def _require(op: LinearOperator, kind: type, name: str) -> None:
    if not isinstance(op, kind):
        raise ValueError(f"{name}: expected a {kind.__name__} operator, got {type(op).__name__}")


# ---------------------------------------------------------------------- inpainting
def biharmonic(y: torch.Tensor, op: LinearOperator, sigma: float) -> np.ndarray:
    """Biharmonic inpainting of ``y = M ⊙ x + η`` (``op`` an :class:`Inpainting`)."""
    from skimage.restoration import inpaint_biharmonic

    _require(op, Inpainting, "biharmonic")
    missing = op.mask.detach().cpu().numpy()[0] == 0  # the same pixels in every channel
    out = []
    for img in y.detach().cpu().numpy():
        filled = inpaint_biharmonic(_hwc(img), missing, channel_axis=-1)
        out.append(_chw(filled))
    return _clipped(np.stack(out))


# ---------------------------------------------------------------------- TV
def tv(y: torch.Tensor, op: LinearOperator, sigma: float) -> np.ndarray:
    """TV-regularised least squares, λ = σ (skimage's Chambolle denoiser when ``A = I``)."""
    lam = max(float(sigma), 1e-3)
    if isinstance(op, Identity):
        from skimage.restoration import denoise_tv_chambolle

        imgs = y.detach().cpu().numpy()
        out = [_chw(denoise_tv_chambolle(_hwc(i), weight=lam, channel_axis=-1)) for i in imgs]
        return _clipped(np.stack(out))
    return _clipped(tv_least_squares(y, op, lam, TV_ITERATIONS))


# ---------------------------------------------------------------------- denoising
def nl_means(y: torch.Tensor, op: LinearOperator, sigma: float) -> np.ndarray:
    """Non-local means with the known noise std (``op`` the :class:`Identity`)."""
    from skimage.restoration import denoise_nl_means

    _require(op, Identity, "nl-means")
    out = []
    for img in y.detach().cpu().numpy():
        den = denoise_nl_means(
            _hwc(img),
            patch_size=5,
            patch_distance=6,
            h=0.8 * sigma,
            sigma=sigma,
            fast_mode=True,
            channel_axis=-1,
        )
        out.append(_chw(den))
    return _clipped(np.stack(out))


# ---------------------------------------------------------------------- super-resolution
def upsample(y: torch.Tensor, op: LinearOperator, order: int) -> np.ndarray:
    """``skimage.transform.resize`` of the low-resolution ``y`` to ``op.ishape`` (spline
    ``order``: 0 nearest, 3 cubic)."""
    from skimage.transform import resize

    _require(op, SuperResolution, "upsample")
    _, h, w = op.ishape
    out = [
        _chw(resize(_hwc(i), (h, w, i.shape[0]), order=order, anti_aliasing=False))
        for i in y.detach().cpu().numpy()
    ]
    return _clipped(np.stack(out))


def bicubic(y: torch.Tensor, op: LinearOperator, sigma: float) -> np.ndarray:
    """Cubic-spline upsampling of ``y`` by the operator's factor."""
    return upsample(y, op, order=3)


# ---------------------------------------------------------------------- compressed sensing
def min_norm(y: torch.Tensor, op: LinearOperator, sigma: float) -> np.ndarray:
    """``Aᴴ (A Aᴴ)⁻¹ y``: :data:`CG_ITERATIONS` conjugate-gradient steps on ``A Aᴴ u = y``."""
    with torch.no_grad():
        y = y.to(torch.float64)
        u = conjugate_gradient(lambda d: op.A(op.A_adjoint(d)), y, iterations=CG_ITERATIONS)
        return _clipped(op.A_adjoint(u))


# ---------------------------------------------------------------------- colorization
def grey(y: torch.Tensor, op: LinearOperator, sigma: float) -> np.ndarray:
    """The measured luminance in all three channels."""
    _require(op, Colorization, "grey")
    lum = y / sum(LUMA_WEIGHTS)
    return _clipped(lum.expand(-1, 3, -1, -1))


#: method name → (task kinds it applies to, the baseline)
CLASSICAL_NATURAL: dict[str, tuple[tuple[str, ...], Baseline]] = {
    "biharmonic": (("inpainting",), biharmonic),
    "nl-means": (("denoising",), nl_means),
    "bicubic": (("super-resolution",), bicubic),
    "min-norm": (("compressed-sensing",), min_norm),
    "grey": (("colorization",), grey),
    "tv": (("inpainting", "denoising", "super-resolution", "compressed-sensing"), tv),
}
