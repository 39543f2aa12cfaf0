"""The pixels StyleGAN-2 networks see, values in [−1, 1], and back.

1 channel: ``x = 2m − 1`` for magnitudes m ∈ [0, 1], so ``m = (G(z) + 1)/2``; 2 channels:
``x = (Re, Im)`` of ``m·exp(iφ)`` unscaled (already in [−1, 1], background 0), so the complex image
is ``G(z)[:, 0] + i·G(z)[:, 1]``; 3 channels (RGB natural images in [0, 1]): ``x = 2·rgb − 1`` per
channel, so ``rgb = (G(z) + 1)/2``. :data:`PIXEL_MAPPING` is the line recorded in a trained
``generator.pt`` (``extra["pixel_mapping"]``).
"""

from __future__ import annotations

import torch
from torch import Tensor

PIXEL_MAPPING = {
    1: "magnitude = (x + 1) / 2",
    2: "complex = x[:, 0] + 1j * x[:, 1]",
    3: "rgb = (x + 1) / 2",
}


def to_network(x: Tensor, image_channels: int) -> Tensor:
    """Augmented reals → network pixels. (B, 1, R, R) magnitudes in [0, 1] → 2m − 1 (1 channel)
    or (m, 0) (2 channels); (B, 2, R, R) (real, imag) → unchanged; (B, 3, R, R) RGB in [0, 1]
    → 2·rgb − 1 (3 channels)."""
    if x.shape[1] == 2:
        return x
    if image_channels == 1 or (image_channels == 3 and x.shape[1] == 3):
        return x * 2.0 - 1.0
    return torch.cat((x, torch.zeros_like(x)), dim=1)


def network_to_magnitude(y: Tensor) -> Tensor:
    """Generator output (B, C, R, R) → magnitude (B, 1, R, R): (y + 1)/2 or |y₀ + i·y₁|.

    MRI generators only (C = 1 or 2); an RGB output (C = 3) raises ValueError (use
    :func:`network_to_image`).
    """
    if y.shape[1] == 3:
        raise ValueError("an RGB generator output has no magnitude: use network_to_image")
    if y.shape[1] == 1:
        return (y + 1.0) / 2.0
    return torch.hypot(y[:, :1], y[:, 1:2])


def network_to_image(y: Tensor) -> Tensor:
    """Generator output (B, C, R, R) → displayable image: RGB (B, 3, R, R) = (y + 1)/2 for
    C = 3, else the magnitude (B, 1, R, R) (:func:`network_to_magnitude`). Not clipped."""
    if y.shape[1] == 3:
        return (y + 1.0) / 2.0
    return network_to_magnitude(y)
