"""The final step's trusted band (pipeline/solvers/trusted_band.py): the weights, that the model
image's band beyond it cannot reach the output while its low band does, and that the prior-fit
check still judges the whole model image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgilo.operators.fft import fft2c, ifft2c
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.methods import Prior, solve
from sgilo.pipeline.solvers.consistency import make_consistent
from sgilo.pipeline.solvers.fit_config import MRIFitConfig
from sgilo.pipeline.solvers.trusted_band import (
    DEFAULT_DC_BAND,
    band_edges,
    band_weights,
    low_band,
)

N = 32
MEASURED = [0, 3, 7, 14, 15, 16, 17, 18, 22, 27, 30]
BAND = 0.25  # k0 = 0.25 · 16 = 4, k1 = 12 columns on a 32² grid for a 32² generator


def test_weights_full_up_to_k0_none_from_3_k0_linear_between():
    assert band_edges(DEFAULT_DC_BAND, 128, (128, 128)) == pytest.approx((6.4, 19.2))
    w = band_weights(DEFAULT_DC_BAND, 128, (128, 128))
    k = torch.arange(128) - 64
    assert (w[k.abs() <= 6] == 1).all() and (w[k.abs() >= 20] == 0).all()
    assert w[64 + 10] == pytest.approx((19.2 - 10) / 12.8)
    # a wide grid: the prior covers its central square, so its cycles count across that square
    assert band_edges(0.1, 64, (64, 128)) == pytest.approx((6.4, 19.2))


def _problem(coils: int) -> tuple[torch.Tensor, object, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(N)
    mask[MEASURED] = 1
    image = torch.randn(2, N, N, generator=g, dtype=torch.complex64)
    if coils == 1:
        op = SingleCoilMRI(mask, shape=(N, N))
    else:
        maps = torch.randn(coils, N, N, generator=g, dtype=torch.complex64)
        maps = maps / maps.abs().pow(2).sum(dim=0).sqrt()
        op = MultiCoilMRI(maps, mask)
    model = torch.randn(2, N, N, generator=g, dtype=torch.complex64)
    return op.A(image), op, model


def _column_part(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The part of ``x`` on the k-space columns where ``keep`` (``(W,)`` bool) is true."""
    return ifft2c(fft2c(x) * keep.to(x.real.dtype))


@pytest.mark.parametrize("coils", [1, 2])  # 2 coils × 11 of 32 columns: underdetermined
def test_the_model_images_high_band_cannot_reach_the_output(coils):
    y, op, model = _problem(coils)
    k = (torch.arange(N) - N // 2).abs()
    high = _column_part(torch.randn_like(model), k >= 12)
    banded = MRIFitConfig(dc_band=BAND)
    out = make_consistent(model, y, op, banded, resolution=N)
    changed = make_consistent(model + 5 * high, y, op, banded, resolution=N)
    torch.testing.assert_close(changed, out, rtol=1e-4, atol=1e-4)
    # without the band (or without a resolution) the same change moves the output
    whole = MRIFitConfig(dc_band=0)
    plain = make_consistent(model, y, op, whole, resolution=N)
    assert (make_consistent(model + 5 * high, y, op, whole, resolution=N) - plain).abs().max() > 0.5
    unknown = make_consistent(model, y, op, banded, resolution=None)
    torch.testing.assert_close(unknown, plain)


def test_the_model_images_low_band_is_the_reference():
    y, op, model = _problem(1)
    k = (torch.arange(N) - N // 2).abs()
    config = MRIFitConfig(dc_band=BAND)
    out = make_consistent(model, y, op, config, resolution=N)
    # an unmeasured column inside the trusted band: the model's content there is kept
    column = N // 2 + 4
    assert op.slice_masks(2)[0, :, column].max() == 0 and k[column] <= 4
    bump = _column_part(torch.randn_like(model), torch.arange(N) == column)
    moved = make_consistent(model + bump, y, op, config, resolution=N)
    assert (
        (fft2c(moved - out)[..., column]).abs().max() > 0.5 * fft2c(bump)[..., column].abs().max()
    )
    torch.testing.assert_close(low_band(bump, BAND, N), bump, rtol=1e-5, atol=1e-6)


def test_prior_fit_judges_the_whole_model_image(gen_stats):
    gen, stats = gen_stats
    prior = Prior(gen, stats, Path("tiny.pt"))
    r = int(gen.config.resolution)
    mask = torch.zeros(r)
    mask[[0, 2, 4, 6, 7, 8, 9, 11, 13, 15]] = 1
    op = SingleCoilMRI(mask, shape=(r, r))
    yy, xx = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
    image = torch.exp(-((yy - 7.0) ** 2 + (xx - 8.0) ** 2) / 10.0).to(torch.complex64)
    y = op.A(torch.stack([image, image.flip(-1)]))
    runs = {
        band: solve(
            y, op, "csgm", prior=prior, solver_options={"steps": 6, "restarts": 1, "dc_band": band}
        )
        for band in (0.0, 0.5)
    }
    reports = {band: run.diagnostics.prior_fit for band, run in runs.items()}
    assert reports[0.0].heldout_errors == reports[0.5].heldout_errors
    assert (runs[0.0].image - runs[0.5].image).abs().max() > 1e-3


def test_low_band_on_a_wide_grid_keeps_the_columns_of_the_band():
    x = torch.randn(1, 16, 48, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    k0, k1 = band_edges(BAND, 16, (16, 48))  # 6 and 18 columns across the 48-wide grid
    low = fft2c(low_band(x, BAND, 16))
    k = (torch.arange(48) - 24).abs()
    torch.testing.assert_close(low[..., k <= k0], fft2c(x)[..., k <= k0], rtol=1e-5, atol=1e-5)
    assert low[..., k >= k1].abs().max() < 1e-5


@pytest.mark.parametrize("prior_fit", [False, True])
def test_every_generative_output_uses_the_band_and_reports_its_lambda(gen_stats, prior_fit):
    """Both paths to a generative output (the solver's own final step, and the prior-fit check's
    step on all samples) pass the generator's resolution and record the λ they used."""
    gen, stats = gen_stats
    prior = Prior(gen, stats, Path("tiny.pt"))
    r = int(gen.config.resolution)
    mask = torch.zeros(r)
    mask[[0, 2, 4, 6, 7, 8, 9, 11, 13, 15]] = 1  # 10 of 16 columns: the 4× anchors
    op = SingleCoilMRI(mask, shape=(r, r))
    images = torch.randn(2, r, r, dtype=torch.complex64, generator=torch.Generator().manual_seed(4))
    y = op.A(images)
    base = {"steps": 6, "restarts": 1, "prior_fit": prior_fit}
    runs = {
        band: solve(y, op, "csgm", prior=prior, solver_options={**base, "dc_band": band})
        for band in (0.0, 0.5)
    }
    # single-coil at 4×: the classical ℓ1-wavelet's λ 0.003 where the band applies, the
    # sparse deviation's own 0.001 where it does not
    assert runs[0.5].diagnostics.dc_lambdas == pytest.approx([0.003, 0.003])
    assert runs[0.0].diagnostics.dc_lambdas == pytest.approx([0.001, 0.001])
    if not prior_fit:  # the solver's final step equals the band's step on its model image
        plain = {**base, "data_consistency": False}
        model = solve(y, op, "csgm", prior=prior, solver_options=plain)
        expected = make_consistent(model.image, y, op, MRIFitConfig(dc_band=0.5), resolution=r)
        torch.testing.assert_close(runs[0.5].image, expected, rtol=1e-4, atol=1e-5)
    assert (runs[0.0].image - runs[0.5].image).abs().max() > 1e-3
