"""Sampling masks: fastMRI conventions, reproducibility, Poisson disc, trajectories."""

import numpy as np
import pytest

from sgilo.operators.masks import (
    acceleration_of,
    center_columns,
    column_mask,
    density_compensation,
    equispaced_column_mask,
    poisson_disc_mask,
    radial_trajectory,
    random_column_mask,
    seed_from_name,
    spiral_trajectory,
)


def fastmri_random_rule(width, cf, accel, seed):
    """The rule as fastMRI documents it, written out independently."""
    rng = np.random.RandomState(seed)
    rng.randint(0, 1)
    n_low = int(round(width * cf))
    prob = (width / accel - n_low) / (width - n_low)
    mask = rng.uniform(size=width) < prob
    pad = (width - n_low + 1) // 2
    mask[pad : pad + n_low] = True
    return mask


@pytest.mark.parametrize(
    "width, cf, accel", [(368, 0.08, 4), (372, 0.04, 8), (128, 0.08, 4), (127, 0.04, 8)]
)
def test_random_mask_follows_fastmri_rule(width, cf, accel):
    for seed in (0, 7, seed_from_name("file1000001.h5")):
        np.testing.assert_array_equal(
            random_column_mask(width, cf, accel, seed), fastmri_random_rule(width, cf, accel, seed)
        )


def test_random_mask_centre_and_mean_acceleration():
    width, cf, accel = 368, 0.08, 4
    n_low = round(width * cf)
    cols = center_columns(width, n_low)
    assert (cols.start, cols.stop) == (170, 199)
    counts = [random_column_mask(width, cf, accel, seed).sum() for seed in range(400)]
    assert abs(np.mean(counts) - width / accel) < 1.5  # expected number of columns is W/R
    m = random_column_mask(width, cf, accel, 3)
    assert m[cols].all()


def test_masks_reproducible_and_seed_dependent():
    a = random_column_mask(200, 0.08, 4, 11)
    assert np.array_equal(a, random_column_mask(200, 0.08, 4, 11))
    assert not np.array_equal(a, random_column_mask(200, 0.08, 4, 12))
    assert np.array_equal(
        column_mask("equispaced", 200, 0.08, 4, 5), equispaced_column_mask(200, 0.08, 4, 5)
    )


@pytest.mark.parametrize("width, cf, accel", [(368, 0.08, 4), (320, 0.04, 8), (128, 0.08, 4)])
def test_equispaced_mask(width, cf, accel):
    m = equispaced_column_mask(width, cf, accel, seed=1)
    n_low = round(width * cf)
    assert m[center_columns(width, n_low)].all()
    assert abs(acceleration_of(m) - accel) / accel < 0.1
    outer = np.flatnonzero(m[: center_columns(width, n_low).start])
    gaps = np.diff(outer)
    assert gaps.max() - gaps.min() <= 1  # equally spaced up to rounding


def test_poisson_disc_mask():
    m = poisson_disc_mask((64, 48), 4, calib=(12, 12), seed=0)
    assert m.shape == (64, 48) and m.dtype == bool
    assert abs(acceleration_of(m) - 4) < 0.11
    assert m[32 - 6 : 32 + 6, 24 - 6 : 24 + 6].all()
    assert np.array_equal(m, poisson_disc_mask((64, 48), 4, calib=(12, 12), seed=0))


def test_trajectories_in_range():
    r = radial_trajectory(16, 64, (64, 64))
    assert r.shape == (16, 64, 2) and np.abs(r).max() <= 32
    s = spiral_trajectory((64, 64), num_interleaves=8)
    assert s.ndim == 2 and s.shape[1] == 2 and np.abs(s).max() <= 32

    # fully sampled radial (≈ π/2·N spokes): density falls as 1/|k|, so the weights grow as |k|
    r = radial_trajectory(101, 64, (64, 64))
    w = density_compensation(r, (64, 64))
    assert w.shape == (101, 64) and np.all(w >= 0) and w.max() == 1
    radius = np.linalg.norm(r, axis=-1)
    bands = [(radius >= a) & (radius < a + 4) for a in (2, 8, 14, 20, 24)]
    ratio = np.array([w[b].mean() / radius[b].mean() for b in bands])
    assert ratio.max() / ratio.min() < 1.1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: random_column_mask(128, 0.08, 0.5), "acceleration"),
        (lambda: random_column_mask(128, 0.08, float("nan")), "acceleration"),
        (lambda: random_column_mask(128, 0.0, 4), "center_fraction"),
        (lambda: random_column_mask(128, 0.5, 4), "more than"),
        (lambda: column_mask("spiral", 128, 0.08, 4), "random"),
        (lambda: poisson_disc_mask((32, 32), 0.9), "acceleration"),
        (lambda: acceleration_of(np.zeros(8)), "nothing"),
    ],
)
def test_bad_mask_parameters(call, message):
    with pytest.raises(ValueError, match=message):
        call()
