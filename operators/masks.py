"""Sampling patterns: fastMRI column masks, variable-density Poisson disc, radial and spiral.

Column masks select k-space columns (the last axis, ``W``: the phase-encode direction of the
fastMRI layout). Their conventions are fastMRI's, so that a given seed gives the same mask:

- ``n_low = round(W · center_fraction)`` fully sampled centre columns ``[p, p + n_low)`` with
  ``p = (W − n_low + 1) // 2``;
- random: every other column kept independently with probability
  ``(W / R − n_low) / (W − n_low)`` (so the expected number of columns is ``W / R``);
- equispaced: columns ``round(o + j·R')`` for ``R' = R (n_low − W) / (n_low R − W)`` and a random
  offset ``o ∈ [0, round(R'))``.

The random state is ``numpy.random.RandomState(seed)`` drawn in fastMRI's order (one draw to pick
among accelerations, then the mask), and ``seed`` may be an int or a tuple of ints (fastMRI seeds
with ``tuple(map(ord, file_name))``, see :func:`seed_from_name`).

Non-Cartesian trajectories are sigpy coordinates ``(..., 2)`` in cycles per field of view.
"""

from __future__ import annotations

import numpy as np

Seed = int | tuple[int, ...]


def seed_from_name(name: str) -> tuple[int, ...]:
    """fastMRI's per-file seed: the code points of the file name."""
    return tuple(ord(c) for c in name)


def _check_acceleration(acceleration: float) -> None:
    if not np.isfinite(acceleration) or acceleration < 1:
        raise ValueError(f"acceleration must be a finite number >= 1, got {acceleration}")


def _num_low_frequencies(width: int, center_fraction: float, acceleration: float) -> int:
    if width < 1:
        raise ValueError(f"k-space width must be positive, got {width}")
    _check_acceleration(acceleration)
    if not 0 < center_fraction <= 1:
        raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")
    n_low = int(round(width * center_fraction))
    if n_low > width / acceleration + 1e-9:
        raise ValueError(
            f"center_fraction {center_fraction} keeps {n_low} of {width} columns, more than the "
            f"{width / acceleration:.1f} an acceleration of {acceleration} allows"
        )
    return n_low


def center_columns(width: int, num_low_frequencies: int) -> slice:
    """The fully sampled centre columns of a fastMRI column mask."""
    start = (width - num_low_frequencies + 1) // 2
    return slice(start, start + num_low_frequencies)


def random_column_mask(
    width: int, center_fraction: float, acceleration: float, seed: Seed | None = None
) -> np.ndarray:
    """fastMRI ``RandomMaskFunc`` column mask: bool ``(W,)``."""
    n_low = _num_low_frequencies(width, center_fraction, acceleration)
    rng = np.random.RandomState(seed)
    rng.randint(0, 1)  # fastMRI's draw choosing among (center_fraction, acceleration) pairs
    if n_low == width:
        return np.ones(width, dtype=bool)
    prob = (width / acceleration - n_low) / (width - n_low)
    mask = rng.uniform(size=width) < prob
    mask[center_columns(width, n_low)] = True
    return mask


def equispaced_column_mask(
    width: int, center_fraction: float, acceleration: float, seed: Seed | None = None
) -> np.ndarray:
    """fastMRI ``EquispacedMaskFunc`` column mask: bool ``(W,)``."""
    n_low = _num_low_frequencies(width, center_fraction, acceleration)
    rng = np.random.RandomState(seed)
    rng.randint(0, 1)
    mask = np.zeros(width, dtype=bool)
    mask[center_columns(width, n_low)] = True
    if acceleration == 1 or n_low * acceleration == width:
        return np.ones(width, dtype=bool) if acceleration == 1 else mask
    adjusted = acceleration * (n_low - width) / (n_low * acceleration - width)
    offset = rng.randint(0, max(1, round(adjusted)))
    columns = np.around(np.arange(offset, width - 1, adjusted)).astype(int)
    mask[columns] = True
    return mask


def column_mask(
    kind: str, width: int, center_fraction: float, acceleration: float, seed: Seed | None = None
) -> np.ndarray:
    """``kind`` in {"random", "equispaced"}: the matching fastMRI column mask, bool ``(W,)``."""
    if kind == "random":
        return random_column_mask(width, center_fraction, acceleration, seed)
    if kind == "equispaced":
        return equispaced_column_mask(width, center_fraction, acceleration, seed)
    raise ValueError(f"mask kind must be 'random' or 'equispaced', got {kind!r}")


def poisson_disc_mask(
    shape: tuple[int, int],
    acceleration: float,
    calib: tuple[int, int] = (16, 16),
    seed: int = 0,
) -> np.ndarray:
    """Variable-density Poisson-disc mask (sigpy), bool ``(H, W)``, with a fully sampled
    ``calib`` centre; density ``∝ 1 / (1 + s|r|)`` with ``s`` found so the acceleration matches
    within 0.1."""
    import sigpy.mri

    _check_acceleration(acceleration)
    if acceleration == 1:
        return np.ones(shape, dtype=bool)
    mask = sigpy.mri.poisson(tuple(shape), acceleration, calib=calib, seed=seed)
    return np.abs(mask) > 0


def radial_trajectory(
    num_spokes: int, num_readout: int, image_shape: tuple[int, int], golden: bool = True
) -> np.ndarray:
    """Radial spokes through the k-space centre (sigpy), float ``(num_spokes, num_readout, 2)``
    in cycles/FOV; golden-angle ordering by default."""
    import sigpy.mri

    if num_spokes < 1 or num_readout < 2:
        raise ValueError(
            f"need >= 1 spoke and >= 2 readout points, got {num_spokes}, {num_readout}"
        )
    coord = sigpy.mri.radial((num_spokes, num_readout, 2), tuple(image_shape), golden=golden)
    return _clip_to_grid(coord, image_shape)


def spiral_trajectory(
    image_shape: tuple[int, int],
    num_interleaves: int,
    undersampling: float = 1.0,
    alpha: float = 1.0,
    fov: float = 0.24,
) -> np.ndarray:
    """Variable-density spiral interleaves (sigpy; Kim et al. 2003), float ``(K, 2)`` in
    cycles/FOV for a square ``image_shape``. ``undersampling`` > 1 spaces the turns further apart;
    ``alpha`` > 1 samples the centre more densely. Gradient limits: 40 mT/m, 150 T/m/s."""
    import sigpy.mri

    h, w = image_shape
    if h != w:
        raise ValueError(f"spiral_trajectory needs a square image, got {tuple(image_shape)}")
    if num_interleaves < 1 or undersampling <= 0:
        raise ValueError("num_interleaves must be >= 1 and undersampling > 0")
    coord = sigpy.mri.spiral(fov, h, 1.0, undersampling, num_interleaves, alpha, 0.04, 150.0)
    # sigpy returns k in units of 1/FOV already scaled to the matrix: normalise to [-N/2, N/2]
    coord = coord / np.abs(coord).max() * (h / 2)
    return _clip_to_grid(coord, image_shape)


def _clip_to_grid(coord: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    limits = np.asarray(image_shape, dtype=np.float64) / 2
    return np.clip(np.asarray(coord, dtype=np.float64), -limits, limits)


def density_compensation(coord: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Pipe–Menon density compensation weights (sigpy), float ``coord.shape[:-1]``.

    Relative weights with maximum 1: a gridding estimate ``A^H (w ⊙ y)`` still needs its overall
    scale fitted."""
    import sigpy.mri

    w = sigpy.mri.pipe_menon_dcf(np.asarray(coord), tuple(image_shape), show_pbar=False)
    w = np.asarray(w, dtype=np.float64)
    return w / w.max()


def acceleration_of(mask: np.ndarray) -> float:
    """Achieved acceleration: grid size over the number of sampled points."""
    mask = np.asarray(mask)
    sampled = np.count_nonzero(mask)
    if sampled == 0:
        raise ValueError("mask samples nothing")
    return mask.size / sampled
