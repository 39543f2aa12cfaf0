"""Acquisition effects on synthetic magnitude images: lower resolution, blur and Rician noise.

For image b with magnitude m (H×W), kept k-space fractions (f_row, f_col) ∈ (0, 1], Gaussian blur
σ_b (pixels) and noise level s_b:

    M = F⁻¹[ F[m] · 1{|k_r| ≤ f_row·H/2, |k_c| ≤ f_col·W/2} · exp(−2π² σ_b² (k_r²/H² + k_c²/W²)) ]
    out = | M + s_b · (n₁ + i n₂) |,   n₁, n₂ ~ N(0, 1) i.i.d. per pixel

(k in cycles per image). The box is an acquisition at lower resolution (f < 1: fewer phase or read
lines, zero-filled, with the ringing that real low-resolution MRI shows); the Gaussian is
partial-volume/slice-profile blur; the magnitude of a complex Gaussian perturbation gives the
Rician statistics of magnitude MRI (background noise floor included).
"""

from __future__ import annotations

import math

import torch

__all__ = ["degrade"]


def degrade(
    image: torch.Tensor,
    keep: torch.Tensor,
    blur_px: torch.Tensor,
    noise: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Low-pass in k-space, then Rician noise (module docstring).

    Args:
        image: float32, (B, H, W), non-negative magnitudes.
        keep: float32, (B, 2): kept k-space fractions (rows, columns), in (0, 1].
        blur_px: float32, (B,): Gaussian σ in pixels (0: none).
        noise: float32, (B,): noise standard deviation s_b per real/imaginary part.
        generator: on ``image``'s device.

    Returns:
        float32, (B, H, W), non-negative.
    """
    b, h, w = image.shape
    device = image.device
    kr = torch.fft.fftfreq(h, device=device)[None, :, None]  # cycles per pixel
    kc = torch.fft.fftfreq(w, device=device)[None, None, :]
    box = (kr.abs() <= keep[:, 0, None, None] / 2) & (kc.abs() <= keep[:, 1, None, None] / 2)
    gauss = torch.exp(-2 * math.pi**2 * blur_px[:, None, None] ** 2 * (kr**2 + kc**2))
    spectrum = torch.fft.fft2(image) * (box * gauss)
    low = torch.fft.ifft2(spectrum)
    n = torch.randn((2, b, h, w), generator=generator, device=device) * noise[None, :, None, None]
    return torch.complex(low.real + n[0], low.imag + n[1]).abs()
