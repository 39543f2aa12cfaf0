"""`sgilo reconstruct --method csgm|ilo --model PATH` on a tiny generator and a 16×16 file whose
image is a sample of that generator: outputs written, and the bad cases refused in one line."""

import h5py
import numpy as np
import pytest
import torch

from sgilo.flows.cli import main
from sgilo.models.stylegan2.checkpoint import fit_latent_stats, save_generator
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.operators.fft import fft2c
from sgilo.operators.masks import random_column_mask
from sgilo.pipeline.io.fastmri import write_kspace


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    config = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=1, channels={4: 16, 8: 16, 16: 16}
    )
    g = Generator(config).eval()
    stats = fit_latent_stats(g, n=2000, generator_rng=torch.Generator().manual_seed(1))
    model = save_generator(root / "g.pt", g, latent_stats=stats)
    with torch.no_grad():
        image = ((g(torch.randn(2, 16)) + 1) / 2)[:, 0].clamp(0, 1).to(torch.complex64)
    mask = random_column_mask(16, 0.25, 2, seed=0)
    kspace = (fft2c(image) * torch.from_numpy(mask)).numpy()
    small = write_kspace(root / "small.h5", kspace, mask=mask)
    big = write_kspace(root / "big.h5", np.ones((1, 24, 40), np.complex64))
    return model, small, big


@pytest.mark.parametrize("method", ["csgm", "ilo"])
def test_generative_methods_from_the_command_line(files, tmp_path, method, capsys):
    model, small, _ = files
    out = tmp_path / "out"
    code = main(
        ["reconstruct", str(small), "--method", method, "--model", str(model), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "steps run [" in err  # the summary line says what the fit ran
    with h5py.File(out / small.name) as f:
        rec = f["reconstruction"][()]
        assert f.attrs["method"] == method and f.attrs["model"] == str(model)
    assert rec.shape == (2, 16, 16) and rec.dtype == np.float32 and np.isfinite(rec).all()


def test_sgilo_with_a_score_model_writes_the_std_map(files, tmp_path, capsys):
    model, small, _ = files
    score = tmp_path / "score"
    assert (
        main(
            [
                "train-score",
                "--generator",
                str(model),
                "--space",
                "0",
                "--out",
                str(score),
                "--steps",
                "2",
                "--batch",
                "8",
            ]
        )
        == 0
    )
    out = tmp_path / "out"
    code = main(
        [
            "reconstruct",
            str(small),
            "--method",
            "sgilo",
            "--model",
            str(model),
            "--score",
            str(score / "score_model.pt"),
            "--samples",
            "2",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "score-model prior steps in space(s) [0]" in err  # the model was reached
    with h5py.File(out / small.name) as f:
        rec, std = f["reconstruction"][()], f["reconstruction_std"][()]
        assert f.attrs["prior_spaces_used"] == "[0]"
    assert rec.shape == std.shape == (2, 16, 16)
    assert np.isfinite(std).all() and (std >= 0).all() and std.max() > 0
    # K > 1 is an sgilo option only
    assert (
        main(
            [
                "reconstruct",
                str(small),
                "--method",
                "ilo",
                "--model",
                str(model),
                "--samples",
                "2",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_generative_bad_cases(files, tmp_path, capsys, monkeypatch):
    from sgilo.models import registry

    model, small, big = files
    out = tmp_path / "out"
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")
    assert main(["reconstruct", str(small), "--method", "csgm", "--out", str(out)]) == 2
    assert "default prior 'brain-t1-128' is not installed" in capsys.readouterr().err
    assert (
        main(
            [
                "reconstruct",
                str(small),
                "--method",
                "csgm",
                "--model",
                str(tmp_path / "none.pt"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "none.pt" in err and len([ln for ln in err.splitlines() if "error" in ln]) == 1
    # a grid that differs from the generator's resolution: placed on it (GridPlacement)
    code = main(
        [
            "reconstruct",
            str(big),
            str(small),
            "--method",
            "csgm",
            "--model",
            str(model),
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    with h5py.File(out / big.name) as f:
        assert f["reconstruction"].shape == (1, 24, 40)
    assert (out / small.name).exists()


def test_solver_note_says_what_the_fit_ran():
    from sgilo.pipeline.reconstruct import solver_note
    from sgilo.pipeline.solvers.diagnostics import ClassicalDiagnostics, SGILODiagnostics
    from sgilo.pipeline.solvers.sgilo import SGILOConfig

    def sgilo_run(given: list, used: list, **config) -> SGILODiagnostics:
        return SGILODiagnostics(
            config=SGILOConfig(steps=(5, 5), **config),
            phase="none",
            rounds=2,
            prior_spaces=given,
            prior_spaces_used=used,
            measurement_loss=0.1,
            measurement_losses=[[0.1]],
            round_losses=[[0.2, 0.1]],
            round_start_losses=[[0.3, 0.2]],
            steps_run=[5, 5],
            data_scale=[1.0],
            radius_fractions=[],
        )

    assert solver_note(None) == "" and solver_note(ClassicalDiagnostics(iterations=3)) == ""
    assert solver_note(sgilo_run([0], [0])) == (
        "steps run [5, 5]; score-model prior steps in space(s) [0]"
    )
    assert "no round reached the score model(s) of [1]" in solver_note(sgilo_run([1], []))
    assert "no score model" in solver_note(sgilo_run([], []))
    assert "no prior step" in solver_note(sgilo_run([0], [0], lam=0.0, tau=0.0))
    # auto: which tests chose (the unexplained fraction only where a limit applied)
    from dataclasses import replace

    from sgilo.pipeline.method_choice import AutoConfig, AutoDiagnostics

    def auto_run(limits: list) -> AutoDiagnostics:
        choice = ["sgilo", "tv"]
        return AutoDiagnostics(
            config=AutoConfig(), auto_choice=choice, prior_fit=None, auto_unexplained_limit=limits
        )

    below_3x = solver_note(auto_run([None, None]))  # no limit on u below 3x
    assert below_3x == "auto kept sgilo on 1 slice, tv on 1 slice (held-out k-space error)"
    judged = solver_note(auto_run([0.09, 0.09]))  # 4x and 8x data
    assert "(held-out k-space error and unexplained fraction)" in judged
    # nothing held out: no test chose; the note says why
    none = replace(auto_run([None, None]), auto_note="nothing held out: sgilo on every slice")
    assert solver_note(none) == (
        "auto kept sgilo on 1 slice, tv on 1 slice; nothing held out: sgilo on every slice"
    )


def test_auto_says_what_it_kept_and_records_every_error(files, tmp_path, capsys):
    import json

    model, small, _ = files
    out = tmp_path / "out"
    settings = '{"generative": "csgm", "generative_settings": {"steps": 5, "restarts": 1}}'
    argv = ["reconstruct", str(small), "--method", "auto", "--model", str(model)]
    code = main([*argv, "--config", _write(tmp_path / "auto.json", settings), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    # small.h5 is 2x data (realised under 3x): u is reported, not judged
    assert "auto kept " in err and "(held-out k-space error)" in err
    record = json.loads((out / "run.json").read_text())
    ((_, timing),) = record["timings"].items()
    (diagnostics,) = timing["diagnostics"]
    assert len(diagnostics["auto_choice"]) == 2
    assert {"csgm", "l1-wavelet", "tv"} <= set(diagnostics["prior_fit_heldout_errors"])
    with h5py.File(out / small.name) as f:
        assert f.attrs["method"] == "auto" and f["reconstruction"].shape == (2, 16, 16)


def _write(path, text):
    path.write_text(text)
    return str(path)
