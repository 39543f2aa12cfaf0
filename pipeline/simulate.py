"""Simulated MRI acquisitions from magnitude images.

No measured raw multi-coil k-space ships anywhere the project can install from, so demos, tests
and benchmarks simulate it, following the physics the reconstruction must handle:

1. a complex image ``x = m ⊙ exp(iφ)`` from a magnitude ``m`` with a smooth random phase ``φ``
   (:func:`smooth_phase`: a random field band-limited to the lowest spatial frequencies);
2. coil images ``S_c ⊙ x`` with birdcage sensitivities (``sigpy.mri.birdcage_maps``) normalised so
   that ``Σ_c |S_c|² = 1``: the root-sum-of-squares of the coil images is then exactly ``m``;
3. k-space ``F(S_c ⊙ x)`` (centred orthonormal FFT) plus circular complex Gaussian noise at a
   given SNR, ``SNR_dB = 10 log10(mean |F S x|² / σ²)`` — with an orthonormal FFT this equals the
   image-domain ratio of mean signal power to per-pixel noise variance;
4. retrospective undersampling with a fastMRI column mask.

The reference image that metrics compare against is the magnitude ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sgilo.operators.fft import fft2c
from sgilo.operators.masks import Seed, column_mask
from sgilo.operators.noise import ComplexGaussianNoise, sigma_for_snr


def _check_magnitude(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if np.iscomplexobj(images):
        raise ValueError(f"expected real magnitude images, got complex dtype {images.dtype}")
    if images.ndim != 3 or min(images.shape) < 1:
        raise ValueError(f"expected magnitude images of shape (slices, H, W), got {images.shape}")
    if not np.isfinite(images).all():
        raise ValueError("magnitude images must be finite, got NaN or Inf values")
    if (images < 0).any():
        raise ValueError("magnitude images must be non-negative")
    return images


def smooth_phase(
    shape: tuple[int, int], rng: np.random.Generator, max_phase: float = np.pi, cutoff: int = 3
) -> np.ndarray:
    """A smooth random phase map, float64 ``(H, W)`` in ``[−max_phase, max_phase]``.

    The real part of a random complex field whose Fourier coefficients are non-zero only for
    spatial frequencies ``|k_y|, |k_x| <= cutoff`` cycles per field of view, scaled so that its
    largest absolute value is ``max_phase``.
    """
    h, w = shape
    spectrum = np.zeros((h, w), dtype=np.complex128)
    cy, cx = h // 2, w // 2
    size = (2 * cutoff + 1, 2 * cutoff + 1)
    coeffs = rng.standard_normal(size) + 1j * rng.standard_normal(size)
    spectrum[cy - cutoff : cy + cutoff + 1, cx - cutoff : cx + cutoff + 1] = coeffs
    field = np.fft.ifft2(np.fft.ifftshift(spectrum)).real
    return field / np.abs(field).max() * max_phase


def normalized_birdcage_maps(num_coils: int, shape: tuple[int, int]) -> np.ndarray:
    """Birdcage coil sensitivities (sigpy), complex128 ``(C, H, W)`` with ``Σ_c |S_c|² = 1``."""
    import sigpy.mri

    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}")
    maps = sigpy.mri.birdcage_maps((num_coils, *shape))
    return maps / np.sqrt((np.abs(maps) ** 2).sum(axis=0, keepdims=True))


@dataclass(frozen=True)
class Acquisition:
    """A simulated (or retrospectively undersampled) acquisition of a stack of slices.

    - ``target``: float32 ``(S, H, W)`` magnitude reference;
    - ``image``: complex64 ``(S, H, W)`` the complex ground truth;
    - ``kspace``: complex64 ``(S, C, H, W)`` undersampled, noisy k-space (zeros where unsampled),
      ``C = 1`` for single-coil;
    - ``mask``: bool ``(W,)`` the column mask, shared by all slices;
    - ``maps``: complex64 ``(C, H, W)`` the true coil sensitivities (``None`` for single-coil);
    - ``sigma``: the noise standard deviation per complex k-space sample;
    - ``acceleration``, ``center_fraction``, ``num_low_frequencies``: the sampling parameters.
    """

    target: np.ndarray
    image: np.ndarray
    kspace: np.ndarray
    mask: np.ndarray
    maps: np.ndarray | None
    sigma: float
    acceleration: float
    center_fraction: float
    num_low_frequencies: int

    @property
    def multicoil(self) -> bool:
        return self.maps is not None

    @property
    def achieved_acceleration(self) -> float:
        return self.mask.size / float(self.mask.sum())


def simulate_acquisition(
    magnitudes: np.ndarray,
    *,
    acceleration: float,
    center_fraction: float,
    num_coils: int | None = None,
    snr_db: float | None = 30.0,
    mask_kind: str = "random",
    seed: Seed = 0,
) -> Acquisition:
    """Simulate an undersampled acquisition of ``magnitudes`` (float ``(S, H, W)``, ≥ 0).

    ``num_coils=None`` gives single-coil data; otherwise ``num_coils`` birdcage coils. The phase of
    each slice, the noise and the mask are drawn from ``seed`` (one mask for the whole stack, like
    a fastMRI volume). ``snr_db=None`` adds no noise.
    """
    mags = _check_magnitude(magnitudes).astype(np.float64)
    if num_coils is not None and num_coils < 1:
        raise ValueError(f"num_coils must be >= 1 or None, got {num_coils}")
    s, h, w = mags.shape
    mask = column_mask(mask_kind, w, center_fraction, acceleration, seed)
    rng = np.random.default_rng(seed if isinstance(seed, int) else list(seed))
    phases = np.stack([smooth_phase((h, w), rng) for _ in range(s)])
    image = mags * np.exp(1j * phases)
    maps = None if num_coils is None else normalized_birdcage_maps(num_coils, (h, w))
    coil_images = image[:, None] if maps is None else image[:, None] * maps[None]
    full = fft2c(torch.from_numpy(coil_images))
    sigma = 0.0
    if snr_db is not None:
        sigma = sigma_for_snr(full, snr_db)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        full = ComplexGaussianNoise(sigma)(full, gen)
    kspace = (full * torch.from_numpy(mask.astype(np.float64))).numpy()
    n_low = int(round(w * center_fraction))
    return Acquisition(
        target=mags.astype(np.float32),
        image=image.astype(np.complex64),
        kspace=kspace.astype(np.complex64),
        mask=mask,
        maps=None if maps is None else maps.astype(np.complex64),
        sigma=float(sigma),
        acceleration=float(acceleration),
        center_fraction=float(center_fraction),
        num_low_frequencies=n_low,
    )


__all__ = [
    "Acquisition",
    "normalized_birdcage_maps",
    "simulate_acquisition",
    "smooth_phase",
]
