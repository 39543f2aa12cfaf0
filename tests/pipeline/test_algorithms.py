"""The algorithm layer against independent references: CG against numpy's solve, the power
iteration against numpy's eigvalsh, FISTA on a lasso with a closed-form answer, PDHG on ridge
regressions against numpy's solve, both TV solvers on edges whose ROF solutions are known, the
finite differences against their adjoints and sigpy's ``FiniteDifference``, and the dual TV prox
against sigpy's ``Conj(L1Reg)``."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy as sp
import torch

import sgilo.operators.power_iteration as operator_power
from sgilo.operators.base import Identity
from sgilo.pipeline.algorithms import power_iteration as algorithm_power
from sgilo.pipeline.algorithms.conjugate_gradient import batch_dot, conjugate_gradient
from sgilo.pipeline.algorithms.fista import fista
from sgilo.pipeline.algorithms.pdhg import pdhg
from sgilo.pipeline.algorithms.power_iteration import power_iteration, seeded_start
from sgilo.pipeline.algorithms.total_variation import (
    anisotropic_tv_least_squares,
    circular_difference,
    circular_difference_adjoint,
    gradient,
    gradient_adjoint,
    project_modulus,
    tv_least_squares,
)


def _hermitian_pd(batch: int, n: int, seed: int, shift: float = 0.5) -> np.ndarray:
    """``(batch, n, n)`` complex Hermitian positive definite matrices."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, n, n)) + 1j * rng.standard_normal((batch, n, n))
    return a @ a.conj().transpose(0, 2, 1) / n + shift * np.eye(n)


def _apply(matrices: np.ndarray):
    """``v ↦ M v`` per slice for ``v`` ``(B, n)``."""
    m = torch.from_numpy(matrices)
    return lambda v: torch.einsum("bij,bj->bi", m.to(v.dtype), v)


# -- conjugate gradients --------------------------------------------------------------------------
def test_cg_solves_each_slice_like_numpy():
    n = 9
    m = _hermitian_pd(3, n, seed=0)
    rng = np.random.default_rng(1)
    b = rng.standard_normal((3, n)) + 1j * rng.standard_normal((3, n))
    x = conjugate_gradient(_apply(m), torch.from_numpy(b), iterations=3 * n)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(m, b[..., None])[..., 0], rtol=1e-9)


def test_cg_from_a_start_and_on_real_systems():
    n = 8
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, n, n))
    m = a @ a.transpose(0, 2, 1) + np.eye(n)
    b = rng.standard_normal((2, n))
    x0 = torch.from_numpy(rng.standard_normal((2, n)))
    x = conjugate_gradient(_apply(m), torch.from_numpy(b), x0, iterations=3 * n)
    assert x.dtype == torch.float64
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(m, b[..., None])[..., 0], rtol=1e-8)
    # the start is not modified in place
    assert not torch.equal(x0, x)


def test_cg_tolerance_stops_a_converged_slice_and_then_the_loop():
    n = 6
    m = _hermitian_pd(2, n, seed=3)
    m[0] = np.eye(n)  # slice 0 converges in one step
    b = torch.from_numpy(np.ones((2, n), dtype=np.complex128))
    seen: list[tuple[int, list[float]]] = []
    x = conjugate_gradient(
        _apply(m),
        b,
        iterations=50,
        tolerance=1e-10,
        on_iteration=lambda k, rs: seen.append((k, rs.tolist())),
    )
    assert 1 < len(seen) < 50  # ran until slice 1 converged, not all 50
    assert seen[0][1][0] == 0.0  # slice 0's residual vanished after one step
    np.testing.assert_allclose(x[0].numpy(), np.ones(n), rtol=1e-14)
    np.testing.assert_allclose(x[1].numpy(), np.linalg.solve(m[1], np.ones(n)), rtol=1e-8)


def test_batch_dot_is_the_real_part_of_numpys_vdot():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 4, 5)) + 1j * rng.standard_normal((3, 4, 5))
    b = rng.standard_normal((3, 4, 5)) + 1j * rng.standard_normal((3, 4, 5))
    got = batch_dot(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(got, [np.vdot(a[i], b[i]).real for i in range(3)], rtol=1e-12)


# -- the power iteration --------------------------------------------------------------------------
def test_power_iteration_is_numpys_largest_eigenvalue_per_slice():
    m = _hermitian_pd(3, 7, seed=5, shift=0.0)
    start = seeded_start((3, 7), torch.complex128)
    got = power_iteration(_apply(m), start, iterations=300).numpy()
    largest = np.linalg.eigvalsh(m).max(axis=1)
    np.testing.assert_allclose(got, largest, rtol=1e-8)
    # from below after a few iterations
    few = power_iteration(_apply(m), start, iterations=3).numpy()
    assert (few <= largest * (1 + 1e-12)).all()


def test_one_power_iteration_and_a_seeded_start():
    assert algorithm_power.power_iteration is operator_power.power_iteration
    a = seeded_start((2, 3), torch.float32, seed=7)
    assert torch.equal(a, seeded_start((2, 3), torch.float32, seed=7))
    assert not torch.equal(a, seeded_start((2, 3), torch.float32, seed=8))
    with pytest.raises(ValueError, match="iterations"):
        power_iteration(lambda v: v, a, iterations=0)


# -- FISTA ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_fista_solves_a_diagonal_lasso(backend):
    """min ½‖D x − y‖² + λ‖x‖₁ with diagonal D: x_i = soft(d_i y_i, λ) / d_i²."""
    rng = np.random.default_rng(6)
    d = rng.uniform(0.5, 2.0, 20)
    y = rng.standard_normal(20)
    lam = 0.3
    expected = np.sign(d * y) * np.maximum(np.abs(d * y) - lam, 0) / d**2

    def soft(v, t):
        return np.sign(v) * np.maximum(np.abs(v) - t * lam, 0)

    if backend == "torch":
        dt, yt = torch.from_numpy(d), torch.from_numpy(y)
        got = fista(
            lambda z: dt * (dt * z - yt),
            lambda v, t: torch.sign(v) * (v.abs() - t * lam).clamp_min(0),
            1 / float(d.max() ** 2),
            torch.zeros(20, dtype=torch.float64),
            500,
        ).numpy()
    else:
        got = fista(lambda z: d * (d * z - y), soft, 1 / d.max() ** 2, np.zeros(20), 500)
    np.testing.assert_allclose(got, expected, atol=1e-10)
    assert (expected == 0).any() and (expected != 0).any()  # both regimes are exercised


# -- PDHG -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_pdhg_solves_a_batch_of_ridge_regressions(theta):
    """``min ½‖A_b x − y_b‖² + (μ/2)‖x‖²`` per slice as ``f(K x − b) + g(x)`` with ``K = A_b``,
    ``f = ½‖·‖²`` (``prox_{σf*}(v) = v / (1 + σ)``), ``g = (μ/2)‖·‖²`` (``prox_{τg}(v) =
    v / (1 + τμ)``) equals ``(AᴴA + μI)⁻¹ Aᴴ y``. The slices' norms differ by 100×: each needs its
    own steps ``σ_b = τ_b = 1/‖A_b‖`` (``(B,)`` tensors)."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 12, 6)) + 1j * rng.standard_normal((2, 12, 6))
    a[1] *= 100.0
    y = rng.standard_normal((2, 12)) + 1j * rng.standard_normal((2, 12))
    mu = 0.5
    norms = torch.from_numpy(np.linalg.norm(a, ord=2, axis=(1, 2)))
    at = torch.from_numpy(a)
    yt = torch.from_numpy(y)
    seen: list[int] = []
    x = pdhg(
        lambda x: (torch.einsum("bij,bj->bi", at, x) - yt,),
        lambda u: torch.einsum("bji,bj->bi", at.conj(), u[0]),
        lambda v, s: (v[0] / (1 + s.view(-1, 1)),),
        lambda v, t: v / (1 + t.view(-1, 1) * mu),
        torch.zeros(2, 6, dtype=torch.complex128),
        (torch.zeros(2, 12, dtype=torch.complex128),),
        sigma=1 / norms,
        tau=1 / norms,
        theta=theta,
        iterations=3000,
        on_iteration=lambda k, x: seen.append(k),
    )
    ah = a.conj().transpose(0, 2, 1)
    expected = np.linalg.solve(ah @ a + mu * np.eye(6), ah @ y[..., None])[..., 0]
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    assert seen == list(range(1, 3001))


# -- total variation ------------------------------------------------------------------------------
def test_gradient_adjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, 2, 5, 7, generator=g, dtype=torch.float64)
    lhs = (gradient(x) * v).sum()
    rhs = (x * gradient_adjoint(v)).sum()
    assert abs(float(lhs - rhs)) < 1e-10 * float(lhs.abs() + 1)


def test_tv_denoises_an_edge_to_the_rof_solution():
    """A vertical edge a | b through a 5×8 grey image, A = I: the ROF solution moves each side
    towards the other by λ · (edge length) / (side area) = λ / 4 (no other level sets)."""
    y = torch.full((1, 1, 5, 8), 0.2)
    y[..., 4:] = 0.8
    lam = 0.2
    x = tv_least_squares(y, Identity((1, 5, 8)), lam, 3000)
    assert x.dtype == torch.float32
    np.testing.assert_allclose(x[..., :4].numpy(), 0.2 + lam / 4, atol=2e-3)
    np.testing.assert_allclose(x[..., 4:].numpy(), 0.8 - lam / 4, atol=2e-3)


def test_tv_keeps_the_box():
    y = torch.linspace(-1, 2, 36).reshape(1, 1, 6, 6)
    x = tv_least_squares(y, Identity((1, 6, 6)), 0.01, 50)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    with pytest.raises(ValueError, match="τσ"):
        tv_least_squares(y, Identity((1, 6, 6)), 0.01, 1, steps=(1.0, 2.0))


def test_circular_difference_is_sigpys_finite_difference_and_has_its_adjoint():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 7, generator=g, dtype=torch.complex128)
    v = torch.randn(2, 2, 5, 7, generator=g, dtype=torch.complex128)
    finite_difference = sp.linop.FiniteDifference((5, 7))
    for b in range(2):
        expected = finite_difference(x[b].numpy())
        np.testing.assert_allclose(circular_difference(x)[b].numpy(), expected, atol=1e-14)
        expected_adjoint = finite_difference.H(v[b].numpy())
        got = circular_difference_adjoint(v)[b].numpy()
        np.testing.assert_allclose(got, expected_adjoint, atol=1e-14)
    lhs = torch.vdot(circular_difference(x).flatten(), v.flatten())
    rhs = torch.vdot(x.flatten(), circular_difference_adjoint(v).flatten())
    assert abs(complex(lhs - rhs)) < 1e-12 * abs(complex(lhs))


def test_project_modulus_is_the_prox_of_the_conjugate_l1_norm():
    """sigpy's dual TV prox, ``Conj(L1Reg(λ))`` at step σ: ``v − σ soft(λ/σ, v/σ)``, which is the
    projection of each complex entry onto ``|v| ≤ λ`` whatever σ."""
    g = torch.Generator().manual_seed(2)
    v = torch.randn(3, 4, 6, generator=g, dtype=torch.complex128)
    lam = 0.7
    for sigma in (1.0, 0.3):
        expected = sp.prox.Conj(sp.prox.L1Reg(v.shape, lam))(sigma, v.numpy())
        np.testing.assert_allclose(project_modulus(v, lam).numpy(), expected, atol=1e-14)
    assert 0 < int((v.abs() > lam).sum()) < v.numel()  # both branches
    assert torch.equal(project_modulus(v, 0.0), torch.zeros_like(v))


def test_anisotropic_tv_moves_a_periodic_stripe_by_lambda_over_two():
    """A stripe ``a | b`` (4 + 4 columns) in a periodic complex 4×8 image, ``A = I``: the ROF
    solution under the anisotropic circular TV keeps the two plateaus and moves each towards
    the other by ``λ · (2 edges of 4 pixels) / (16 pixels) = λ/2`` along ``a − b``. Two slices,
    one with λ = 0 (the data itself)."""
    a, b = 0.2 + 0.1j, 0.8 - 0.3j
    y = torch.full((2, 4, 8), a, dtype=torch.complex128)
    y[..., 4:] = b
    lam = torch.tensor([0.1, 0.0], dtype=torch.float64)
    op = Identity((4, 8), complex_data=True)
    start = seeded_start((2, 4, 8), torch.complex128)
    x = anisotropic_tv_least_squares(y, op, lam, torch.zeros_like(y), 2000, start=start)
    shift = 0.1 / 2 * (a - b) / abs(a - b)
    np.testing.assert_allclose(x[0, :, :4].numpy(), a - shift, atol=1e-6)
    np.testing.assert_allclose(x[0, :, 4:].numpy(), b + shift, atol=1e-6)
    np.testing.assert_allclose(x[1].numpy(), y[1].numpy(), atol=1e-9)
