"""The noise limit: on very noisy single-coil data at low acceleration ``auto`` keeps a classical
method whatever the held-out statistics say, and a generative method run there warns
(pipeline/prior_fit_rule.py, prior_fit.py, method_choice.py)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.methods import Prior, solve
from sgilo.pipeline.prior_fit import mismatch_warning, noise_warning, prior_warnings
from sgilo.pipeline.prior_fit_rule import NOISE_LIMIT_BELOW, SINGLE_COIL_NOISE_LIMIT, noise_limit
from sgilo.pipeline.solvers.classical import data_scale
from sgilo.pipeline.solvers.kspace_cv import estimate_noise_sigma

R = 16
MEASURED = [0, 2, 4, 6, 7, 8, 9, 11, 13, 15]  # the centre 6…9 and six outer columns: R = 1.6
#: CSGM quick, and the held-out tests out of the way: only the noise limit decides
OPTIONS = {
    "generative": "csgm",
    "generative_settings": {"steps": 6, "restarts": 1},
    "margin": 1e9,
    "unexplained_limit": 1e9,
}


@pytest.fixture(scope="module")
def prior(gen_stats) -> Prior:
    return Prior(*gen_stats, Path("tiny.pt"))


def _data(op) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    blob = torch.exp(-((yy - 7.0) ** 2 + (xx - 8.0) ** 2) / 10.0).to(torch.complex64)
    y = op.A(torch.stack([blob, 0.5 * blob]))
    noise = torch.randn(y.shape, generator=g) + 1j * torch.randn(y.shape, generator=g)
    measured = op.A(torch.ones(1, R, R, dtype=torch.complex64)) != 0
    return y + 0.05 * noise.to(y.dtype) * measured


def _single_coil() -> tuple[torch.Tensor, SingleCoilMRI, torch.Tensor, list[float]]:
    """The column mask, its single-coil operator, the noisy data of two slices and their
    estimated noise levels σ̂/s."""
    mask = torch.zeros(R)
    mask[MEASURED] = 1
    op = SingleCoilMRI(mask, shape=(R, R))
    y = _data(op)
    level = (estimate_noise_sigma(y, op) / data_scale(y, op).double()).tolist()
    return mask, op, y, level


def test_the_limit_is_for_one_coil_below_its_acceleration():
    assert noise_limit(4.0, multi_coil=False) == SINGLE_COIL_NOISE_LIMIT
    assert noise_limit(NOISE_LIMIT_BELOW - 0.01, multi_coil=False) == SINGLE_COIL_NOISE_LIMIT
    assert noise_limit(NOISE_LIMIT_BELOW, multi_coil=False) is None
    assert noise_limit(8.0, multi_coil=False) is None
    assert noise_limit(4.0, multi_coil=True) is None
    assert 4.0 < NOISE_LIMIT_BELOW < 8.0


def test_auto_keeps_a_classical_method_on_data_noisier_than_the_limit(prior):
    mask, op, y, level = _single_coil()
    plain = solve(y, op, "auto", prior=prior, solver_options={**OPTIONS, "noise_limit": 1e9})
    d = plain.diagnostics
    assert d.auto_choice == ["csgm", "csgm"] and d.auto_noise_level == pytest.approx(level)
    # one slice above the limit, one below
    limit = math.sqrt(level[0] * level[1])
    assert min(level) < limit < max(level)
    d = solve(y, op, "auto", prior=prior, solver_options={**OPTIONS, "noise_limit": limit})
    d = d.diagnostics
    assert d.auto_noise_limit == [limit, limit]
    for b, chosen in enumerate(d.auto_choice):
        assert (chosen == "csgm") == (level[b] <= limit)
    record = solve(y, op, "auto", prior=prior, solver_options=OPTIONS).diagnostics_dict()
    # by default: the single-coil limit at this acceleration (1.6x), recorded in run.json
    assert record["auto_noise_limit"] == [SINGLE_COIL_NOISE_LIMIT] * 2
    assert record["auto_noise_level"] == pytest.approx(level)
    maps = torch.ones(2, R, R, dtype=torch.complex64) / math.sqrt(2.0)
    multi = MultiCoilMRI(maps, mask)
    d = solve(_data(multi), multi, "auto", prior=prior, solver_options=OPTIONS).diagnostics
    assert d.auto_noise_limit == [None, None]  # several coils: not judged


def test_a_generative_method_reports_the_noise_level_and_warns_above_the_limit(prior):
    mask, op, y, level = _single_coil()
    options = {"steps": 6, "restarts": 1}
    result = solve(y, op, "csgm", prior=prior, solver_options=options)
    report = result.diagnostics.prior_fit
    assert report.noise_level == pytest.approx(level)
    assert report.noise_limit == [SINGLE_COIL_NOISE_LIMIT] * 2
    record = result.diagnostics_dict()
    assert record["prior_fit_noise_level"] == pytest.approx(level)
    noisy = sum(v > SINGLE_COIL_NOISE_LIMIT for v in level)
    line = noise_warning(report, "csgm")
    assert (line is None) == (noisy == 0)
    limit = math.sqrt(level[0] * level[1])  # one slice above, one below
    line = noise_warning(replace(report, noise_limit=[limit, limit]), "csgm")
    assert line.startswith("warning: 1 of 2 slice(s)") and f"{max(level):.2f}" in line
    assert "--method auto" in line
    # auto applies the limit itself: no warning; nor where no limit applies
    assert noise_warning(replace(report, noise_limit=[None, None]), "csgm") is None
    noisy_report = replace(report, noise_limit=[limit, limit])
    assert len(prior_warnings(noisy_report, "csgm")) == 1 + bool(mismatch_warning(report, "csgm"))
    assert all("noise level" not in w for w in prior_warnings(noisy_report, "csgm", auto=True))
    maps = torch.ones(2, R, R, dtype=torch.complex64) / math.sqrt(2.0)
    multi = MultiCoilMRI(maps, mask)
    report = solve(_data(multi), multi, "csgm", prior=prior, solver_options=options)
    assert report.diagnostics.prior_fit.noise_limit == [None, None]
