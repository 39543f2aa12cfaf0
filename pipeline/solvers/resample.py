"""Placing a generator's square image on an acquisition's grid: Fourier resampling + centring.

A prior of resolution ``R`` draws square ``(R, R)`` images; an acquisition's image grid is
``(H, W)``, often larger and not square (fastMRI brain k-space is 640×320 with a 2× oversampled
readout). :class:`GridPlacement` ``P`` maps one onto the other, linearly:

    P x = pad_{S→(H,W)}( F⁻¹ pad_{R→S}( F x ) ) · S / R,      S = min(H, W),

i.e. the generator's image is resampled to ``S × S`` pixels by zero-padding (``S > R``) or
cropping (``S < R``, an ideal low-pass) its centred k-space, and placed in the centre of the
``(H, W)`` grid, zero outside. The factor ``S / R`` keeps pixel values (``F`` is orthonormal).
So the prior covers the central ``S × S`` square of the field of view — the region fastMRI's
standard crop keeps — and the image outside it (the oversampled readout margins) is zero in the
model; the final data-consistency step restores whatever the measurements say there. Pixels
are assumed square. ``P`` is the identity when ``(H, W) = (R, R)``.

Centring convention: along an axis of length ``n`` the centre index is ``n // 2`` (the DC sample
of :func:`sgilo.operators.fft.fft2c`), and a block of length ``m`` sits at ``n // 2 − m // 2``.
"""

from __future__ import annotations

import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.fft import fft2c, ifft2c


def _offset(n: int, m: int) -> int:
    return n // 2 - m // 2


def _embed(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Centre ``x`` (..., h, w) in zeros (..., H, W) (H ≥ h, W ≥ w)."""
    out = x.new_zeros(*x.shape[:-2], *shape)
    r, c = _offset(shape[0], x.shape[-2]), _offset(shape[1], x.shape[-1])
    out[..., r : r + x.shape[-2], c : c + x.shape[-1]] = x
    return out


def _crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The centre ``(..., H, W)`` block of ``x`` (..., h, w) (h ≥ H, w ≥ W)."""
    r, c = _offset(x.shape[-2], shape[0]), _offset(x.shape[-1], shape[1])
    return x[..., r : r + shape[0], c : c + shape[1]]


def _resize_kspace(k: torch.Tensor, side: int) -> torch.Tensor:
    if side >= k.shape[-1]:
        return _embed(k, (side, side))
    return _crop(k, (side, side))


class GridPlacement(LinearOperator):
    """``P``: complex ``(B, R, R)`` generator images → complex ``(B, H, W)`` on the
    acquisition's grid (module docstring). The adjoint crops, resamples back and scales alike."""

    complex_input = complex_output = True

    def __init__(self, resolution: int, grid: tuple[int, int]) -> None:
        h, w = (int(v) for v in grid)
        if resolution < 1 or h < 1 or w < 1:
            raise ValueError(f"expected positive sizes, got resolution {resolution}, grid {grid}")
        super().__init__((resolution, resolution), (h, w))
        self.resolution = resolution
        self.side = min(h, w)
        self.gain = self.side / resolution

    @property
    def is_identity(self) -> bool:
        return tuple(self.oshape) == (self.resolution, self.resolution)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return x
        square = ifft2c(_resize_kspace(fft2c(x), self.side)) * self.gain
        return _embed(square, tuple(self.oshape))

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return y
        square = _crop(y, (self.side, self.side))
        return ifft2c(_resize_kspace(fft2c(square), self.resolution)) * self.gain
