"""The scaling machinery (pipeline/research/scaling.py) on a tiny random StyleGAN-2: the table and
the plot are written, the generated section of the markdown file is replaced, not duplicated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgilo.models.stylegan2.checkpoint import fit_latent_stats
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.pipeline.methods import Prior
from sgilo.pipeline.research.scaling import (
    BEGIN,
    END,
    ilo_scaling,
    machine,
    step_overhead,
    write_scaling,
)


@pytest.fixture(scope="module")
def prior() -> Prior:
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=1, channel_base=64, channel_max=16
    )
    gen = Generator(cfg).eval()
    stats = fit_latent_stats(gen, n=200, batch=200, generator_rng=torch.Generator().manual_seed(1))
    return Prior(gen, stats, Path("tiny.pt"))


def test_scaling_table_and_plot(prior: Prior, tmp_path: Path) -> None:
    rows = ilo_scaling(
        prior, sizes=(16, 32), batches=(1, 2), steps_per_round=2, rounds=2, source="synthetic"
    )
    assert [(r.size, r.batch) for r in rows] == [(16, 1), (32, 1), (16, 2)]
    assert all(r.steps == 4 and r.wall_per_slice > 0 and r.cpu_per_slice > 0 for r in rows)
    md, png = tmp_path / "SPEED.md", tmp_path / "images" / "scaling.png"
    md.write_text("# Speed\n\nhand-written text\n", encoding="utf-8")
    section = write_scaling(rows, md, png, command="sgilo scaling --sizes 16,32")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text(encoding="utf-8")
    assert "hand-written text" in text and section in text
    assert "| 32² | 1 | 4 |" in text and "sgilo scaling --sizes 16,32" in text
    assert f"{machine()['cpu_count']} CPUs" in text and "images/scaling.png" in text
    write_scaling(rows[:1], md, png, command="again")
    text = md.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "again" in text and "| 32² |" not in text and "hand-written text" in text


def test_step_overhead_reports_every_solver(prior: Prior) -> None:
    """Every solver is timed; the thread count asked for is undone afterwards."""
    before = torch.get_num_threads()
    out = step_overhead(prior, batch=1, steps=2, repeats=1, source="synthetic", num_threads=2)
    for key in ("bare", "csgm", "ilo", "ilo_round2", "sgilo_round2", "csgm/bare", "ilo/bare"):
        assert out[key] > 0
    assert torch.get_num_threads() == before
