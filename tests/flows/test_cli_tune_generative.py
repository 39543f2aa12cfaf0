"""`sgilo tune-generative` sweeps one solver field on training slices and reports a table."""

from __future__ import annotations

import pytest
import torch

from flows.cli import main
from models.stylegan2.checkpoint import fit_latent_stats, save_generator
from models.stylegan2.generator import Generator, GeneratorConfig
from pipeline.tuning_generative import parse_value


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
