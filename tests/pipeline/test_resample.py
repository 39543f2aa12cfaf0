"""GridPlacement: adjoint-exact, identity on the generator's grid, value-preserving placement."""

from __future__ import annotations

import pytest
import torch

from sgilo.operators.base import adjoint_error
from sgilo.pipeline.solvers.resample import GridPlacement


@pytest.mark.parametrize(
    ("resolution", "grid"), [(16, (16, 16)), (16, (24, 40)), (16, (37, 31)), (32, (12, 20))]
)
def test_adjoint(resolution, grid):
    op = GridPlacement(resolution, grid)
    assert adjoint_error(op) < 1e-10


def test_identity_and_placement():
    x = torch.randn(2, 16, 16, dtype=torch.complex128)
    assert torch.equal(GridPlacement(16, (16, 16)).A(x), x)
    # a constant image keeps its value inside the central min(H, W) square, zero outside
    const = torch.ones(1, 16, 16, dtype=torch.complex128) * 0.7
    out = GridPlacement(16, (32, 48)).A(const)
    assert out.shape == (1, 32, 48)
    assert torch.allclose(out[0, :, 8:40], torch.full((32, 32), 0.7, dtype=torch.complex128))
    assert out[0, :, :8].abs().max() == 0 and out[0, :, 40:].abs().max() == 0


def test_band_limited_image_resamples_exactly():
    # upsampling 16 → 32 loses nothing: P^H P = (S/R)² I
    op = GridPlacement(16, (32, 32))
    x = torch.randn(3, 16, 16, dtype=torch.complex128)
    assert torch.allclose(op.A_adjoint(op.A(x)), x * 4)
