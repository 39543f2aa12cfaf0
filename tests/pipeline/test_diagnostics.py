"""Typed solver diagnostics (pipeline/solvers/diagnostics.py): real lists in the result, one
serialization at the edge (JSON arrays in run records, JSON text only in HDF5 attributes), and the
per-slice λ of the classical solvers."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from sgilo.operators.masks import column_mask
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.io.fastmri import write_kspace
from sgilo.pipeline.reconstruct import StudyReconstruction, reconstruct_file
from sgilo.pipeline.solvers.base import ReconResult
from sgilo.pipeline.solvers.classical import data_scale, l1_wavelet
from sgilo.pipeline.solvers.diagnostics import (
    ClassicalDiagnostics,
    HeldoutChoice,
    ILODiagnostics,
    diagnostics_record,
)
from sgilo.pipeline.solvers.ilo import ILOConfig


def _ilo_diagnostics(heldout: HeldoutChoice | None) -> ILODiagnostics:
    return ILODiagnostics(
        config=ILOConfig(steps=(5, 3)),
        phase="from-calibration",
        dc_lambdas=[0.001, 0.002],
        rounds=2,
        measurement_loss=0.5,
        measurement_losses=[0.25, 0.75],
        round_losses=[1.0, 0.5],
        round_start_losses=[2.0, 1.0],
        steps_run=[5, 2],
        last_round_losses=[[0.3, 0.25], [0.8, 0.75]],
        data_scale=[1.5, 2.5],
        radius_fractions=[0.03, 0.03],
        heldout=heldout,
    )


def test_record_is_flat_json_with_real_arrays_and_the_resolved_phase():
    d = _ilo_diagnostics(HeldoutChoice(losses=[0.1, 0.2], rounds=[1, 0], steps=[2, 4]))
    record = ReconResult(image=torch.zeros(2, 4, 4), diagnostics=d).diagnostics_dict()
    assert record == json.loads(json.dumps(record))  # JSON-able as it is
    assert record["phase"] == "from-calibration"  # the resolved one, not the config's "auto"
    assert record["steps"] == [5, 3] and record["rounds"] == 2  # config fields, tuples as lists
    assert record["last_round_losses"] == [[0.3, 0.25], [0.8, 0.75]]
    assert record["dc_lambdas"] == [0.001, 0.002]
    assert record["heldout_losses"] == [0.1, 0.2]
    assert record["selected_rounds"] == [1, 0] and record["selected_steps"] == [2, 4]
    assert not any(isinstance(v, str) and v.startswith("[") for v in record.values())
    assert "config" not in record and "heldout" not in record


def test_record_leaves_out_what_does_not_apply():
    record = diagnostics_record(_ilo_diagnostics(None))
    assert "heldout_losses" not in record and "selected_rounds" not in record
    assert diagnostics_record(ClassicalDiagnostics(iterations=3, damping=0.0)) == {
        "iterations": 3,
        "damping": 0.0,
    }
    assert diagnostics_record(None) == {}


def test_file_attributes_keep_scalars_and_write_lists_as_json_text():
    recon = StudyReconstruction(
        "s",
        np.zeros((2, 4, 4), np.float32),
        "ilo",
        1.0,
        _ilo_diagnostics(None),
        maps="espirit",
    )
    attrs = recon.attributes()
    assert attrs["maps"] == "espirit" and attrs["rounds"] == 2 and attrs["normalize"] is True
    assert attrs["steps_run"] == "[5, 2]" and attrs["radii"] == "null"
    assert json.loads(attrs["last_round_losses"]) == [[0.3, 0.25], [0.8, 0.75]]
    assert recon.record()["steps_run"] == [5, 2]


def test_l1_wavelet_reports_relative_and_absolute_lambda_per_slice():
    torch.manual_seed(0)
    mask = torch.from_numpy(column_mask("random", 32, 0.16, 4, seed=0).astype(np.float32))
    op = SingleCoilMRI(mask, shape=(32, 32))
    x = torch.randn(2, 32, 32, dtype=torch.complex64)
    x[1] *= 3.0
    y = op.A(x)
    lam = torch.tensor([0.002, 0.004], dtype=torch.float64)
    d = l1_wavelet(y, op, lam=lam, iterations=2).diagnostics
    assert isinstance(d, ClassicalDiagnostics)
    assert d.lambda_rel == pytest.approx([0.002, 0.004])
    s = data_scale(y, op).double().tolist()
    assert d.lambda_abs == pytest.approx([0.002 * s[0], 0.004 * s[1]], rel=1e-6)
    assert d.iterations == 2 and d.shifts is True


def test_reconstruct_file_records_the_diagnostics_per_study(tmp_path):
    torch.manual_seed(1)
    mask = column_mask("random", 24, 0.25, 2, seed=0)
    kspace = np.fft.fft2(np.random.default_rng(0).normal(size=(2, 20, 24))).astype(np.complex64)
    source = write_kspace(tmp_path / "in.h5", kspace * mask, mask=mask)
    result = reconstruct_file(source, tmp_path / "out", "cg-sense")
    (record,) = result.diagnostics  # one study
    assert set(record) == {"iterations", "damping", "maps"}
    assert record["damping"] == 0.0 and record["maps"] == "none" and record["iterations"] >= 1
    with h5py.File(tmp_path / "out" / "in.h5") as f:
        assert f.attrs["iterations"] == result.diagnostics[0]["iterations"]
        assert f.attrs["maps"] == "none" and f.attrs["method"] == "cg-sense"


def test_description_shows_a_uniform_per_slice_value_once():
    from types import SimpleNamespace

    from sgilo.pipeline.export import description

    study = SimpleNamespace(acceleration=4.0, num_low_frequencies=8)
    classical = ClassicalDiagnostics(
        lambda_rel=[0.003, 0.003], iterations=100, shifts=True, lambda_abs=[0.0029, 0.0031]
    )
    recon = StudyReconstruction("s", np.zeros((2, 4, 4), np.float32), "l1-wavelet", 1.0, classical)
    assert description(study, recon) == (
        "sgilo l1-wavelet R=4 ACS=8 lambda_rel=0.003 iterations=100 shifts=True "
        "lambda_abs=[0.0029, 0.0031] maps=none"
    )
    # auto: a slice with blended classical candidates counts as "blend" in the headline (the
    # first 64 characters, a DICOM SeriesDescription), named in full in the rest
    from sgilo.pipeline.export import headline
    from sgilo.pipeline.method_choice import AutoConfig, AutoDiagnostics

    weights = [None, {"l1-wavelet": 0.6, "tv": 0.4}, {"tv": 0.7, "l1-wavelet": 0.3}, {"tv": 1.0}]
    auto = AutoDiagnostics(
        config=AutoConfig(),
        auto_choice=["sgilo", "l1-wavelet+tv", "tv+l1-wavelet", "tv"],
        prior_fit=None,
        auto_weights=weights,
    )
    mixed = StudyReconstruction("s", np.zeros((4, 4, 4), np.float32), "auto", 1.0, auto)
    assert headline(study, mixed) == "sgilo auto(sgilo 1,blend 2,tv 1) R=4 ACS=8"
    text = description(study, mixed)
    assert '"l1-wavelet+tv", "tv+l1-wavelet"' in text and '{"l1-wavelet": 0.6, "tv": 0.4}' in text
    ilo = StudyReconstruction("s", recon.magnitude, "ilo", 1.0, _ilo_diagnostics(None))
    text = description(study, ilo)
    assert " steps=[5, 3] " in text and " radii=null " in text and " rounds=2 " in text
