"""ℓ1-ball and sphere projections against brute-force solutions (scipy SLSQP, 1-D bisection)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from sgilo.pipeline.solvers.projections import (
    l1_ball_project,
    l1_ball_project_around_,
    sphere_project,
    sphere_project_,
)


def _bisection(v: np.ndarray, r: float) -> np.ndarray:
    """Projection by bisection on the dual variable θ of Σ max(|v_i| − θ, 0) = r."""
    if np.abs(v).sum() <= r:
        return v.copy()
    lo, hi = 0.0, float(np.abs(v).max())
    for _ in range(200):
        theta = 0.5 * (lo + hi)
        if np.maximum(np.abs(v) - theta, 0).sum() > r:
            lo = theta
        else:
            hi = theta
    return np.sign(v) * np.maximum(np.abs(v) - 0.5 * (lo + hi), 0)


def _slsqp(v: np.ndarray, r: float) -> np.ndarray:
    """The QP min ‖x − v‖² s.t. ‖x‖₁ ≤ r, split x = p − q with p, q ≥ 0 (smooth constraints)."""
    n = v.size
    x0 = np.concatenate([np.maximum(v, 0), np.maximum(-v, 0)]) * 0.5

    def objective(pq):
        d = pq[:n] - pq[n:] - v
        return float(d @ d)

    def grad(pq):
        d = 2 * (pq[:n] - pq[n:] - v)
        return np.concatenate([d, -d])

    res = minimize(
        objective,
        x0,
        jac=grad,
        method="SLSQP",
        bounds=[(0, None)] * (2 * n),
        constraints=[
            {"type": "ineq", "fun": lambda pq: r - pq.sum(), "jac": lambda pq: -np.ones(2 * n)}
        ],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return res.x[:n] - res.x[n:]


def test_l1_projection_matches_bisection_and_slsqp():
    rng = np.random.default_rng(0)
    for n in (1, 3, 5, 8):
        for _ in range(5):
            v = rng.normal(size=(2, n)) * 2
            radii = rng.uniform(0.1, 0.9, size=2) * np.abs(v).sum(axis=1)  # strictly outside
            out = l1_ball_project(torch.from_numpy(v), torch.from_numpy(radii)).numpy()
            for b in range(2):
                np.testing.assert_allclose(out[b], _bisection(v[b], radii[b]), atol=1e-9)
                np.testing.assert_allclose(out[b], _slsqp(v[b], radii[b]), atol=1e-6)
                assert abs(np.abs(out[b]).sum() - radii[b]) < 1e-9  # on the boundary


def test_l1_projection_multidim_and_ties():
    v = torch.tensor([[[3.0, -3.0], [1.0, 0.0]], [[0.5, 0.5], [0.5, -0.5]]], dtype=torch.float64)
    out = l1_ball_project(v, 2.0)
    for b in range(2):
        want = _bisection(v[b].reshape(-1).numpy(), 2.0).reshape(2, 2)
        np.testing.assert_allclose(out[b].numpy(), want, atol=1e-12)
    np.testing.assert_allclose(out[0].numpy(), [[1.0, -1.0], [0.0, 0.0]], atol=1e-12)
    assert torch.equal(out[1], v[1])  # ‖v‖₁ = 2 ≤ r: inside, unchanged


def test_l1_projection_inside_unchanged_and_per_batch_radii():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, 4, 5, generator=g)
    norms = v.abs().reshape(3, -1).sum(dim=1)
    assert l1_ball_project(v, norms.max().item() + 1) is v
    radii = torch.stack([norms[0] * 2, norms[1] * 0.5, norms[2]])
    out = l1_ball_project(v, radii)
    assert torch.equal(out[0], v[0])
    assert torch.equal(out[2], v[2])
    assert abs(out[1].abs().sum().item() - radii[1].item()) < 1e-4
    assert not torch.equal(out[1], v[1])


def test_l1_projection_zero_radius_and_errors():
    v = torch.randn(2, 6, dtype=torch.float64)
    assert torch.equal(l1_ball_project(v, 0.0), torch.zeros_like(v))
    with pytest.raises(ValueError, match="non-negative"):
        l1_ball_project(v, -1.0)
    with pytest.raises(ValueError, match="radius"):
        l1_ball_project(v, torch.ones(3))
    with pytest.raises(ValueError, match="real"):
        l1_ball_project(v.to(torch.complex128), 1.0)


def test_sphere_projection_rows_and_elements():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    rows = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, 4.0]], dtype=torch.float64)
    out = sphere_project(v, rows)
    np.testing.assert_allclose(out.norm(dim=2).numpy(), rows.numpy(), atol=1e-12)
    cos = (out * v).sum(dim=2) / (out.norm(dim=2).clamp_min(1e-30) * v.norm(dim=2))
    np.testing.assert_allclose(cos[rows > 0].numpy(), 1.0, atol=1e-12)  # direction kept
    per = sphere_project(v, torch.tensor([2.0, 3.0], dtype=torch.float64))
    np.testing.assert_allclose(per.reshape(2, -1).norm(dim=1).numpy(), [2.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(sphere_project(v, 1.5).reshape(2, -1).norm(dim=1), 1.5, atol=1e-12)
    zero = torch.zeros(1, 4)
    assert torch.equal(sphere_project(zero, 1.0), zero)
    with pytest.raises(ValueError, match="prefix"):
        sphere_project(v, torch.ones(3))


def _sorted_projection(v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Duchi et al.'s sort-based formula, written out independently (float64)."""
    flat = v.reshape(v.shape[0], -1)
    u = torch.sort(flat.abs(), dim=1, descending=True).values
    excess = torch.cumsum(u, dim=1) - r[:, None]
    j = torch.arange(1, u.shape[1] + 1, dtype=v.dtype)
    rho = ((u - excess / j) > 0).sum(dim=1)
    theta = excess.gather(1, (rho - 1)[:, None]).squeeze(1) / rho
    out = torch.sign(flat) * (flat.abs() - theta[:, None]).clamp_min(0)
    inside = flat.abs().sum(dim=1) <= r
    return torch.where(inside[:, None], flat, out).reshape(v.shape)


def test_l1_projection_matches_the_sort_formula_on_large_inputs():
    g = torch.Generator().manual_seed(2)
    for shape in ((3, 8192), (2, 12, 128), (4, 1, 64, 64)):
        v = torch.randn(*shape, generator=g, dtype=torch.float64) * torch.rand(
            shape[0], *([1] * (len(shape) - 1)), generator=g, dtype=torch.float64
        )
        norms = v.abs().reshape(shape[0], -1).sum(dim=1)
        r = norms * torch.tensor([0.01, 0.5, 2.0, 0.1][: shape[0]], dtype=torch.float64)
        np.testing.assert_allclose(
            l1_ball_project(v, r).numpy(), _sorted_projection(v, r).numpy(), atol=1e-12
        )


def test_l1_projection_around_in_place():
    g = torch.Generator().manual_seed(3)
    c = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    v = c + torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    r = (v - c).abs().reshape(3, -1).sum(dim=1) * torch.tensor([0.3, 1.5, 0.0], dtype=v.dtype)
    want = c + l1_ball_project(v - c, r)
    before = v.clone()
    out = l1_ball_project_around_(v, c, r)
    assert out is v
    np.testing.assert_allclose(v.numpy(), want.numpy(), atol=1e-12)
    assert torch.equal(v[1], before[1])  # inside its ball: not written at all
    assert torch.equal(v[2], c[2])  # radius 0: back to the centre
    with pytest.raises(ValueError, match="center"):
        l1_ball_project_around_(v, c[:2], r)


def test_sphere_projection_in_place_equals_the_pure_one():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(2, 6, 9, generator=g)
    v[1, 2] = 0
    norms = torch.rand(2, 6, generator=g) * 2
    want = sphere_project(v, norms)
    assert torch.equal(sphere_project_(v, norms), want) and torch.equal(v, want)
    with pytest.raises(ValueError, match="prefix"):
        sphere_project_(v, torch.ones(3))


def test_l1_projection_long_rows_with_ties_at_the_threshold():
    """Long rows (Michelot's iteration) whose entries sit exactly at, or an ulp around, the
    soft-threshold level: the iteration ends and agrees with the sort-based formula."""
    n = 4096
    for dtype in (torch.float32, torch.float64):
        base = torch.full((n,), 0.5, dtype=dtype)
        base[:100] = 2.0
        # θ = 0.5 exactly: Σ max(u − 0.5, 0) = 100 · 1.5
        r = torch.tensor([150.0], dtype=dtype)
        ulp = torch.finfo(dtype).eps
        rows = torch.stack([base, base * (1 + ulp), base * (1 - ulp)])
        out = l1_ball_project(rows, r.expand(3))
        want = _sorted_projection(rows.to(torch.float64), r.expand(3).to(torch.float64))
        np.testing.assert_allclose(out.to(torch.float64).numpy(), want.numpy(), atol=1e-5)
