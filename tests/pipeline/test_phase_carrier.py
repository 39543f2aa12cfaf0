"""The phase carrier of a 1-channel generator (pipeline/solvers/calibration.py): which estimate
``phase="auto"`` picks, and that the CG-SENSE estimate of multi-coil data recovers a smooth phase
that the narrow calibration region of an 8× mask cannot (the cause of the generative methods'
8-coil 8× deficit, docs/GENERATIVE_TUNING.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.simulate import simulate_acquisition
from sgilo.pipeline.solvers.calibration import (
    calibration_phase,
    low_pass,
    sense_phase,
    unit_phasor,
)
from sgilo.pipeline.solvers.fit_config import resolve_phase
from sgilo.pipeline.solvers.problem import prepare_problem

N = 96


def _phantom(n: int = N) -> np.ndarray:
    """A magnitude with edges in both directions: an ellipse with brighter and darker blocks."""
    yy, xx = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    img = ((xx / 0.8) ** 2 + (yy / 0.9) ** 2 <= 1).astype(np.float64) * 0.6
    img[(np.abs(xx - 0.3) < 0.15) & (np.abs(yy) < 0.5)] = 1.0
    img[(np.abs(xx + 0.35) < 0.1) & (np.abs(yy + 0.2) < 0.3)] = 0.2
    return img[None]


def _acquisition(coils: int | None, seed: int = 2):
    acq = simulate_acquisition(
        _phantom(), acceleration=8, center_fraction=0.04, num_coils=coils, snr_db=None, seed=seed
    )
    y = torch.from_numpy(acq.kspace)
    mask = torch.from_numpy(acq.mask.astype(np.float32))
    if coils is None:
        return acq, y[:, 0], SingleCoilMRI(mask, (N, N))
    return acq, y, MultiCoilMRI(torch.from_numpy(acq.maps), mask)


def _weighted_error(carrier: torch.Tensor, acq) -> float:
    """``Σ m |c − e^{iφ}| / Σ m``: the magnitude-weighted error of a carrier (true maps, so the
    true carrier is the simulated phase itself)."""
    truth = torch.from_numpy(np.exp(1j * np.angle(acq.image)))
    m = torch.from_numpy(acq.target.astype(np.float64))
    return float(((carrier.to(torch.complex128) - truth).abs() * m).sum() / m.sum())


def test_auto_resolves_to_sense_with_coil_maps_only():
    assert resolve_phase("auto", 1, multicoil=True) == "from-sense"
    assert resolve_phase("auto", 1, multicoil=False) == "from-calibration"
    assert resolve_phase("auto", 1) == "from-calibration"
    assert resolve_phase("auto", 2, multicoil=True) == "none"
    assert resolve_phase("from-calibration", 1, multicoil=True) == "from-calibration"
    with pytest.raises(ValueError, match="coil maps"):
        resolve_phase("from-sense", 1, multicoil=False)
    with pytest.raises(ValueError, match="1-channel"):
        resolve_phase("from-sense", 2, multicoil=True)


def test_low_pass_keeps_only_the_band():
    yy, xx = np.mgrid[0:N, 0:N]
    low = np.exp(2j * np.pi * (2 * xx - 3 * yy) / N)
    high = np.exp(2j * np.pi * (9 * xx + yy) / N)
    x = torch.from_numpy((low + 0.5 * high)[None])
    out = low_pass(x, cycles=4)
    assert torch.allclose(out, torch.from_numpy(low[None]), atol=1e-10)
    assert torch.allclose(low_pass(x, cycles=9), x, atol=1e-10)


def test_unit_phasor_is_one_where_zero():
    x = torch.tensor([[0.0 + 0.0j, 3.0 - 4.0j]], dtype=torch.complex128)
    assert torch.allclose(unit_phasor(x), torch.tensor([[1.0 + 0j, 0.6 - 0.8j]]).to(x.dtype))


def test_sense_phase_resolves_what_the_calibration_region_cannot():
    """8 coils, 8× with 4 calibration columns of 96, a smooth phase up to 3 cycles per field of
    view (the simulator's), no noise: the calibration image's phase is wrong wherever the phase
    varies across the columns; the low-passed CG-SENSE phase is at least twice as close."""
    for seed in (2, 5):
        acq, y, op = _acquisition(8, seed)
        calib = _weighted_error(calibration_phase(y, op), acq)
        sense = _weighted_error(sense_phase(y, op), acq)
        assert calib > 0.1
        assert sense < 0.5 * calib


def test_sense_phase_needs_coil_maps():
    _, y, op = _acquisition(None)
    with pytest.raises(ValueError, match="coil maps"):
        sense_phase(y, op)


@pytest.mark.parametrize("coils", [None, 8])
def test_prepare_problem_uses_the_resolved_carrier(coils):
    gen = Generator(GeneratorConfig(resolution=16, style_dim=16, n_mlp=2, image_channels=1))
    acq, y, op = _acquisition(coils)
    problem = prepare_problem(y, op, gen, phase="auto", normalize=True, fit_gain=True)
    if coils is None:
        assert problem.phase_model == "from-calibration"
        assert torch.allclose(problem.phase, calibration_phase(problem.y_normalized, op))
    else:
        assert problem.phase_model == "from-sense"
        assert torch.allclose(problem.phase, sense_phase(problem.y_normalized, op), atol=1e-6)
        old = prepare_problem(y, op, gen, phase="from-calibration", normalize=True)
        assert old.phase_model == "from-calibration"
        assert not torch.allclose(old.phase, problem.phase, atol=1e-2)


def test_sense_phase_of_non_cartesian_data():
    """No calibration region is needed: a radial-like trajectory with coil maps gets the carrier
    too (a constant phase, recovered to within rounding of the NUFFT's CG-SENSE)."""
    from sgilo.operators.mri import NonCartesianMRI
    from sgilo.pipeline.simulate import normalized_birdcage_maps

    r = 32
    maps = torch.from_numpy(normalized_birdcage_maps(4, (r, r)).astype(np.complex64))
    coord = torch.rand(600, 2, generator=torch.Generator().manual_seed(0)) * r - r / 2
    op = NonCartesianMRI(coord, maps=maps)
    x = torch.ones(1, r, r, dtype=torch.complex64) * np.exp(0.5j)
    carrier = sense_phase(op.A(x), op)
    assert carrier.shape == (1, r, r)
    assert float((carrier - np.exp(0.5j)).abs().mean()) < 0.02
    assert resolve_phase("auto", 1, multicoil=op.coil_maps is not None) == "from-sense"
