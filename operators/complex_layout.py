"""The one conversion between torch complex tensors and a 2-channel real layout.

Inside the project complex data is a torch complex dtype. Networks take real tensors, so at a
network boundary (and only there) complex images ``(B, H, W)`` become ``(B, 2, H, W)`` with channel
0 the real part and channel 1 the imaginary part.
"""

from __future__ import annotations

import torch


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """complex ``(B, H, W)`` → real ``(B, 2, H, W)`` (real, imaginary)."""
    if not torch.is_complex(x):
        raise ValueError(f"expected a complex tensor, got dtype {x.dtype}")
    return torch.stack((x.real, x.imag), dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """real ``(B, 2, H, W)`` → complex ``(B, H, W)``."""
    if torch.is_complex(x) or x.ndim < 2 or x.shape[1] != 2:
        raise ValueError(
            f"expected a real tensor of shape (B, 2, ...), got {tuple(x.shape)} {x.dtype}"
        )
    return torch.complex(x[:, 0], x[:, 1])
