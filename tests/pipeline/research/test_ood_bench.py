"""`sgilo bench --suite ood --smoke`: every method and the oracle rows in the report, cached cells
reused; the summaries compute what they say from the cells and leave out what was not measured."""

from __future__ import annotations

import json

import pytest
import torch

from sgilo.flows.cli import main
from sgilo.models.stylegan2.checkpoint import fit_latent_stats, save_generator
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.pipeline.methods import METHODS
from sgilo.pipeline.research import ood_bench
from sgilo.pipeline.research.ood_bench import ORACLE_SUFFIX, OODBenchConfig, OODRow, plan
from sgilo.pipeline.research.ood_report import auto_summary, lambda_summary, time_summary


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    config = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=1, channels={4: 8, 8: 8, 16: 8}
    )
    g = Generator(config).eval()
    stats = fit_latent_stats(g, n=500, generator_rng=torch.Generator().manual_seed(1))
    return save_generator(tmp_path / "g.pt", g, latent_stats=stats)


@pytest.mark.slow
def test_ood_smoke_reports_every_method_and_reuses_cells(tmp_path, capsys, monkeypatch, tiny_model):
    monkeypatch.setenv("SGILO_CACHE_DIR", str(tmp_path / "cache"))
    # the cache key hashes the code of CELL_CODE; here only this suite's own module, so that
    # edits elsewhere in the tree during the test cannot start a new run between the two calls
    monkeypatch.setattr(ood_bench, "CELL_CODE", ("pipeline/research/ood_bench.py",))
    out = tmp_path / "bench"
    argv = ["bench", "--suite", "ood", "--smoke", "--out", str(out), "--model", str(tiny_model)]
    argv += ["--threads", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    text = (out / "BENCHMARKS_OOD.md").read_text()
    report = json.loads((out / "benchmarks_ood.json").read_text())
    assert report["command"] == "sgilo " + " ".join(argv) and report["complete"]
    for method in METHODS:  # read at run time: `auto` is a row as soon as it is a method
        assert f"| {method} |" in text, method
    for method in ("l1-wavelet", "tv"):
        assert f"| {method}{ORACLE_SUFFIX} |" in text
        assert f"| {method} (auto λ) |" in text
    assert "upper bound, not a method" in text and "Partial" not in text
    assert "### single-coil 4x: PSNR (dB)" in text and "### 8-coil 8x: SSIM" in text
    cells = {(r["setting"], r["variant"]) for r in report["rows"]}
    # every row at both settings, CG-SENSE at 8-coil only
    assert len(cells) == len(report["rows"]) == 2 * (len(METHODS) + 4) - 1
    for r in report["rows"]:
        assert r["groups"] == ["mni-axial-validation", "nibabel-mr"]
        assert len(r["psnr"]) == len(r["ssim"]) == 2 and all(0 < s <= 1 for s in r["ssim"])
        if r["kind"] == "oracle-lambda":
            assert len(r["extra"]["oracle_factor"]) == 2
    by = {(r["setting"], r["variant"]): r["psnr"] for r in report["rows"]}
    for st in ("single-coil 4x", "8-coil 8x"):  # the oracle is the best of a grid with 1×
        for b in range(2):
            assert by[(st, "l1-wavelet" + ORACLE_SUFFIX)][b] >= by[(st, "l1-wavelet")][b] - 1e-9

    # the same command again reuses every cell and reports the same rows
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().err.count("(reused)") == len(cells)
    assert json.loads((out / "benchmarks_ood.json").read_text())["rows"] == report["rows"]


def test_the_cache_key_follows_conditions_and_code(tmp_path, monkeypatch):
    config = OODBenchConfig(methods=["zero-filled"])
    key = ood_bench.run_key(config)
    assert ood_bench.run_key(config.model_copy(update={"seed": 1})) != key
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "x.py").write_text("a = 1\n")
    before = ood_bench._code_hash(tmp_path)
    monkeypatch.setattr(ood_bench, "CELL_CODE", ("pipeline",))
    first = ood_bench._code_hash(tmp_path)
    (tmp_path / "pipeline" / "x.py").write_text("a = 2\n")
    assert ood_bench._code_hash(tmp_path) != first != before


def test_design_covers_every_group_setting_and_snr():
    config = OODBenchConfig(groups=["mni-coronal", "non-brain", "pydicom-mr"])
    design = plan(config)
    pairs = {(s, g) for s, g, _, _ in design}
    assert pairs == {(s, g) for s in range(4) for g in config.groups}
    assert {snr for _, _, _, snr in design} == {20.0, 30.0, 40.0}
    for g in config.groups:  # every file meets single- and 8-coil, 4x and 8x
        assert {(s, k) for s, gg, k, _ in design if gg == g} == {(0, 0), (3, 0), (1, 1), (2, 1)}
    assert len(plan(config.model_copy(update={"cross": True}))) == 2 * len(design)


def _row(setting, variant, psnr, seconds=1.0, extra=None, kind="method"):
    return OODRow(
        setting,
        variant,
        variant.split(" ")[0],
        kind,
        ["g", "g"],
        ["a", "b"],
        [30.0, 30.0],
        psnr,
        [0.5, 0.5],
        seconds,
        extra or {},
    )


def test_summaries_from_hand_made_cells():
    rows = [
        _row("sc", "zero-filled", [20.0, 21.0]),
        _row("sc", "tv", [24.0, 22.0]),
        _row("sc", "sgilo", [26.0, 21.5], seconds=10.0),
        _row("sc", "auto", [25.5, 21.8], seconds=20.0, extra={"auto_choice": ["sgilo", "tv"]}),
        _row("sc", "tv (auto λ)", [24.1, 22.2], kind="auto-lambda"),
        _row("sc", "tv" + ORACLE_SUFFIX, [24.5, 22.3], kind="oracle-lambda"),
    ]
    text = "\n".join(auto_summary(rows, ["zero-filled", "tv", "sgilo", "auto"]))
    # auto − best single: 25.5 − 26 = −0.5 and 21.8 − 22 = −0.2, mean −0.35
    assert "mean over every case: **-0.35 dB**" in text
    # auto − best classical: +1.5 and −0.2 (worst, file b)
    assert "worst case: **-0.20 dB** (g, b, sc)" in text
    assert "- g: sgilo 1, tv 1" in text
    # with the held-out errors and unexplained fractions recorded: r and u per case
    stats = {
        "auto_choice": ["sgilo", "tv"],
        "prior_fit_heldout_errors": {"sgilo": [1.0, 3.0], "l1-wavelet": [2.0, 1.5], "tv": [4, 2]},
        "prior_fit_unexplained": [0.02, 0.31],
    }
    rows_u = [*rows[:3], _row("sc", "auto", [25.5, 21.8], seconds=20.0, extra=stats)]
    text_u = "\n".join(auto_summary(rows_u, ["zero-filled", "tv", "sgilo", "auto"]))
    assert "| sgilo (r 0.50, u 0.020) |" in text_u and "| tv (r 2.00, u 0.310) |" in text_u
    assert "prior-fit ratio `r`" in text_u and "prior-fit ratio" not in text  # only when there
    # an older record without u, and CSGM as the generative method: r alone
    older = {**stats, "prior_fit_unexplained": None}
    older["prior_fit_heldout_errors"] = {"csgm": [1.0, 3.0], "tv": [4.0, 2.0]}
    rows_r = [*rows[:3], _row("sc", "auto", [25.5, 21.8], seconds=20.0, extra=older)]
    text_r = "\n".join(auto_summary(rows_r, ["zero-filled", "tv", "sgilo", "auto"]))
    assert "| sgilo (r 0.25) |" in text_r and "| tv (r 1.50) |" in text_r
    lam = "\n".join(lambda_summary(rows))
    assert "| tv | sc | -0.40, -0.50 | -0.25 | -0.40 (g: a) |" in lam
    assert "| all | 20.00 | 10.00 | **2.00** |" in "\n".join(time_summary(rows))
    # without auto (or without SGILO) those summaries are left out, not filled in
    no_auto = [r for r in rows if r.variant != "auto"]
    assert auto_summary(no_auto, ["zero-filled", "tv", "sgilo"]) == []
    assert time_summary(no_auto) == []


def test_cells_keep_auto_choice_heldout_errors_and_unexplained_fractions():
    from sgilo.pipeline.research.ood_bench import _record

    diag = {
        "auto_choice": ["tv"],
        "prior_fit_heldout_errors": {"sgilo": [1.0]},
        "prior_fit_unexplained": [0.2],
        "lambda_rel": [0.01],
        "generative_run": {"steps": 3},
    }
    assert _record(diag) == {k: v for k, v in diag.items() if k != "generative_run"}
