"""Data-side augmentation of magnitude (or RGB) training images for a small dataset.

Applied to the *real* batches only, before they reach the discriminator (no gradient flows through
it and generated images are never augmented, unlike ADA). The transforms are mild and anatomically
plausible, so the generator may learn them as part of the data distribution ("leaking"): that is
intended here. Every random number comes from the ``torch.Generator`` passed in, and each call
draws the same count of numbers for a given batch size and config, whatever the pixel values, so a
training run replays exactly from a saved generator state. The numbers are drawn on the generator's
device (a CUDA generator for a batch on the GPU: no host-to-device copy, no read-back).

Transforms, in the order :func:`augment_magnitudes` applies them (per sample, independently):

1. horizontal flip (last axis) with probability ``flip_prob`` (default 0.5);
2. affine jitter via ``affine_grid``/``grid_sample`` (bilinear, zero padding,
   ``align_corners=False``): the output pixel at normalized position p samples the input at
   ``R(θ)·p/s + t`` with θ ~ U[−rotation_deg, rotation_deg] degrees (default 5°),
   s ~ U[1 − scale, 1 + scale] (default ±5 %) and t ~ U[−translation, translation]² of the image
   side (default ±4 %); skipped when all three ranges are 0 (exact identity);
3. intensity scaling ×U[1 − intensity, 1 + intensity] (default ±10 %), then clipping to [0, 1]
   (inputs are scaled so their 99.5th percentile is 1, so the clip mimics that normalization).

The same three transforms apply to RGB images (B, 3, H, W) (:func:`augment_images`): the flip
and the affine warp act on all channels alike, and the intensity gain is one factor per image for
all three channels (colour balance is kept; only the clip can change hue, at saturated pixels).
The random draws do not depend on the channel count.

For 2-channel (real, imaginary) training, :func:`phase_augment` then turns a magnitude m into
``m·exp(iφ)`` with φ a random smooth phase map (:func:`random_smooth_phase`: the real part of a
random complex field whose Fourier coefficients are non-zero only for |k_y|, |k_x| ≤
``phase_max_freq`` cycles per field of view (default 3), scaled so that max|φ| = a with
a ~ U[0, ``phase_amplitude``] per sample (default π)), and returns the channels (real, imaginary) —
the channel order of ``sgilo.operators.complex_layout``. The magnitude is preserved exactly up to
float32 rounding. This is the "phase augmentation" recipe for training a complex-valued MRI prior
from magnitude-only images (Luo et al.); the phase model matches
``sgilo.pipeline.simulate.smooth_phase``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor


class AugmentConfig(BaseModel):
    """Parameters of :func:`augment_magnitudes` and :func:`phase_augment` (see module docstring).

    A zero range disables a transform (it still draws its random numbers).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    flip_prob: float = Field(0.5, ge=0.0, le=1.0, description="P(horizontal flip)")
    rotation_deg: float = Field(5.0, ge=0.0, le=180.0, description="rotation θ ~ U[±this] deg")
    scale: float = Field(0.05, ge=0.0, lt=1.0, description="zoom s ~ U[1 ± this]")
    translation: float = Field(0.04, ge=0.0, le=1.0, description="shift ~ U[±this] of the side")
    intensity: float = Field(0.1, ge=0.0, lt=1.0, description="gain ~ U[1 ± this], then clip")
    phase_max_freq: int = Field(3, ge=0, description="phase band limit, cycles per FOV")
    phase_amplitude: float = Field(
        math.pi, ge=0.0, le=math.pi, description="max|φ| ~ U[0, this] radians"
    )

    @classmethod
    def identity(cls) -> AugmentConfig:
        """No flips, no affine jitter, no intensity change (phase parameters at their defaults)."""
        return cls(flip_prob=0.0, rotation_deg=0.0, scale=0.0, translation=0.0, intensity=0.0)


def _uniform(shape: tuple[int, ...], half_width: float, generator: torch.Generator) -> Tensor:
    """U[−half_width, half_width], float32 of the given shape (always draws, even if 0)."""
    u = torch.rand(shape, generator=generator, device=generator.device)
    return (u * 2.0 - 1.0) * half_width


def _check_batch(x: Tensor, channels: int) -> None:
    if x.dim() != 4 or x.shape[1] != channels or x.is_complex():
        raise ValueError(f"expected real images (B, {channels}, H, W), got {tuple(x.shape)}")


def random_flip(x: Tensor, generator: torch.Generator, prob: float = 0.5) -> Tensor:
    """Flip each image left–right with probability ``prob``. x: (B, C, H, W) → same shape."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < prob
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


def random_affine(
    x: Tensor,
    generator: torch.Generator,
    rotation_deg: float = 5.0,
    scale: float = 0.05,
    translation: float = 0.04,
) -> Tensor:
    """Random rotation/zoom/shift per image, bilinear with zero padding. x: (B, C, H, W).

    Output position p (normalized to [−1, 1]) samples the input at R(θ)·p/s + t with
    θ ~ U[±rotation_deg]°, s ~ U[1 ± scale], t ~ U[±translation]² of the side (2·translation in
    normalized units).
    """
    b = x.shape[0]
    angle = _uniform((b,), rotation_deg * math.pi / 180.0, generator)
    zoom = 1.0 + _uniform((b,), scale, generator)
    shift = _uniform((b, 2), 2.0 * translation, generator)
    if rotation_deg == 0 and scale == 0 and translation == 0:
        return x
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        (torch.stack((cos, -sin, shift[:, 0]), 1), torch.stack((sin, cos, shift[:, 1]), 1)), 1
    ).to(device=x.device, dtype=x.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_intensity(x: Tensor, generator: torch.Generator, half_width: float = 0.1) -> Tensor:
    """x · U[1 ± half_width] per image, clipped to [0, 1]. x: (B, C, H, W)."""
    gain = 1.0 + _uniform((x.shape[0],), half_width, generator)
    return (x * gain.to(device=x.device, dtype=x.dtype)[:, None, None, None]).clamp(0.0, 1.0)


def random_smooth_phase(
    batch: int,
    size: int,
    generator: torch.Generator,
    max_freq: int = 3,
    amplitude: float = math.pi,
) -> Tensor:
    """Random smooth phase maps φ, float32 (B, 1, size, size) on the generator's device,
    max|φ| ~ U[0, amplitude].

    φ = a · f / max|f| with f(y, x) = Re Σ_k c_k exp(2πi (k_y y + k_x x)/size) over
    |k_y|, |k_x| ≤ max_freq, c_k complex standard Gaussian, a ~ U[0, amplitude] per map.
    """
    k, dev = 2 * max_freq + 1, generator.device
    coef = torch.randn(batch, k, k, 2, generator=generator, dtype=torch.float64, device=dev)
    a = torch.rand(batch, generator=generator, dtype=torch.float64, device=dev) * amplitude
    freqs = torch.arange(-max_freq, max_freq + 1, dtype=torch.float64, device=dev)
    pos = torch.arange(size, dtype=torch.float64, device=dev) / size
    basis = torch.exp(2j * math.pi * freqs[:, None] * pos[None, :])  # (K, size)
    c = torch.complex(coef[..., 0], coef[..., 1])  # (B, K_y, K_x)
    field = torch.einsum("ky,bkl,lx->byx", basis, c, basis).real
    peak = field.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return (field / peak * a[:, None, None]).float()[:, None]


def phase_augment(
    magnitude: Tensor,
    generator: torch.Generator,
    max_freq: int = 3,
    amplitude: float = math.pi,
) -> Tensor:
    """(real, imag) of m·exp(iφ) with a random smooth phase φ (:func:`random_smooth_phase`).

    magnitude: real (B, 1, H, W) with H == W → real (B, 2, H, W); |real + i·imag| = magnitude.
    """
    _check_batch(magnitude, 1)
    b, _, h, w = magnitude.shape
    if h != w:
        raise ValueError(f"phase augmentation needs square images, got {h}×{w}")
    phi = random_smooth_phase(b, h, generator, max_freq, amplitude).to(magnitude.device)
    return torch.cat((magnitude * torch.cos(phi), magnitude * torch.sin(phi)), dim=1)


def augment_magnitudes(x: Tensor, generator: torch.Generator, config: AugmentConfig) -> Tensor:
    """Flip → affine jitter → intensity scaling (see module docstring).

    x: magnitudes in [0, 1], real (B, 1, H, W) → (B, 1, H, W) in [0, 1].
    """
    _check_batch(x, 1)
    return _flip_affine_intensity(x, generator, config)


def augment_images(x: Tensor, generator: torch.Generator, config: AugmentConfig) -> Tensor:
    """:func:`augment_magnitudes` for grey or RGB images: one flip, warp and gain per image,
    shared by its channels. x: real (B, C, H, W) in [0, 1], C in {1, 3} → same shape in [0, 1]."""
    if x.dim() != 4 or x.shape[1] not in (1, 3) or x.is_complex():
        raise ValueError(f"expected real images (B, 1 or 3, H, W), got {tuple(x.shape)}")
    return _flip_affine_intensity(x, generator, config)


def _flip_affine_intensity(x: Tensor, generator: torch.Generator, config: AugmentConfig) -> Tensor:
    x = random_flip(x, generator, config.flip_prob)
    x = random_affine(x, generator, config.rotation_deg, config.scale, config.translation)
    return random_intensity(x, generator, config.intensity)


def augment_batch(
    x: Tensor, generator: torch.Generator, config: AugmentConfig, phase: bool = False
) -> Tensor:
    """:func:`augment_magnitudes`, then (``phase=True``) :func:`phase_augment`.

    x: magnitudes in [0, 1], (B, 1, H, W) → (B, 1, H, W) in [0, 1], or (B, 2, H, W) (real, imag)
    in [−1, 1] with phase augmentation; RGB (B, 3, H, W) in [0, 1] → the same shape
    (:func:`augment_images`; ``phase`` must be False).
    """
    if x.dim() == 4 and x.shape[1] == 3:
        if phase:
            raise ValueError("phase augmentation applies to magnitudes (B, 1, H, W), not RGB")
        return augment_images(x, generator, config)
    x = augment_magnitudes(x, generator, config)
    if phase:
        x = phase_augment(x, generator, config.phase_max_freq, config.phase_amplitude)
    return x
