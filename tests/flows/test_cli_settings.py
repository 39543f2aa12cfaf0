"""``--set FIELD=VALUE`` and ``--config FILE.json`` of ``sgilo reconstruct`` and ``sgilo batch``:
a setting changes the result and is recorded in run.json; a wrong one is one line and exit 2
before any input is read; ``sgilo batch`` redoes an input whose settings changed.

Test object: fastMRI-format files of 4 slices 32x32 (:func:`write_studies`): single-coil for TV,
4 coils for CG-SENSE (on single-coil Cartesian data CG converges in one step, so its iterations
would not show), fast classical solvers whose settings show in a few iterations.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from sgilo.flows.cli import main
from sgilo.pipeline.method_settings import (
    SettingError,
    check_settings,
    parse_assignment,
    settable_fields,
)


def _recon(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["reconstruction"][()]


@pytest.fixture(scope="module")
def study(tmp_path_factory, studies) -> Path:
    (path,) = studies(tmp_path_factory.mktemp("settings"), ["s.h5"], coils=1)
    return path


@pytest.fixture(scope="module")
def multicoil(tmp_path_factory, studies) -> Path:
    (path,) = studies(tmp_path_factory.mktemp("settings-multi"), ["m.h5"], coils=4)
    return path


def _reconstruct(study: Path, out: Path, *extra: str) -> int:
    return main(["reconstruct", str(study), "--method", "tv", "--out", str(out), *extra])


# ----------------------------------------------------------------------------- parsing, checks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lam=3e-3", ("lam", 3e-3)),
        ("steps=[100,100]", ("steps", [100, 100])),
        ("early_stop=true", ("early_stop", True)),
        ("radius_fraction=null", ("radius_fraction", None)),
        ("init=csgm", ("init", "csgm")),  # not JSON: the text itself
        (" iterations = 5", ("iterations", 5)),
    ],
)
def test_parse_assignment(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["lam", "=3"])
def test_parse_assignment_needs_a_field(text):
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_assignment(text)


def test_classical_fields_come_from_the_solver_signatures():
    # plain keyword arguments only: no rng/callback/dtype, no tensor arguments (dcf, center)
    assert settable_fields("zero-filled") == []
    assert settable_fields("cg-sense") == ["iterations", "damping", "tolerance"]
    assert settable_fields("l1-wavelet") == ["lam", "iterations", "shifts"]
    assert settable_fields("tv") == ["lam", "iterations"]
    # the generative ones: their config's fields, less what --samples sets
    assert "steps" in settable_fields("ilo") and "lam" in settable_fields("sgilo")
    assert "chains" not in settable_fields("sgilo")


def test_check_settings_validates_types_and_returns_json():
    assert check_settings("tv", {"lam": 0.01, "iterations": 3}) == {"lam": 0.01, "iterations": 3}
    assert check_settings("ilo", {"steps": [10, 10]}) == {"steps": [10, 10]}
    with pytest.raises(SettingError) as info:
        check_settings("cg-sense", {"iterations": "many"})
    assert info.value.field == "iterations"
    with pytest.raises(SettingError, match="set by --samples"):
        check_settings("sgilo", {"chains": 2})


# ----------------------------------------------------------------------------- reconstruct


def test_a_setting_changes_the_result_and_is_recorded(study, tmp_path, capsys):
    assert _reconstruct(study, tmp_path / "default") == 0
    assert _reconstruct(study, tmp_path / "set", "--set", "lam=0.5", "--set", "iterations=20") == 0
    config = tmp_path / "tv.json"
    config.write_text(json.dumps({"lam": 0.5, "iterations": 7}))
    # --set overrides the file's iterations: the same settings as the run above
    code = _reconstruct(study, tmp_path / "file", "--config", str(config), "--set", "iterations=20")
    assert code == 0
    capsys.readouterr()
    default = _recon(tmp_path / "default" / study.name)
    changed = _recon(tmp_path / "set" / study.name)
    assert np.abs(default - changed).max() > 1e-3 * default.max()
    np.testing.assert_array_equal(_recon(tmp_path / "file" / study.name), changed)
    for name in ("set", "file"):
        record = json.loads((tmp_path / name / "run.json").read_text())
        assert record["config"]["options"]["solver_options"] == {"lam": 0.5, "iterations": 20}
    record = json.loads((tmp_path / "default" / "run.json").read_text())
    assert record["config"]["options"]["solver_options"] == {}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--set", "lamda=3e-3"],
            "sgilo reconstruct: --set lamda=3e-3: tv has no field 'lamda' (fields: lam, "
            "iterations)",
        ),
        (
            ["--set", "iterations=abc"],
            "sgilo reconstruct: --set iterations=abc: tv field 'iterations': Input should be a "
            "valid integer",
        ),
        (["--set", "lam"], "sgilo reconstruct: --set lam: expected FIELD=VALUE"),
        (["--config", "missing.json"], "sgilo reconstruct: --config missing.json: cannot read"),
    ],
)
def test_a_wrong_setting_is_one_line_and_exit_2_before_any_input(
    extra, expected, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    missing_input = tmp_path / "never-read.h5"
    code = _reconstruct(missing_input, tmp_path / "out", *extra)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(expected), err
    assert not (tmp_path / "out").exists()  # refused before --out was even prepared


def test_a_config_file_must_be_an_object_of_known_fields(tmp_path, capsys):
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"lam": 0.1, "sigma": 2}')
    for path, expected in (
        (listing, "expected a JSON object of tv's fields"),
        (unknown, "tv has no field 'sigma'"),
    ):
        code = _reconstruct(tmp_path / "x.h5", tmp_path / "out", "--config", str(path))
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1
        assert f"--config {path}: " in err and expected in err


# ----------------------------------------------------------------------------- batch


def test_batch_redoes_an_input_whose_settings_changed(multicoil, prefect_api, tmp_path, capsys):
    out = tmp_path / "out"

    def batch(*extra: str) -> str:
        code = main(["batch", str(multicoil), "--method", "cg-sense", "--out", str(out), *extra])
        assert code == 0
        return capsys.readouterr().out.strip().splitlines()[-1]

    assert "1 reconstructed, 0 skipped" in batch("--set", "iterations=1")
    first = _recon(out / multicoil.name)
    assert "0 reconstructed, 1 skipped" in batch("--set", "iterations=1")
    assert "1 reconstructed, 0 skipped" in batch("--set", "iterations=2")
    second = _recon(out / multicoil.name)
    assert not np.array_equal(first, second)
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["options"]["recon"]["solver_options"] == {"iterations": 2}


def test_batch_refuses_a_wrong_setting_before_any_input(tmp_path, capsys):
    code = main(
        ["batch", str(tmp_path / "in"), "--method", "cg-sense", "--out", str(tmp_path / "o")]
        + ["--set", "damp=1"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        "sgilo batch: --set damp=1: cg-sense has no field 'damp' (fields: iterations, damping, "
        "tolerance)"
    ]
