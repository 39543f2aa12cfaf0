"""auto's classical blend: simplex-constrained weights that minimise the held-out error over the
folds (pipeline/classical_blend.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.classical_blend import blend_label, simplex_weights
from sgilo.pipeline.method_choice import kfold_statistics, outer_partition, per_fold_part
from sgilo.pipeline.methods import run_method
from sgilo.pipeline.solvers.classical import scoring_options
from sgilo.pipeline.solvers.kspace_split import heldout_error

R = 32


def _objective(gram: torch.Tensor, cross: torch.Tensor, w: torch.Tensor) -> float:
    return float(w @ gram @ w - 2 * cross @ w)


def _random_problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``G``, ``c`` of three noisy predictions ``p`` of data ``d``: ``G = P Pᵀ``, ``c = P d``."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(200, generator=g, dtype=torch.float64)
    predictions = data + torch.randn(n, 200, generator=g, dtype=torch.float64) * torch.rand(
        n, 1, generator=g, dtype=torch.float64
    )
    return predictions @ predictions.T, predictions @ data


@pytest.mark.parametrize("seed", range(6))
def test_the_weights_minimise_the_objective_over_the_simplex(seed):
    gram, cross = _random_problem(3, seed)
    (w,) = simplex_weights(gram[None], cross[None])
    assert w.min() >= 0 and float(w.sum()) == pytest.approx(1.0)
    best = _objective(gram, cross, w)
    steps = 50  # every point of a grid on the simplex is at least as bad
    for i, j in itertools.product(range(steps + 1), repeat=2):
        if i + j <= steps:
            grid = torch.tensor([i, j, steps - i - j], dtype=torch.float64) / steps
            assert best <= _objective(gram, cross, grid) + 1e-9 * abs(best)


def test_a_candidate_that_predicts_the_data_gets_all_the_weight():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(100, generator=g, dtype=torch.float64)
    predictions = torch.stack([data + 0.5 * torch.randn(100, generator=g), data, 0 * data])
    gram, cross = predictions @ predictions.T, predictions @ data
    assert simplex_weights(gram[None], cross[None])[0].tolist() == [0.0, 1.0, 0.0]
    # two candidates with independent errors of the same size: half each
    noise = torch.randn(2, 100_000, generator=g, dtype=torch.float64)
    two = torch.zeros(1, 100_000, dtype=torch.float64) + noise
    w = simplex_weights((two @ two.T)[None], torch.zeros(1, 2, dtype=torch.float64))[0]
    assert w.tolist() == pytest.approx([0.5, 0.5], abs=0.01)
    # identical candidates (a singular G): one of them, not a failure
    same = torch.stack([data, data])
    w = simplex_weights((same @ same.T)[None], (same @ data)[None])[0]
    assert sorted(w.tolist()) == [0.0, 1.0]


def test_labels_name_the_candidates_with_a_weight_heaviest_first():
    names = ("cg-sense", "l1-wavelet", "tv")
    assert blend_label(names, [0.0, 0.3, 0.7]) == "tv+l1-wavelet"
    assert blend_label(names, [0.0, 1.0, 0.0]) == "l1-wavelet"
    assert blend_label(names, [0.2, 0.5, 0.3]) == "l1-wavelet+tv+cg-sense"


def test_the_fold_statistics_are_the_heldout_errors_and_the_blend_lowers_them():
    """G and c come from the same fold fits as the errors (diag G − 2c + ‖y_h‖² = error), and
    the blend's held-out error over the folds, recomputed from the fits, is at most each
    candidate's."""
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    square = ((yy - 12).abs() < 7) & ((xx - 15).abs() < 8)
    blob = torch.exp(-((yy - 18.0) ** 2 + (xx - 14.0) ** 2) / 30.0)
    images = torch.stack([square * 1.0 + 0.3 * blob, blob]).to(torch.complex64)
    mask = torch.zeros(R)
    mask[[1, 4, 7, 9, 12, 14, 15, 16, 17, 18, 20, 23, 26, 29, 30]] = 1
    op = SingleCoilMRI(mask, shape=(R, R))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(2, R, R, generator=g) + 1j * torch.randn(2, R, R, generator=g)
    y = op.A(images) + 0.02 * op.A(noise.to(torch.complex64))
    methods = ("l1-wavelet", "tv")
    parts = outer_partition(y, op, 4)
    errors, gram, cross = kfold_statistics(y, op, methods, parts)
    weights = simplex_weights(gram.sum(0), cross.sum(0))
    blended = torch.zeros(2, dtype=torch.float64)
    for k in range(parts.shape[0]):
        part = per_fold_part(y, op, parts[k])
        count = part.held_op.num_measurements(2)
        energy = part.held_y.abs().pow(2).flatten(1).sum(1).to(torch.float64)
        torch.testing.assert_close(
            gram[k].diagonal(dim1=-2, dim2=-1) - 2 * cross[k] + energy[:, None],
            errors[k],
            rtol=1e-5,
            atol=0,
        )
        fits = [
            run_method(part.fit_y, part.fit_op, n, solver_options=scoring_options(n)).image
            for n in methods
        ]
        mix = sum(weights[:, j, None, None].to(torch.float32) * fits[j] for j in range(2))
        blended += heldout_error(part, mix)[0] * count
    assert bool((blended <= errors.sum(0).min(dim=1).values * (1 + 1e-5)).all())
    # on these two slices the candidates share the weight (neither vertex is optimal)
    assert bool(((weights > 0.05) & (weights < 0.95)).any())
