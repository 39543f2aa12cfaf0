"""The ℓ1-ball size rule of ILO and SGILO (pipeline/solvers/radius.py): its anchors and clamping,
the sampled fraction of each kind of operator, and that the solvers really use it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgilo.operators.image import Inpainting
from sgilo.operators.masks import column_mask
from sgilo.operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI
from sgilo.pipeline.solvers.ilo import ILOConfig, ilo
from sgilo.pipeline.solvers.problem import prepare_problem
from sgilo.pipeline.solvers.radius import (
    IMAGE_RADIUS_FRACTION,
    RADIUS_AT_4X,
    RADIUS_AT_8X,
    radius_for_fraction,
    resolve_radius_fraction,
    sampled_fraction,
)
from sgilo.pipeline.solvers.sgilo import SGILOConfig, sgilo

R = 16  # the resolution of the `gen_stats` generator (tests/pipeline/conftest.py)


def _mask(acceleration: int) -> torch.Tensor:
    """An ``(R, R)`` equispaced column mask sampling exactly ``1/acceleration`` of k-space."""
    columns = column_mask("equispaced", R, 0.125, acceleration, seed=0).astype(np.float32)
    return torch.from_numpy(columns).expand(R, R).clone()


def test_rule_anchors_interpolation_and_clamping():
    f = torch.tensor([0.01, 1 / 8, math.sqrt(1 / 32), 1 / 4, 0.6, 1.57], dtype=torch.float64)
    r = radius_for_fraction(f)
    assert r[0] == pytest.approx(RADIUS_AT_8X) and r[1] == pytest.approx(RADIUS_AT_8X)
    # halfway in log f is the geometric mean of the anchors
    assert r[2] == pytest.approx(math.sqrt(RADIUS_AT_8X * RADIUS_AT_4X))
    assert r[3] == pytest.approx(RADIUS_AT_4X)
    assert r[4] == pytest.approx(RADIUS_AT_4X) and r[5] == pytest.approx(RADIUS_AT_4X)
    assert bool((r[1:] >= r[:-1]).all())


def test_sampled_fraction_of_each_operator(gen_stats):
    gen, _ = gen_stats
    masks = torch.stack([_mask(8), _mask(4)])  # one mask per slice
    assert masks.reshape(2, -1).mean(dim=1).tolist() == [1 / 8, 1 / 4]
    x = torch.ones(2, R, R, dtype=torch.complex64)
    single = SingleCoilMRI(masks, shape=(R, R))
    problem = prepare_problem(single.A(x), single, gen, phase="none", normalize=False)
    expected = masks.reshape(2, -1).mean(dim=1).double()
    assert torch.allclose(sampled_fraction(problem), expected)
    # every coil shares the mask: the fraction is per coil, not multiplied by the coils
    maps = torch.ones(3, R, R, dtype=torch.complex64) / math.sqrt(3)
    multi = MultiCoilMRI(maps, masks)
    problem = prepare_problem(multi.A(x), multi, gen, phase="none", normalize=False)
    assert torch.allclose(sampled_fraction(problem), expected)
    # non-Cartesian: samples per coil over the grid size
    coord = torch.rand(40, 2) * R - R / 2
    radial = NonCartesianMRI(coord, maps=maps)
    problem = prepare_problem(radial.A(x), radial, gen, phase="none", normalize=False)
    assert torch.allclose(sampled_fraction(problem), torch.full((2,), 40 / R**2).double())


def test_resolve_numbers_auto_and_image_problems(gen_stats):
    gen, _ = gen_stats
    op = SingleCoilMRI(torch.stack([_mask(8), _mask(4)]), shape=(R, R))
    problem = prepare_problem(
        op.A(torch.ones(2, R, R, dtype=torch.complex64)), op, gen, phase="none", normalize=False
    )
    cpu = torch.device("cpu")
    assert resolve_radius_fraction(0.2, problem, cpu).tolist() == [0.2, 0.2]
    auto = resolve_radius_fraction("auto", problem, cpu)
    assert torch.allclose(auto, radius_for_fraction(sampled_fraction(problem)))
    assert auto[0] < auto[1]  # fewer columns, smaller ball
    inpaint = Inpainting.random_pixels((1, R, R), 0.1, torch.Generator().manual_seed(0))
    image_problem = prepare_problem(
        inpaint.A(torch.zeros(2, 1, R, R)), inpaint, gen, phase="none", normalize=False
    )
    assert (
        resolve_radius_fraction("auto", image_problem, cpu).tolist() == [IMAGE_RADIUS_FRACTION] * 2
    )


def _truth(gen, batch: int) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(batch, gen.style_dim, generator=torch.Generator().manual_seed(5))
        return ((gen(z)[:, 0] + 1) / 2).to(torch.complex64)


@pytest.mark.parametrize("method", ["ilo", "sgilo"])
def test_solvers_use_the_rule(gen_stats, method):
    """'auto' on 8×-sampled slices runs exactly as the explicit 8× anchor, and differs from the
    4× anchor; the resolved fractions are recorded per slice."""
    gen, stats = gen_stats
    op = SingleCoilMRI(_mask(8), shape=(R, R))
    y = op.A(_truth(gen, 2))
    assert float(op.mask.mean()) == 1 / 8
    base = dict(
        phase="none", normalize=False, fit_gain=False, data_consistency=False, init="random",
        steps=(5, 5), early_stop=False,
    )  # fmt: skip

    def run(radius_fraction):
        kw = {"generator": gen, "latent_stats": stats, "rng": torch.Generator().manual_seed(3)}
        if method == "ilo":
            return ilo(y, op, config=ILOConfig(**base, radius_fraction=radius_fraction), **kw)
        cfg = SGILOConfig(**base, radius_fraction=radius_fraction, lam=0.0, tau=0.0)
        return sgilo(y, op, score_models={}, config=cfg, **kw)

    auto, anchor, wider = run("auto"), run(RADIUS_AT_8X), run(RADIUS_AT_4X)
    assert torch.equal(auto.image, anchor.image)
    assert not torch.allclose(auto.image, wider.image)
    assert auto.diagnostics.radius_fractions == pytest.approx([RADIUS_AT_8X] * 2)
