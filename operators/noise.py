"""Measurement-noise models, kept apart from the forward operators: ``y = A(x) + η``.

A noise model is called as ``noise(y, generator) -> y + η``; all randomness comes from the given
``torch.Generator`` (drawn on the generator's device, then moved to ``y``'s), so one seed gives
one noise realisation. Calling never changes the model.

SNR convention (:func:`sigma_for_snr`): ``SNR_dB = 10·log10(mean|y|² / σ²)``, where the mean is
over every entry of the clean measurement ``y`` and ``σ²`` is the noise variance per entry
(``E|η_i|² = σ²`` for both the real and the complex model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _check_sigma(sigma: float, who: str) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise ValueError(f"{who}: expected sigma a finite float >= 0, got {sigma!r}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"{who}: expected sigma a finite float >= 0, got {sigma!r}")


def _standard_normal(
    shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    draw = torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)
    return draw.to(device)


@dataclass(frozen=True)
class GaussianNoise:
    """``y + η`` with ``η_i ~ N(0, σ²)`` i.i.d., for real ``y`` of any shape and float dtype."""

    sigma: float

    def __post_init__(self) -> None:
        _check_sigma(self.sigma, "GaussianNoise")

    def __call__(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``y``: real float tensor, any shape → noisy tensor of the same shape and dtype."""
        if torch.is_complex(y) or not torch.is_floating_point(y):
            raise ValueError(
                f"GaussianNoise: expected a real floating-point tensor, got dtype {y.dtype} "
                "(use ComplexGaussianNoise for complex data)"
            )
        return y + self.sigma * _standard_normal(tuple(y.shape), y.dtype, generator, y.device)


@dataclass(frozen=True)
class ComplexGaussianNoise:
    """``y + η`` with circular complex ``η_i ~ CN(0, σ²)`` i.i.d., for complex ``y``.

    ``σ`` is the standard deviation of the complex noise per sample, ``E|η_i|² = σ²``: the real
    and imaginary parts are independent ``N(0, σ²/2)`` (each of std ``σ/√2``).
    """

    sigma: float

    def __post_init__(self) -> None:
        _check_sigma(self.sigma, "ComplexGaussianNoise")

    def __call__(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``y``: complex tensor, any shape → noisy tensor of the same shape and dtype."""
        if not torch.is_complex(y):
            raise ValueError(
                f"ComplexGaussianNoise: expected a complex tensor, got dtype {y.dtype} "
                "(use GaussianNoise for real data)"
            )
        real_dtype = y.real.dtype
        parts = _standard_normal((*y.shape, 2), real_dtype, generator, y.device)
        eta = torch.view_as_complex(parts.contiguous()) * (self.sigma / math.sqrt(2.0))
        return y + eta


def sigma_for_snr(signal: torch.Tensor, snr_db: float) -> float:
    """The noise std ``σ`` with ``10·log10(mean|signal|² / σ²) = snr_db``.

    ``signal``: the clean measurement, real or complex, any shape. Returns
    ``σ = sqrt(mean|signal|² · 10^(-snr_db/10))``, to pass to :class:`GaussianNoise` (real) or
    :class:`ComplexGaussianNoise` (complex, where ``σ²`` is the total per-sample variance).
    """
    if isinstance(snr_db, bool) or not isinstance(snr_db, int | float) or not math.isfinite(snr_db):
        raise ValueError(f"sigma_for_snr: expected snr_db a finite float, got {snr_db!r}")
    if signal.numel() == 0:
        raise ValueError("sigma_for_snr: expected a non-empty signal, got an empty tensor")
    power = float(signal.detach().abs().double().pow(2).mean())
    if not math.isfinite(power):
        raise ValueError("sigma_for_snr: expected a finite signal, got NaN or Inf values")
    if power == 0.0:
        raise ValueError("sigma_for_snr: signal power is zero, so the SNR is undefined")
    return math.sqrt(power * 10.0 ** (-snr_db / 10.0))
