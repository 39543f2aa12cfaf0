"""Smooth multiplicative bias fields (receive-coil shading) for synthetic magnitude images.

For image b: i.i.d. Gaussian values ``g ~ N(0, strength_b²)`` on a ``nodes``×``nodes`` grid,
upsampled bicubically to the image (corner-aligned), and ``B_b = exp(g)``; the image is multiplied
by ``B_b``. With ``strength`` 0.3 the field spans roughly ×0.55…×1.8 across the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bias_fields"]


def bias_fields(
    strength: torch.Tensor, size: int, generator: torch.Generator, nodes: int = 4
) -> torch.Tensor:
    """Random smooth bias fields.

    Args:
        strength: float32, (B,): the standard deviation of the log-field at the nodes (0: none).
        size: image side.
        generator: on ``strength``'s device.
        nodes: grid nodes per axis (≥ 2; fewer is smoother).

    Returns:
        float32, (B, size, size), positive.
    """
    b = strength.shape[0]
    g = torch.randn((b, 1, nodes, nodes), generator=generator, device=strength.device)
    g = g * strength[:, None, None, None]
    field = F.interpolate(g, size=(size, size), mode="bicubic", align_corners=True)
    return field[:, 0].exp()
