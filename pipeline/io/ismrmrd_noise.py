"""Coil noise pre-whitening from ISMRMRD noise-measurement lines (``ACQ_IS_NOISE_MEASUREMENT``).

With the noise samples of all noise lines stacked as ``N`` complex ``(C, n)``, the noise
covariance is ``Ψ = N Nᴴ / n`` (``C × C``), scaled to the imaging lines' bandwidth by
``dwell_noise / dwell_image`` (``sample_time_us``; noise variance grows with the bandwidth
``1 / dwell``) when both are known. With ``Ψ = L Lᴴ`` (Cholesky) and ``σ² = tr(Ψ) / C`` (the mean
coil noise variance), the whitening matrix is

    W = σ L⁻¹,   so that   cov(W n) = σ² I:

the coils' noise becomes independent with equal variance ``σ²``, and the data keep their scale.
``σ`` is the *noise std* of one complex k-space sample of one (whitened) coil, ``E|n|² = σ²``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgilo.pipeline.io.ismrmrd_header import ismrmrd_error
from sgilo.pipeline.io.ismrmrd_table import line_values

#: most noise samples used (per coil): more adds nothing to a C × C covariance estimate
MAX_NOISE_SAMPLES = 1 << 20


@dataclass(frozen=True)
class NoiseWhitening:
    """``matrix``: complex128 ``(C, C)`` whitening matrix ``W``; ``std``: ``σ``."""

    matrix: np.ndarray
    std: float

    def apply(self, kspace: np.ndarray) -> np.ndarray:
        """``W`` applied along the coil axis of complex ``(S, C, H, W)`` k-space; complex64."""
        out = np.einsum("dc,schw->sdhw", self.matrix, kspace, optimize=True)
        return np.ascontiguousarray(out, dtype=np.complex64)


def noise_whitening(
    path: Path, rows: np.ndarray, noise: np.ndarray, channels: int, image_dwell: float
) -> NoiseWhitening | None:
    """The whitening of the noise lines ``noise`` (row indices of the acquisition table
    ``rows``), for imaging lines of ``channels`` coils and dwell time ``image_dwell`` (µs;
    ``<= 0`` if unknown). ``None`` when there are no noise lines.

    Raises:
        InputError: noise lines whose channel count differs from the imaging lines', non-finite
            noise samples, fewer noise samples than coils, or a singular covariance.
    """
    if noise.size == 0:
        return None
    head = rows["head"]
    counts = np.unique(head["active_channels"][noise])
    if counts.size != 1 or int(counts[0]) != channels:
        raise ismrmrd_error(
            path,
            f"inconsistent sizes: noise lines have {sorted(counts.tolist())} channels, imaging "
            f"lines {channels}",
        )
    parts, total = [], 0
    for i in noise:
        line = line_values(path, rows, int(i), channels)
        parts.append(line)
        total += line.shape[1]
        if total >= MAX_NOISE_SAMPLES:
            break
    samples = np.concatenate(parts, axis=1).astype(np.complex128)
    if not np.isfinite(samples).all():
        raise ismrmrd_error(path, "noise lines contain non-finite values (NaN or Inf)")
    if samples.shape[1] < 2 * channels:
        raise ismrmrd_error(
            path,
            f"{samples.shape[1]} noise samples are too few for a {channels}-coil noise "
            f"covariance (at least {2 * channels})",
        )
    psi = samples @ samples.conj().T / samples.shape[1]
    noise_dwell = float(np.median(head["sample_time_us"][noise]))
    if image_dwell > 0 and noise_dwell > 0 and np.isfinite(noise_dwell / image_dwell):
        psi *= noise_dwell / image_dwell
    sigma2 = float(np.real(np.trace(psi))) / channels
    try:
        lower = np.linalg.cholesky(psi)
        cond = np.linalg.cond(lower)
    except np.linalg.LinAlgError:
        cond = np.inf
    if not (sigma2 > 0 and np.isfinite(sigma2) and cond < 1e6):
        raise ismrmrd_error(
            path, "the noise covariance of the noise lines is singular (no noise, or coils copied)"
        )
    matrix = np.sqrt(sigma2) * np.linalg.inv(lower)
    return NoiseWhitening(matrix=matrix, std=float(np.sqrt(sigma2)))
