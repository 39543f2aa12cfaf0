"""MRI operators: adjointness, agreement with sigpy's Sense, autograd, bad input."""

import numpy as np
import pytest
import sigpy as sp
import sigpy.mri
import torch

from sgilo.operators.base import adjoint_error
from sgilo.operators.fft import fft2c, ifft2c
from sgilo.operators.masks import radial_trajectory, random_column_mask, spiral_trajectory
from sgilo.operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI

SHAPES = [(37, 31), (24, 40), (33, 33)]


def crandn(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def maps_for(shape, coils=4):
    return sigpy.mri.birdcage_maps((coils, *shape)).astype(np.complex128)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("shape", SHAPES)
def test_fft2c_matches_numpy_and_sigpy(shape):
    x = crandn(2, *shape)
    ref = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    got = fft2c(torch.from_numpy(x)).numpy()
    assert rel(got, ref) < 1e-12
    assert rel(got, sp.fft(x, axes=(-2, -1))) < 1e-12
    assert rel(ifft2c(torch.from_numpy(got)).numpy(), x) < 1e-12


@pytest.mark.parametrize("shape", SHAPES)
def test_single_coil_adjoint_and_sigpy(shape):
    mask = torch.from_numpy(random_column_mask(shape[1], 0.1, 3, seed=1)).double()
    op = SingleCoilMRI(mask, shape)
    assert adjoint_error(op) < 1e-5
    x = crandn(3, *shape)
    ours = op(torch.from_numpy(x)).numpy()
    mask2d = np.broadcast_to(mask.numpy(), shape)
    for b in range(3):
        ref = sigpy.mri.linop.Sense(np.ones((1, *shape)), weights=mask2d)(x[b])[0]
        assert rel(ours[b], ref) < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_multi_coil_adjoint_and_sigpy(shape):
    maps = maps_for(shape)
    mask = np.broadcast_to(random_column_mask(shape[1], 0.1, 2.5, seed=2), shape).astype(float)
    op = MultiCoilMRI(torch.from_numpy(maps), torch.from_numpy(mask))
    assert adjoint_error(op) < 1e-5
    x = crandn(2, *shape, seed=3)
    y = crandn(2, maps.shape[0], *shape, seed=4)
    sense = sigpy.mri.linop.Sense(maps, weights=mask)
    ours_fwd = op(torch.from_numpy(x)).numpy()
    ours_adj = op.A_adjoint(torch.from_numpy(y)).numpy()
    for b in range(2):
        assert rel(ours_fwd[b], sense(x[b])) < 1e-5
        assert rel(ours_adj[b], sense.H(y[b])) < 1e-5


def test_multi_coil_per_slice_maps_and_masks():
    shape = (20, 18)
    maps = np.stack([maps_for(shape, 3), np.roll(maps_for(shape, 3), 3, axis=-1)])
    masks = np.stack(
        [np.broadcast_to(random_column_mask(18, 0.2, 2, seed=s), shape) for s in (0, 1)]
    )
    op = MultiCoilMRI(torch.from_numpy(maps), torch.from_numpy(masks.astype(float)))
    assert adjoint_error(op) < 1e-5
    x = crandn(2, *shape)
    y = op(torch.from_numpy(x)).numpy()
    for b in range(2):
        ref = sigpy.mri.linop.Sense(maps[b], weights=masks[b].astype(float))(x[b])
        assert rel(y[b], ref) < 1e-5
    with pytest.raises(ValueError, match="batch of 3"):
        op(torch.from_numpy(crandn(3, *shape)))


@pytest.mark.parametrize("trajectory", ["radial", "spiral"])
@pytest.mark.parametrize("coils", [None, 3])
def test_non_cartesian_adjoint_and_sigpy(trajectory, coils):
    shape = (32, 32)
    if trajectory == "radial":
        coord = radial_trajectory(21, 48, shape)
    else:
        coord = spiral_trajectory(shape, num_interleaves=4, undersampling=2.0)
    maps = None if coils is None else torch.from_numpy(maps_for(shape, coils))
    op = NonCartesianMRI(torch.from_numpy(coord), maps=maps, image_shape=shape)
    assert adjoint_error(op) < 1e-5
    x = crandn(2, *shape)
    ours = op(torch.from_numpy(x)).numpy()
    mps = np.ones((1, *shape), dtype=complex) if coils is None else maps.numpy()
    sense = sigpy.mri.linop.Sense(mps, coord=coord.reshape(-1, 2))
    for b in range(2):
        ref = sense(x[b])
        assert rel(ours[b].reshape(ref.shape), ref) < 1e-5


def test_autograd_through_cartesian_and_nufft_matches_closed_form():
    """∇_x ½‖A x − y‖² = A^H (A x − y) for every MRI operator (torch's complex convention)."""
    shape = (16, 16)
    maps = torch.from_numpy(maps_for(shape, 2))
    mask = torch.from_numpy(random_column_mask(16, 0.25, 2, seed=0)).double()
    ops = [
        SingleCoilMRI(mask, shape),
        MultiCoilMRI(maps, mask),
        NonCartesianMRI(torch.from_numpy(radial_trajectory(9, 24, shape)), maps=maps),
    ]
    for op in ops:
        x = torch.from_numpy(crandn(2, *shape)).requires_grad_(True)
        y = op(torch.from_numpy(crandn(2, *shape, seed=5))).detach()
        loss = 0.5 * (op(x) - y).abs().pow(2).sum()
        loss.backward()
        expected = op.A_adjoint(op(x.detach()) - y)
        # torch returns the conjugate-Wirtinger gradient 2·∂L/∂x̄ = A^H(Ax − y)
        assert torch.allclose(x.grad, expected, rtol=1e-10, atol=1e-10), type(op).__name__


def test_operators_compute_single_columns_of_k_space():
    """``A_columns(x, cols)`` is ``A(x)[..., cols]`` for the Cartesian operators (shared and
    per-slice masks and maps), the generic form for the NUFFT (the last axis: samples)."""
    shape = (12, 16)
    maps = maps_for(shape, 3)
    masks = [np.broadcast_to(random_column_mask(16, 0.2, 2, seed=s), shape) for s in (0, 1)]
    mask = torch.from_numpy(np.stack(masks).astype(float))
    ops = [
        SingleCoilMRI(mask[0], shape),
        SingleCoilMRI(mask, shape),
        MultiCoilMRI(torch.from_numpy(maps), mask[0]),
        MultiCoilMRI(torch.from_numpy(np.stack([maps, maps[::-1]])), mask),
        NonCartesianMRI(torch.from_numpy(radial_trajectory(5, 8, shape)), torch.from_numpy(maps)),
    ]
    x = torch.from_numpy(crandn(2, *shape))
    for op in ops:
        columns = torch.tensor([1, 5, 8, op.oshape[-1] - 1])
        torch.testing.assert_close(op.A_columns(x, columns), op.A(x)[..., columns])
    with pytest.raises(ValueError, match="input"):
        ops[0].A_columns(x[:, :-1], columns)


@pytest.mark.parametrize("shape", [(12, 16), (11, 15)])
def test_normal_operator_of_column_masks_equals_the_adjoint_of_the_forward(shape):
    """``AᴴA`` and ``z ↦ Aᴴ(A z − y)`` take 1-D transforms for column masks
    (``operators.fft.column_normal``, ``fft1c``) and the 2-D ones otherwise; all equal the
    composition of ``A_adjoint`` and ``A``, weights and per-slice masks included."""
    h, w = shape
    maps = torch.from_numpy(maps_for(shape, 3))
    columns = torch.from_numpy(random_column_mask(w, 0.2, 2, seed=0)) * 0.7  # weights, not 0/1
    per_slice = torch.stack([columns, columns.roll(3)])[:, None, :].expand(2, h, w)
    points = torch.rand(h, w, generator=torch.Generator().manual_seed(1)) < 0.4  # not by column
    x = torch.from_numpy(crandn(2, *shape))
    for mask, by_column in ((columns, True), (per_slice, True), (points.double(), False)):
        for op in (SingleCoilMRI(mask, shape), MultiCoilMRI(maps, mask)):
            assert op._columns_only is by_column
            expected = op.A_adjoint(op.A(x))
            torch.testing.assert_close(op.normal(x), expected, rtol=1e-12, atol=1e-12)
            y = op.A(torch.from_numpy(crandn(2, *shape, seed=7)))
            gradient = op.residual_gradient(y)
            expected = op.A_adjoint(op.A(x) - y)
            torch.testing.assert_close(gradient(x), expected, rtol=1e-12, atol=1e-12)


def test_single_precision_runs():
    shape = (16, 12)
    op = SingleCoilMRI(torch.ones(12), shape)
    x = torch.randn(1, *shape, dtype=torch.complex64)
    assert op(x).dtype == torch.complex64
    assert torch.allclose(op.A_adjoint(op(x)), x, atol=1e-5)


def test_composition_and_adjoint_operator():
    shape = (12, 10)
    op = SingleCoilMRI(torch.ones(10).double(), shape)
    normal = op.H @ op
    x = torch.from_numpy(crandn(1, *shape))
    assert torch.allclose(normal(x), op.normal(x))
    assert torch.allclose(normal(x), x)
    assert op.H.H is op
    assert adjoint_error(normal) < 1e-5


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: SingleCoilMRI(torch.ones(9), (8, 8)), "width 8, got 9"),
        (lambda: SingleCoilMRI(torch.ones(8, dtype=torch.cfloat), (8, 8)), "must be real"),
        (lambda: SingleCoilMRI(-torch.ones(8), (8, 8)), "non-negative"),
        (lambda: SingleCoilMRI(torch.ones(8), (8, 8)).A(torch.ones(1, 8, 8)), "complex"),
        (
            lambda: SingleCoilMRI(torch.ones(8), (8, 8)).A(torch.ones(1, 8, 9, dtype=torch.cfloat)),
            r"\(B, 8, 8\)",
        ),
        (lambda: MultiCoilMRI(torch.ones(2, 8, 8), torch.ones(8)), "coil maps must be complex"),
        (lambda: MultiCoilMRI(torch.ones(8, 8, dtype=torch.cfloat), torch.ones(8)), r"\(C, H, W\)"),
        (lambda: MultiCoilMRI(torch.ones(2, 8, 8, dtype=torch.cfloat), torch.ones(7)), "width 8"),
        (
            lambda: MultiCoilMRI(
                torch.full((2, 8, 8), float("nan"), dtype=torch.cfloat), torch.ones(8)
            ),
            "finite",
        ),
        (lambda: SingleCoilMRI(torch.tensor([1.0, float("inf")] * 4), (8, 8)), "finite"),
        (lambda: NonCartesianMRI(torch.ones(10, 2) * 40, image_shape=(16, 16)), r"\[-N/2, N/2\]"),
        (lambda: NonCartesianMRI(torch.ones(10, 3), image_shape=(16, 16)), r"\(\.\.\., 2\)"),
    ],
)
def test_bad_input_is_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# -- what the solvers ask about: every property on every MRI operator, odd sizes ------------------
SMALL = (7, 5)


def _small_operators() -> dict:
    """Every MRI operator kind on a 7×5 grid (float64/complex128)."""
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(2, *SMALL, generator=g, dtype=torch.complex128)
    mask = torch.tensor([1.0, 0, 1, 1, 0], dtype=torch.float64)  # centre column 2 sampled
    per_slice = torch.stack([mask, torch.tensor([0.0, 1, 1, 0, 1], dtype=torch.float64)])
    coord = torch.from_numpy(radial_trajectory(4, 6, SMALL))
    return {
        "single": SingleCoilMRI(mask, SMALL),
        "single-per-slice": SingleCoilMRI(per_slice[:, None, :].expand(2, *SMALL)),
        "multi": MultiCoilMRI(maps, mask),
        "multi-full": MultiCoilMRI(maps, torch.ones(SMALL[1], dtype=torch.float64)),
        "multi-per-slice": MultiCoilMRI(maps, per_slice[:, None, :].expand(2, *SMALL)),
        "radial-single": NonCartesianMRI(coord, image_shape=SMALL),
        "radial-multi": NonCartesianMRI(coord, maps=maps),
    }


def _dense_normal_largest(op, batch: int) -> np.ndarray:
    """The largest eigenvalue of the dense AᴴA of every slice ``(batch,)``, by numpy's eigvalsh."""
    n = int(np.prod(op.ishape))
    basis = torch.eye(n, dtype=torch.complex128).reshape(n, *op.ishape)
    out = []
    for b in range(batch):
        cols = []
        for e in basis:
            x = torch.zeros(batch, *op.ishape, dtype=torch.complex128)
            x[b] = e
            cols.append(op.normal(x)[b].reshape(-1).numpy())
        out.append(np.linalg.eigvalsh(np.stack(cols, axis=1)).max())
    return np.array(out)


@pytest.mark.parametrize("name", list(_small_operators()))
def test_solver_properties(name):
    op = _small_operators()[name]
    batch = 2
    cartesian = name.startswith(("single", "multi"))
    assert op.kind == "mri"
    assert op.runs_on_cpu_only is (not cartesian)
    assert (op.coil_maps is None) is (name in ("single", "single-per-slice", "radial-single"))
    assert op.num_coils == (1 if op.coil_maps is None else 2)
    assert (op.trajectory is None) is cartesian
    # the entries of y that can be non-zero are the measurements
    x = torch.from_numpy(crandn(batch, *SMALL, seed=4))
    nonzero = (op.A(x) != 0).reshape(batch, -1).sum(dim=1).double()
    assert torch.equal(op.num_measurements(batch), nonzero)
    per_coil = op.num_measurements(batch) / (op.num_coils * SMALL[0] * SMALL[1])
    assert torch.allclose(op.sampled_fraction(batch), per_coil)
    if cartesian:
        masks = op.slice_masks(batch)
        assert masks.shape == (batch, *SMALL)
        assert torch.equal(op.sampled_fraction(batch), (masks > 0).double().mean(dim=(1, 2)))
        # y is zero exactly where the mask is
        zero = (op.A(x) == 0).reshape(batch, -1, *SMALL).all(dim=1)
        assert torch.equal(zero, masks == 0)
        region = op.calibration_region(batch)
        assert region.dtype == torch.bool and region.shape == (batch, SMALL[1])
        expected = [[False, False, True, True, False]] * batch
        if name.endswith("per-slice"):  # the second slice's run is columns 1..2
            expected = [expected[0], [False, True, True, False, False]]
        if name == "multi-full":
            expected = [[True] * SMALL[1]] * batch
        assert region.tolist() == expected
    else:
        assert op.sampling_mask is None and op.calibration_region(batch) is None
        assert float(op.sampled_fraction(1)[0]) == op.oshape[-1] / (SMALL[0] * SMALL[1])


@pytest.mark.parametrize("name", list(_small_operators()))
def test_normal_norm_against_dense_eigenvalues(name):
    op = _small_operators()[name]
    largest = _dense_normal_largest(op, 2)
    got = op.normal_norm(2, torch.complex128).numpy()
    if name.startswith("single") or name == "multi-full":  # analytic and exact
        np.testing.assert_allclose(got, largest, rtol=1e-12)
    elif name.startswith("multi"):  # the analytic bound max M² · max Σ|S|²
        assert (got >= largest * (1 - 1e-12)).all()
        peak = op.coil_maps.abs().pow(2).sum(dim=0).max().item()
        np.testing.assert_allclose(got, peak, rtol=1e-12)
    else:  # the power iteration: from below, converging to the top eigenvalue
        assert (got <= largest * (1 + 1e-9)).all()
        converged = op.normal_norm(2, torch.complex128, iterations=500).numpy()
        np.testing.assert_allclose(converged, largest, rtol=1e-6)


def test_composition_and_adjoint_pass_on_cpu_only():
    coord = torch.from_numpy(radial_trajectory(4, 6, SMALL))
    nufft = NonCartesianMRI(coord, image_shape=SMALL)
    cartesian = SingleCoilMRI(torch.ones(SMALL[1]), SMALL)
    assert nufft.H.runs_on_cpu_only and (nufft @ cartesian).runs_on_cpu_only
    assert not cartesian.H.runs_on_cpu_only and cartesian.H.kind == "generic"
