"""Multi-coil ℓ1-wavelet's default λ raised for noisy data (lambda_rule.NOISE_RAISE,
classical.tuned_lambda; docs/CLASSICAL_TUNING.md, "Noisier data")."""

from __future__ import annotations

import pytest
import torch

from sgilo.operators.mri import MultiCoilMRI
from sgilo.pipeline.solvers.classical import CLASSICAL, default_lambda


def test_multicoil_l1_wavelet_raises_its_default_for_noisy_data():
    """Multi-coil ℓ1-wavelet's default λ is the tuned one up to the rule's noise level
    ``r_0`` (σ̂ / s, ``lambda_rule.NOISE_RAISE``) and grows as σ̂ above it, at most 30×; TV's and
    single-coil data's stay the tuned ones. The solver and the generative methods' trusted-band
    step use it, and a fixed λ is never changed."""
    from sgilo.pipeline.solvers.classical import data_scale, tuned_lambda
    from sgilo.pipeline.solvers.kspace_cv import estimate_noise_sigma
    from sgilo.pipeline.solvers.lambda_rule import NOISE_RAISE, raised_for_noise
    from sgilo.pipeline.solvers.trusted_band import resolve_band_lambda

    r0, power = NOISE_RAISE[("l1-wavelet", "multi-coil")]
    default = torch.tensor([1e-3, 1e-3, 1e-3, 1e-3], dtype=torch.float64)
    r = torch.tensor([r0 / 2, r0, 4 * r0, 1000 * r0], dtype=torch.float64)
    raised = raised_for_noise("l1-wavelet", "multi-coil", default, r)
    assert raised.tolist() == pytest.approx([1e-3, 1e-3, 1e-3 * 4**power, 3e-2])
    assert torch.equal(raised_for_noise("tv", "multi-coil", default, r), default)
    assert torch.equal(raised_for_noise("l1-wavelet", "single-coil", default, r), default)

    maps = torch.ones(2, 32, 32, dtype=torch.complex64) / 2**0.5
    op = MultiCoilMRI(maps, (torch.arange(32) % 4 == 0).float().expand(32, 32))
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((yy - 16) ** 2 + (xx - 15) ** 2) / 40).to(torch.complex64)
    clean = op.A(blob.expand(2, 32, 32))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(clean.shape, dtype=torch.complex64, generator=g) * op.mask
    noisy = clean + 0.5 * clean.abs().max() * noise / 32  # σ̂ / s far above r_0
    tuned = default_lambda("l1-wavelet", op, 2)
    assert torch.equal(tuned_lambda("l1-wavelet", clean, op), tuned)
    r_noisy = estimate_noise_sigma(noisy, op) / data_scale(noisy, op).cpu().double()
    assert (r_noisy > r0).all()
    expected = tuned * (r_noisy / r0).clamp(max=30) ** power
    assert tuned_lambda("l1-wavelet", noisy, op).tolist() == pytest.approx(expected.tolist())
    used = CLASSICAL["l1-wavelet"](noisy, op, iterations=2).diagnostics.lambda_rel
    assert used == pytest.approx(expected.tolist())
    assert CLASSICAL["tv"](noisy, op, iterations=2).diagnostics.lambda_rel == pytest.approx(
        default_lambda("tv", op, 2).tolist()
    )
    fixed = CLASSICAL["l1-wavelet"](noisy, op, lam=1e-3, iterations=2).diagnostics.lambda_rel
    assert fixed == pytest.approx([1e-3, 1e-3])
    band = resolve_band_lambda("auto", op, 2, noisy)
    assert band.tolist() == pytest.approx(expected.tolist())
    assert resolve_band_lambda(0.01, op, 2, noisy).tolist() == [0.01, 0.01]
