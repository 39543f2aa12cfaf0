"""`sgilo tune-generative` sweeps one solver field on training slices and reports a table."""

from __future__ import annotations

import pytest
import torch

from sgilo.flows.cli import main
from sgilo.models.stylegan2.checkpoint import fit_latent_stats, save_generator
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.pipeline.research.tuning_generative import parse_value


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    config = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=1, channels={4: 8, 8: 8, 16: 8}
    )
    g = Generator(config).eval()
    stats = fit_latent_stats(g, n=500, generator_rng=torch.Generator().manual_seed(1))
    return save_generator(tmp_path_factory.mktemp("m") / "g.pt", g, latent_stats=stats)


def test_sweep_table(model, tmp_path, capsys):
    out = tmp_path / "table.md"
    argv = ["tune-generative", "--model", str(model), "--method", "csgm", "--param", "steps"]
    argv += ["--values", "2,6", "--slices", "2", "--option", "restarts=1", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    table = out.read_text()
    for row in ("| zero-filled |", "| tv |", "| csgm 2 |", "| csgm 6 |"):
        assert row in table
    assert "best steps (mean PSNR over the settings):" in printed


def test_bad_field_is_one_line(model, capsys):
    argv = ["tune-generative", "--model", str(model), "--method", "ilo", "--param", "nonsense"]
    assert main(argv + ["--values", "1", "--slices", "1"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "nonsense" in err[0]


def test_parse_value():
    assert parse_value("300-200-100") == [300, 200, 100]
    assert parse_value("0.3") == 0.3 and parse_value("true") is True
    assert parse_value("from-calibration") == "from-calibration"


def test_final_step_sweep_matches_full_runs(model):
    """A dc_wavelet sweep fits once per setting; its PSNRs are those of full runs per value."""
    import numpy as np

    from sgilo.pipeline.data.mni import mni_slices
    from sgilo.pipeline.experiment import Setting, espirit_operator
    from sgilo.pipeline.methods import load_prior, solve
    from sgilo.pipeline.metrics import psnr
    from sgilo.pipeline.research.tuning_generative import sweep_generative
    from sgilo.pipeline.simulate import simulate_acquisition

    prior = load_prior(model)
    slices = mni_slices("train", size=16)[[20, 60]]
    setting = Setting(4, 4, 0.25)  # enough calibration columns for ESPIRiT on a 16² grid
    values, base = [0, 0.003], {"restarts": 1, "steps": 5}
    rows = sweep_generative(
        prior, slices, [setting], "csgm", "dc_wavelet", values, base_options=base, log=print
    )
    swept = [r.psnr for r in rows if r.param]
    acq = simulate_acquisition(
        slices,
        acceleration=setting.acceleration,
        center_fraction=setting.center_fraction,
        num_coils=setting.coils,
        seed=1,
    )
    y, op = espirit_operator(acq)
    full = [
        psnr(
            acq.target,
            solve(
                y, op, "csgm", prior=prior, seed=1, solver_options={**base, "dc_wavelet": v}
            ).magnitude,
        )
        for v in values
    ]
    np.testing.assert_allclose(swept, full, rtol=0, atol=1e-4)
    assert abs(swept[0] - swept[1]) > 1e-3  # the two steps differ
