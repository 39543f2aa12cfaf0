"""`sgilo bench --smoke` measures every method in its own process and writes the report."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sgilo.flows.cli import main
from sgilo.models.stylegan2.checkpoint import fit_latent_stats, save_generator
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig


@pytest.mark.slow
def test_bench_smoke_writes_tables_plots_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SGILO_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    config = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=1, channels={4: 8, 8: 8, 16: 8}
    )
    g = Generator(config).eval()
    stats = fit_latent_stats(g, n=500, generator_rng=torch.Generator().manual_seed(1))
    model = save_generator(tmp_path / "g.pt", g, latent_stats=stats)
    out = tmp_path / "bench"
    argv = ["bench", "--smoke", "--out", str(out), "--model", str(model), "--threads", "1"]
    argv += ["--methods", "zero-filled,cg-sense,csgm"]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "benchmarks.json").read_text())
    assert report["command"] == "sgilo " + " ".join(argv)
    cells = {(r["setting"], r["method"]) for r in report["rows"]}
    # cg-sense is multi-coil only: 2 methods single-coil, 3 methods 8-coil, at 4x and 8x
    assert len(cells) == 2 * 2 + 2 * 3
    for r in report["rows"]:
        assert r["slices"] == 2 and r["seconds_per_slice"] > 0 and r["peak_rss_mb"] > 50
        assert 0 < r["ssim"] <= 1 and r["nmse"] > 0
    zf = {r["setting"]: r["psnr"] for r in report["rows"] if r["method"] == "zero-filled"}
    cg = {r["setting"]: r["psnr"] for r in report["rows"] if r["method"] == "cg-sense"}
    assert cg["8-coil 4x"] > zf["8-coil 4x"]  # coil combination beats zero-filling
    text = (out / "BENCHMARKS.md").read_text()
    assert "## single-coil 8x" in text and "| csgm |" in text
    assert (out / "images" / "bench_psnr.png").stat().st_size > 1000
    assert (out / "images" / "bench_examples.png").stat().st_size > 1000
    assert report["complete"] and "Partial" not in text

    # a second run of the same command reuses every finished cell and reports the same rows
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().err.count("(finished earlier, reused)") == len(cells)
    assert json.loads((out / "benchmarks.json").read_text())["rows"] == report["rows"]
    # other conditions are a different run: nothing reused
    assert main([*argv[:-2], "--methods", "zero-filled", "--slices", "1"]) == 0
    assert "reused" not in capsys.readouterr().err


def test_bench_report_is_marked_partial_until_every_cell_is_done(tmp_path):
    from sgilo.pipeline.research.bench import BenchConfig, BenchRow
    from sgilo.pipeline.research.bench_report import markdown_tables

    config = BenchConfig(methods=["zero-filled"], num_slices=1)
    row = BenchRow("single-coil 4x", "zero-filled", 20.0, 0.5, 0.1, 0.01, 100.0, 1)
    assert "Partial: 1 of 4 cells" in markdown_tables([row], config, "sgilo bench", total=4)
    assert "Partial" not in markdown_tables([row], config, "sgilo bench", total=1)


@pytest.mark.skipif(shutil.which("bart") is None, reason="bart is not installed")
def test_bench_runs_bart_pics_as_a_reference_row(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SGILO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    argv = ["bench", "--smoke", "--out", str(out), "--threads", "1", "--slices", "1"]
    argv += ["--methods", "zero-filled,bart-pics", "--settings", "8-coil 4x"]
    assert main(argv) == 0, capsys.readouterr().err
    rows = {r["method"]: r for r in json.loads((out / "benchmarks.json").read_text())["rows"]}
    assert rows["bart-pics"]["psnr"] > rows["zero-filled"]["psnr"] + 3  # coils + ℓ1 help
    assert "BART's `pics`" in (out / "BENCHMARKS.md").read_text()


def test_summary_compares_generative_methods_with_the_best_classical_one():
    from sgilo.pipeline.research.bench import BenchRow
    from sgilo.pipeline.research.bench_report import summary_lines

    psnrs = {"zero-filled": 14.0, "tv": 15.0, "bart-pics": 16.0, "csgm": 15.5, "ilo": 14.5}
    rows = [BenchRow("single-coil 8x", m, p, 0.3, 0.1, 1.0, 1.0, 4) for m, p in psnrs.items()]
    text = "\n".join(summary_lines(rows))
    # bart-pics is a reference, not one of the project's classical methods
    assert "| single-coil 8x | tv 15.00 | +0.50 | -0.50 | — | CSGM > ILO |" in text
    assert summary_lines(rows[:2]) == []  # no generative rows: no summary


def test_bench_refuses_unknown_methods_and_settings(tmp_path, capsys):
    assert main(["bench", "--smoke", "--out", str(tmp_path), "--methods", "magic"]) == 2
    assert "unknown method(s) magic" in capsys.readouterr().err
    argv = ["bench", "--smoke", "--out", str(tmp_path), "--methods", "zero-filled"]
    assert main(argv + ["--settings", "3-coil 5x"]) == 2
    assert "--settings from single-coil 4x" in capsys.readouterr().err
