"""The generative solvers' per-step path on an odd, non-square k-space grid stays the Cartesian,
FFT-only one: a single-coil fastMRI file on such a grid gets :class:`SingleCoilMRI`, and one
image-and-loss evaluation records exactly the FFTs of the Fourier resampling and the operator
(no NUFFT, no sigpy bridge, no dense matrix, no power iteration). These guard against a silent
fallback to a slow path without timing anything (speed figures belong to docs/SPEED.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import sgilo.operators.base as operator_base
from sgilo.operators.masks import column_mask
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.io.fastmri import read_fastmri, retrospective_undersample, write_kspace
from sgilo.pipeline.reconstruct import study_operator
from sgilo.pipeline.solvers.problem import prepare_problem

R = 16  # the tiny generator's resolution (tests/pipeline/conftest.py)


def _autograd_nodes(root: torch.Tensor) -> list[str]:
    """The type names of every node in the autograd graph of ``root`` (each node once)."""
    seen: set[int] = set()
    names: list[str] = []
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def test_single_coil_file_on_odd_grid_gets_the_cartesian_operator(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((2, 15, 17)) + 1j * rng.standard_normal((2, 15, 17))).astype(
        np.complex64
    )
    study = retrospective_undersample(read_fastmri(write_kspace(tmp_path / "odd.h5", k)), 4, 0.08)
    y, op, maps, _ = study_operator(study)
    assert type(op) is SingleCoilMRI and maps == "none"
    assert tuple(op.ishape) == tuple(op.oshape) == (15, 17) and tuple(y.shape) == (2, 15, 17)


@pytest.mark.parametrize(
    ("grid", "ffts"), [((R, R), 2), ((15, 17), 3), ((33, 31), 3), ((31, 37), 3)]
)
def test_solver_step_on_odd_grid_is_fft_only(gen_stats, monkeypatch, grid, ffts) -> None:
    """On the generator's grid the step has the operator's FFT only (the placement is the
    identity), as two 1-D passes on an even grid (``fft2c_columns``: along W, then along H on the
    sampled columns) and one 2-D FFT on an odd one; there the placement adds one FFT of the R²
    image and one inverse FFT of the
    min(H, W)² square (cropped below R, zero-padded above), whatever the parity of H and W; and
    the graph stays small (about 40 nodes): a Python loop over rows or columns would add one
    node per row."""
    gen, _ = gen_stats

    def refuse(*_args, **_kwargs):
        raise AssertionError("the per-step path ran a power iteration")

    monkeypatch.setattr(operator_base, "power_iteration", refuse)
    mask = torch.from_numpy(column_mask("random", grid[1], 0.16, 4, seed=0).astype(np.float32))
    op = SingleCoilMRI(mask, shape=grid)
    with torch.no_grad():
        y = op.A(torch.randn(2, *grid, dtype=torch.complex64))
    problem = prepare_problem(y, op, gen, phase="auto", normalize=True, fit_gain=True)
    with torch.no_grad():
        g = gen(torch.randn(2, gen.style_dim, generator=torch.Generator().manual_seed(0)))
    g.requires_grad_(True)  # the graph of the image and the loss only, not the generator's
    _, loss = problem.image_and_loss(g)
    nodes = _autograd_nodes(loss.sum())
    assert nodes.count("FftC2CBackward0") == ffts
    assert len(nodes) < 50, sorted(nodes)
    assert not [n for n in nodes if n.startswith(("SigpyLinop", "Mm", "Bmm", "Matmul"))]
    loss.sum().backward()
    assert g.grad is not None and bool(torch.isfinite(g.grad).all())
