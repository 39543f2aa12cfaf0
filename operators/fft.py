"""Centred, orthonormal 2-D Fourier transforms over the last two axes.

Convention (the fastMRI one, and sigpy's): k-space has its DC sample at index ``(H // 2, W // 2)``,
and ``fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho"))`` so that ``‖fft2c(x)‖ = ‖x‖`` and
``ifft2c`` is its exact inverse and adjoint. The same definition holds for odd sizes.
:func:`centred_fft_axis` is the same transform along one axis of a numpy array (hybrid spaces:
the readout of raw data, ESPIRiT's row padding).
"""

from __future__ import annotations

import numpy as np
import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal FFT. ``x``: complex, ``(..., H, W)`` → complex ``(..., H, W)``."""
    x = torch.fft.ifftshift(x, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.fft2(x, dim=_DIMS, norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse FFT: complex ``(..., H, W)`` → complex ``(..., H, W)``."""
    k = torch.fft.ifftshift(k, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.ifft2(k, dim=_DIMS, norm="ortho"), dim=_DIMS)


def centred_fft_axis(x: np.ndarray, axis: int, inverse: bool = False) -> np.ndarray:
    """Centred orthonormal (inverse) FFT of a numpy array along one ``axis`` (same convention:
    index ``n // 2`` is the DC sample); shape kept, complex result."""
    transform = np.fft.ifft if inverse else np.fft.fft
    shifted = np.fft.ifftshift(x, axes=axis)
    return np.fft.fftshift(transform(shifted, axis=axis, norm="ortho"), axes=axis)
