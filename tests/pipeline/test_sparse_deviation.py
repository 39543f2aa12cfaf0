"""The sparse-deviation data consistency ``x = x̂ + ν`` (pipeline/solvers/sparse_deviation.py)."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from sgilo.operators.fft import fft2c
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.solvers.classical import l1_wavelet
from sgilo.pipeline.solvers.consistency import data_consistency
from sgilo.pipeline.solvers.csgm import CSGMConfig
from sgilo.pipeline.solvers.sparse_deviation import (
    DEFAULT_DC_WAVELET,
    resolve_dc_wavelet,
    sparse_deviation,
)

N = 32


def _phantom() -> torch.Tensor:
    """A smooth disc with an inner ring: ``(1, N, N)`` complex."""
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    r = np.hypot(yy, xx)
    image = (r < 12).astype(float) * (1.0 - 0.4 * ((r > 5) & (r < 7)))
    return torch.from_numpy(image)[None].to(torch.complex128)


def _lesion() -> torch.Tensor:
    """A small bright square the 'generator' does not know: ``(1, N, N)`` complex."""
    out = torch.zeros(1, N, N, dtype=torch.complex128)
    out[0, 12:16, 18:22] = 0.8
    return out


def _column_op(step: int = 4) -> SingleCoilMRI:
    """Every ``step``-th column plus the 4 central ones."""
    mask = torch.zeros(N, dtype=torch.float64)
    mask[::step] = 1
    mask[N // 2 - 2 : N // 2 + 2] = 1
    return SingleCoilMRI(mask.expand(N, N).clone())


def test_exact_model_image_is_kept():
    """Data the model image explains exactly leave nothing to deviate: ``x = x̂``."""
    op, x = _column_op(), _phantom()
    out = sparse_deviation(x, op.A(x), op, lam=1e-3)
    torch.testing.assert_close(out, x, atol=1e-10, rtol=0)


def test_recovers_a_sparse_deviation_better_than_exact_consistency():
    """Truth = model image + a lesion, 4× columns: the sparse deviation puts the lesion back
    (aliasing removed), exact k-space replacement leaves it aliased."""
    op, model = _column_op(), _phantom()
    truth = model + _lesion()
    y = op.A(truth)
    exact = data_consistency(model, y, op)
    sparse = sparse_deviation(model, y, op, lam=1e-3)
    error_exact = (exact - truth).norm() / truth.norm()
    error_sparse = (sparse - truth).norm() / truth.norm()
    assert error_sparse < 0.5 * error_exact


def test_lambda_moves_between_exact_consistency_and_the_model_image():
    """Small λ: the measured k-space is matched (as exact consistency); large λ: ``x ≈ x̂``."""
    op, model = _column_op(), _phantom()
    y = op.A(model + _lesion())
    sampled = op.mask.expand(1, N, N) > 0
    small = sparse_deviation(model, y, op, lam=1e-7)
    miss = (fft2c(small)[sampled] - y[sampled]).norm() / y[sampled].norm()
    assert miss < 1e-3
    large = sparse_deviation(model, y, op, lam=1e3)
    torch.testing.assert_close(large, model, atol=1e-8, rtol=0)


def test_center_equals_l1_wavelet_of_the_residual():
    """``center=x̂`` is ``x̂ + ν`` with ν the ℓ1-wavelet image of ``y − A x̂`` at the λ of ``y``."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, N, N, generator=g, dtype=torch.complex128)
    maps = maps / maps.abs().pow(2).sum(dim=0, keepdim=True).sqrt()
    op = MultiCoilMRI(maps, _column_op().mask[0])
    model = _phantom()
    y = op.A(model + _lesion())
    out = l1_wavelet(y, op, lam=1e-3, center=model, iterations=30).image
    # the same residual problem, with λ made absolute by the scale of y (not of the residual)
    from sgilo.pipeline.solvers.classical import data_scale

    rel = 1e-3 * float(data_scale(y, op)[0]) / float(data_scale(y - op.A(model), op)[0])
    nu = l1_wavelet(y - op.A(model), op, lam=rel, iterations=30).image
    torch.testing.assert_close(out, model + nu, atol=1e-9, rtol=1e-7)


def test_a_complex64_model_image_runs_the_step_in_complex64(monkeypatch):
    """A float32 generator's image (complex64) gets FISTA in complex64, not complex128 (the
    speed, docs/SPEED.md §11), within float32 rounding of the complex128 step (1e-4 relative
    on 8-coil MNI slices); complex128 stays complex128."""
    import sgilo.pipeline.solvers.classical as classical

    seen = []
    solver = classical.wavelet_l1_least_squares

    def spy(y, op, lam, x0, *args, **kwargs):
        seen.append(x0.dtype)
        return solver(y, op, lam, x0, *args, **kwargs)

    monkeypatch.setattr(classical, "wavelet_l1_least_squares", spy)
    op, model = _column_op(), _phantom()
    y = op.A(model + _lesion())
    double = sparse_deviation(model, y, op, lam=1e-3)
    single = sparse_deviation(model.to(torch.complex64), y.to(torch.complex64), op, lam=1e-3)
    assert seen == [torch.complex128, torch.complex64]
    assert single.dtype == torch.complex64
    assert float((single - double).norm() / double.norm()) < 1e-4  # measured 5e-6


def test_resolve_and_config():
    """'auto': the anchors of the data's kind at 8× and 4× sampled fractions, geometric between;
    numbers pass through; the config refuses negative and unknown values."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, N, N, generator=g, dtype=torch.complex128)
    maps = maps / maps.abs().pow(2).sum(dim=0, keepdim=True).sqrt()
    for coils, kind in ((None, "single-coil"), (maps, "multi-coil")):
        at_8x, at_4x = DEFAULT_DC_WAVELET[kind]
        assert at_8x > at_4x  # fewer measurements: keep more of the model image
        for columns, expected in ((N // 8, at_8x), (N // 4, at_4x), (N // 2, at_4x)):
            mask = torch.zeros(N, dtype=torch.float64)
            mask[:columns] = 1
            op = (
                SingleCoilMRI(mask.expand(N, N).clone())
                if coils is None
                else MultiCoilMRI(maps, mask)
            )
            lam = resolve_dc_wavelet("auto", op, 3)
            assert lam.shape == (3,)
            torch.testing.assert_close(lam, torch.full((3,), expected, dtype=torch.float64))
        mask = torch.zeros(N, dtype=torch.float64)
        mask[: round(N / 8 * 2**0.5)] = 1  # between the anchors (f = 6/32)
        op = SingleCoilMRI(mask.expand(N, N).clone()) if coils is None else MultiCoilMRI(maps, mask)
        lam = float(resolve_dc_wavelet("auto", op, 1)[0])
        assert at_4x < lam < at_8x
    op = _column_op()
    torch.testing.assert_close(resolve_dc_wavelet(0, op, 2), torch.zeros(2, dtype=torch.float64))
    assert float(resolve_dc_wavelet(0.01, op, 1)[0]) == 0.01
    assert CSGMConfig().dc_wavelet == "auto"
    with pytest.raises(ValidationError):
        CSGMConfig(dc_wavelet=-1e-3)
    with pytest.raises(ValidationError):
        CSGMConfig(dc_wavelet="large")


def test_per_slice_lambda():
    """A ``(B,)`` λ acts slice by slice: each slice as if reconstructed alone with its λ."""
    op, model = _column_op(), _phantom()
    truth = torch.cat([model + _lesion(), model - _lesion()])
    y = op.A(truth)
    both = sparse_deviation(torch.cat([model, model]), y, op, torch.tensor([1e-4, 1e-2]))
    for b, lam in enumerate((1e-4, 1e-2)):
        alone = sparse_deviation(model, y[b : b + 1], op, lam)
        torch.testing.assert_close(both[b : b + 1], alone, atol=1e-7, rtol=0)
