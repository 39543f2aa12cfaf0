"""Natural-image operators and noise models: adjoints, known answers, validation, seeded noise."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgilo.operators.base import Identity, LinearOperator, adjoint_error
from sgilo.operators.image import (
    Colorization,
    GaussianCompressedSensing,
    Inpainting,
    PartialCirculant,
    SuperResolution,
    bicubic_taps,
    box_mask,
    random_pixel_mask,
)
from sgilo.operators.noise import ComplexGaussianNoise, GaussianNoise, sigma_for_snr

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_image(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*shape, generator=gen(seed), dtype=F64)


OPERATORS: dict[str, Callable[[], LinearOperator]] = {
    "inpaint-pixels-rgb": lambda: Inpainting.random_pixels((3, 37, 31), 0.4, gen(), dtype=F64),
    "inpaint-box-grey": lambda: Inpainting.box((1, 37, 31), (5, 7, 10, 12), dtype=F64),
    "inpaint-per-channel": lambda: Inpainting(
        random_pixel_mask((3, 37, 31), 0.5, gen()), dtype=F64
    ),
    "sr-1": lambda: SuperResolution((3, 37, 31), 1, dtype=F64),
    "sr-2": lambda: SuperResolution((3, 36, 24), 2, dtype=F64),
    "sr-3": lambda: SuperResolution((1, 36, 24), 3, dtype=F64),
    "sr-4": lambda: SuperResolution((3, 36, 24), 4, dtype=F64),
    "sr-8-small": lambda: SuperResolution((1, 8, 16), 8, dtype=F64),
    "gaussian-cs": lambda: GaussianCompressedSensing((3, 9, 7), 50, gen(), dtype=F64),
    "circulant-odd": lambda: PartialCirculant((3, 37, 31), 700, gen(), dtype=F64),
    "circulant-even": lambda: PartialCirculant((1, 36, 24), 100, gen(), dtype=F64),
    "colorization": lambda: Colorization((3, 37, 31), dtype=F64),
    "denoising": lambda: Identity((3, 37, 31)),
}


@pytest.mark.parametrize("name", list(OPERATORS))
def test_adjoint(name: str) -> None:
    assert adjoint_error(OPERATORS[name]()) < 1e-5


@pytest.mark.parametrize("name", list(OPERATORS))
def test_shapes_dtype_and_no_mutation(name: str) -> None:
    op = OPERATORS[name]()
    before = {k: v.clone() for k, v in op.state_dict().items()}
    x = rand_image(2, *op.ishape)
    y = op(x)
    assert y.shape == (2, *op.oshape) and y.dtype == F64
    assert op.A_adjoint(y).shape == x.shape
    for k, v in op.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="expected input of shape"):
        op(rand_image(2, op.ishape[0], op.ishape[1] + 1, op.ishape[2]))


def test_float32_operator_follows_input_dtype() -> None:
    op = SuperResolution((3, 12, 12), 2)  # float32 buffers
    assert op(rand_image(1, 3, 12, 12)).dtype == F64
    assert op(rand_image(1, 3, 12, 12).float()).dtype == torch.float32


# -- known answers --------------------------------------------------------------------------------
def test_inpainting_keeps_exactly_the_observed_pixels() -> None:
    mask = random_pixel_mask((37, 31), 0.3, gen())
    assert int(mask.sum()) == round(0.3 * 37 * 31)
    x = rand_image(2, 3, 37, 31)
    y = Inpainting(mask, channels=3, dtype=F64)(x)
    observed = mask.bool().expand(2, 3, 37, 31)
    assert torch.equal(y[observed], x[observed])
    assert torch.all(y[~observed] == 0)


def test_box_mask_removes_the_rectangle() -> None:
    mask = box_mask((10, 12), (2, 3, 4, 5))
    assert mask[2:6, 3:8].sum() == 0 and mask.sum() == 10 * 12 - 20


def test_colorization_of_grey_is_the_grey() -> None:
    grey = rand_image(2, 1, 37, 31)
    y = Colorization((3, 37, 31), dtype=F64)(grey.expand(2, 3, 37, 31))
    # The paper's weights sum to 0.9999, so grey maps to 0.9999 · grey.
    torch.testing.assert_close(y, 0.9999 * grey, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, grey, rtol=0, atol=1e-4)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_super_resolution_of_constant_is_constant(factor: int) -> None:
    y = SuperResolution((3, 36, 24), factor, dtype=F64)(torch.full((2, 3, 36, 24), 0.7, dtype=F64))
    torch.testing.assert_close(y, torch.full_like(y, 0.7), rtol=0, atol=1e-12)


def test_super_resolution_factor_one_is_identity() -> None:
    x = rand_image(2, 3, 37, 31)
    assert torch.equal(SuperResolution((3, 37, 31), 1, dtype=F64)(x), x)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_super_resolution_matches_torch_antialiased_bicubic_away_from_borders(factor: int) -> None:
    # torch/PIL truncate the kernel at the border instead of reflecting; interiors must agree.
    x = rand_image(2, 3, 36, 24)
    y = SuperResolution((3, 36, 24), factor, dtype=F64)(x)
    ref = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], rtol=0, atol=1e-12)


def test_bicubic_taps_are_symmetric_and_normalised() -> None:
    for f in (2, 3, 4):
        w, _ = bicubic_taps(f)
        np.testing.assert_allclose(w, w[::-1], atol=1e-15)
        assert math.isclose(w.sum(), 1.0)


def test_gaussian_cs_preserves_energy_in_expectation() -> None:
    # ‖Ax‖²/‖x‖² ~ χ²_m / m (mean 1, std sqrt(2/m) = 0.25); 200 draws: std of the mean 0.018.
    x = rand_image(1, 1, 8, 8)
    ratios = [
        float(GaussianCompressedSensing((1, 8, 8), 32, gen(s), dtype=F64)(x).norm() ** 2)
        / float(x.norm() ** 2)
        for s in range(200)
    ]
    assert abs(np.mean(ratios) - 1.0) < 0.08


def test_partial_circulant_preserves_energy_in_expectation() -> None:
    x = rand_image(1, 1, 8, 8) - 0.5
    ratios = [
        float(PartialCirculant((1, 8, 8), 32, gen(s), dtype=F64)(x).norm() ** 2)
        / float(x.norm() ** 2)
        for s in range(200)
    ]
    assert abs(np.mean(ratios) - 1.0) < 0.1


def test_partial_circulant_equals_dense_circulant_matrix() -> None:
    shape, m = (2, 3, 5), 12
    op = PartialCirculant(shape, m, gen(3), dtype=F64)
    g, s, rows = op.kernel.numpy(), op.signs.numpy(), op.rows.numpy()
    n = g.size
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    dense = g[(i - j) % n][rows] * s[None, :]  # C_ij = g_{(i-j) mod n}, then P_Ω, then diag(s)
    x = rand_image(2, *shape)
    expected = x.reshape(2, n).numpy() @ dense.T
    np.testing.assert_allclose(op(x).numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        op.A_adjoint(op(x)).numpy().reshape(2, n), expected @ dense, rtol=1e-12, atol=1e-12
    )
    assert sorted(set(s.tolist())) == [-1.0, 1.0] and len(set(rows.tolist())) == m


def test_compressed_sensing_is_reproducible_from_the_seed() -> None:
    a, b = (GaussianCompressedSensing((1, 6, 6), 10, gen(5)) for _ in range(2))
    assert torch.equal(a.matrix, b.matrix)
    c, d = (PartialCirculant((1, 6, 6), 10, gen(5)) for _ in range(2))
    assert torch.equal(c.kernel, d.kernel) and torch.equal(c.rows, d.rows)


# -- validation -----------------------------------------------------------------------------------
BAD: dict[str, tuple[Callable[[], object], str]] = {
    "mask-1d": (lambda: Inpainting(torch.ones(5)), "mask"),
    "mask-values": (lambda: Inpainting(torch.full((4, 4), 0.5)), "0/1"),
    "mask-nan": (lambda: Inpainting(torch.full((4, 4), float("nan"))), "finite"),
    "mask-channels": (lambda: Inpainting(torch.ones(3, 4, 4), channels=1), "channels"),
    "fraction": (lambda: random_pixel_mask((4, 4), 1.5, gen()), "observed_fraction"),
    "box-outside": (lambda: box_mask((4, 4), (2, 2, 3, 1)), "box"),
    "box-empty": (lambda: box_mask((4, 4), (0, 0, 0, 1)), "box"),
    "sr-factor-0": (lambda: SuperResolution((3, 8, 8), 0), "factor"),
    "sr-factor-float": (lambda: SuperResolution((3, 8, 8), 2.0), "factor"),  # type: ignore[arg-type]
    "sr-divisible": (lambda: SuperResolution((3, 37, 24), 2), "divisible"),
    "sr-shape": (lambda: SuperResolution((8, 8), 2), r"\(C, H, W\)"),
    "cs-m-0": (lambda: GaussianCompressedSensing((1, 4, 4), 0, gen()), "m"),
    "cs-m-big": (lambda: GaussianCompressedSensing((1, 4, 4), 17, gen()), "m"),
    "circ-m-big": (lambda: PartialCirculant((1, 4, 4), 17, gen()), "m"),
    "circ-shape": (lambda: PartialCirculant((1, 0, 4), 2, gen()), r"\(C, H, W\)"),
    "color-grey": (lambda: Colorization((1, 8, 8)), "RGB"),
    "sigma-neg": (lambda: GaussianNoise(-0.1), "sigma"),
    "sigma-inf": (lambda: ComplexGaussianNoise(float("inf")), "sigma"),
    "snr-zero-signal": (lambda: sigma_for_snr(torch.zeros(4), 10.0), "zero"),
    "snr-nan": (lambda: sigma_for_snr(torch.ones(4), float("nan")), "snr_db"),
    "noise-real-on-complex": (
        lambda: GaussianNoise(0.1)(torch.ones(3, dtype=torch.complex64), gen()),
        "real",
    ),
    "noise-complex-on-real": (lambda: ComplexGaussianNoise(0.1)(torch.ones(3), gen()), "complex"),
    "op-complex-input": (
        lambda: Colorization((3, 4, 4))(torch.ones(1, 3, 4, 4, dtype=torch.complex64)),
        "real",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_raises(name: str) -> None:
    make, match = BAD[name]
    with pytest.raises(ValueError, match=match):
        make()


# -- noise ----------------------------------------------------------------------------------------
def test_gaussian_noise_std_and_mean() -> None:
    # 200k samples: the relative std error of the empirical std is 1/sqrt(2N) ≈ 0.0016.
    y = torch.zeros(200_000, dtype=F64)
    eta = GaussianNoise(0.3)(y, gen(7)) - y
    assert abs(float(eta.std()) / 0.3 - 1.0) < 0.01
    assert abs(float(eta.mean())) < 0.005


def test_complex_noise_has_independent_parts_of_variance_half_sigma_squared() -> None:
    sigma = 0.4
    eta = ComplexGaussianNoise(sigma)(torch.zeros(200_000, dtype=torch.complex128), gen(8))
    assert eta.dtype == torch.complex128
    for part in (eta.real, eta.imag):
        assert abs(float(part.var()) / (sigma**2 / 2) - 1.0) < 0.02
    correlation = float(torch.corrcoef(torch.stack([eta.real, eta.imag]))[0, 1])
    assert abs(correlation) < 0.01  # std of the sample correlation ≈ 1/sqrt(N) = 0.0022
    assert abs(float(eta.abs().pow(2).mean()) / sigma**2 - 1.0) < 0.02


def test_noise_is_reproducible_from_the_seed() -> None:
    y = torch.randn(4, 5, generator=gen(1))
    noise = GaussianNoise(0.1)
    assert torch.equal(noise(y, gen(3)), noise(y, gen(3)))
    assert not torch.equal(noise(y, gen(3)), noise(y, gen(4)))
    yc = torch.randn(4, 5, dtype=torch.complex64, generator=gen(1))
    cnoise = ComplexGaussianNoise(0.1)
    assert torch.equal(cnoise(yc, gen(3)), cnoise(yc, gen(3)))
    assert torch.equal(GaussianNoise(0.0)(y, gen(3)), y)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 20.0, 40.0])
@pytest.mark.parametrize("is_complex", [False, True])
def test_sigma_for_snr_round_trips(snr_db: float, is_complex: bool) -> None:
    dtype = torch.complex128 if is_complex else F64
    signal = torch.randn(100_000, dtype=dtype, generator=gen(2)) + 0.5
    sigma = sigma_for_snr(signal, snr_db)
    power = float(signal.abs().pow(2).mean())
    assert math.isclose(10 * math.log10(power / sigma**2), snr_db, abs_tol=1e-9)
    noise = (ComplexGaussianNoise if is_complex else GaussianNoise)(sigma)
    eta = noise(signal, gen(9)) - signal
    measured = 10 * math.log10(power / float(eta.abs().pow(2).mean()))
    assert abs(measured - snr_db) < 0.05  # 100k samples: relative power error ≈ 0.5-1 %


# -- what the solvers ask about: every property on every operator, odd sizes ----------------------
SMALL_OPERATORS: dict[str, Callable[[], LinearOperator]] = {
    "inpaint": lambda: Inpainting.random_pixels((3, 7, 5), 0.4, gen(), dtype=F64),
    "sr-3": lambda: SuperResolution((1, 9, 3), 3, dtype=F64),
    "gaussian-cs": lambda: GaussianCompressedSensing((1, 7, 5), 13, gen(), dtype=F64),
    "circulant": lambda: PartialCirculant((1, 7, 5), 17, gen(), dtype=F64),
    "colorization": lambda: Colorization((3, 7, 5), dtype=F64),
    "denoising": lambda: Identity((3, 7, 5)),
}


@pytest.mark.parametrize("name", list(OPERATORS))
def test_solver_properties(name: str) -> None:
    op = OPERATORS[name]()
    assert op.kind == "image" and not op.runs_on_cpu_only
    assert op.sampling_mask is None and op.coil_maps is None and op.trajectory is None
    assert op.calibration_region(2) is None and op.num_coils == 1
    # the entries of y that can be non-zero (for a positive image) are the measurements
    nonzero = (op.A(rand_image(2, *op.ishape) + 0.1) != 0).reshape(2, -1).sum(dim=1).double()
    assert torch.equal(op.num_measurements(2), nonzero)
    fraction = op.num_measurements(2) / math.prod(op.ishape)
    assert torch.equal(op.sampled_fraction(2), fraction)


@pytest.mark.parametrize("name", list(SMALL_OPERATORS))
def test_normal_norm_against_dense_eigenvalues(name: str) -> None:
    op = SMALL_OPERATORS[name]()
    n = math.prod(op.ishape)
    dense = op.A(torch.eye(n, dtype=F64).reshape(n, *op.ishape)).reshape(n, -1).T  # (m, n)
    largest = float(np.linalg.eigvalsh((dense.T @ dense).numpy()).max())
    got = op.normal_norm(2, F64)
    assert got.shape == (2,) and got.dtype == F64
    if name in ("inpaint", "colorization", "denoising"):  # analytic
        np.testing.assert_allclose(got.numpy(), largest, rtol=1e-12)
    else:  # the power iteration: from below, converging to the top eigenvalue
        assert bool((got <= largest * (1 + 1e-9)).all())
        converged = op.normal_norm(1, F64, iterations=2000)
        np.testing.assert_allclose(converged.numpy(), largest, rtol=1e-6)


def test_real_identity_on_images_is_an_image_operator_and_others_are_not() -> None:
    assert Identity((3, 5, 7)).kind == "image"
    assert Identity((5, 7)).kind == "generic"
    assert Identity((3, 5, 7), complex_data=True).kind == "generic"
