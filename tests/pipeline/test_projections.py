"""ℓ1-ball and sphere projections against brute-force solutions (scipy SLSQP, 1-D bisection)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from pipeline.solvers.projections import l1_ball_project, sphere_project


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
