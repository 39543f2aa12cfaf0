"""The new-subject images and measurement (pipeline/research/unseen_subjects.py)."""

import numpy as np
import pytest

from sgilo.pipeline.data import mni
from sgilo.pipeline.research.unseen_subjects import measure, subject_images


def test_subject_images_are_seeded_new_brains_with_or_without_a_head():
    images = subject_images(4, 64)
    assert images.shape == (4, 64, 64) and images.min() >= 0 and images.max() <= 1
    assert np.array_equal(images, subject_images(4, 64))
    assert np.linalg.matrix_rank(images.reshape(4, -1)) == 4
    validation = mni.mni_slices("validation", 64).reshape(-1, 64 * 64)
    flat = images.reshape(4, -1)
    corr = np.corrcoef(np.concatenate([flat, validation]))[:4, 4:]
    assert corr.max() < 0.99  # deformed: none is a template slice
    head = subject_images(4, 64, head=True)
    assert ((head > 0.05).mean(axis=(1, 2)) > (images > 0.05).mean(axis=(1, 2))).all()


def test_measure_scores_every_method_per_slice():
    rows = measure(["unused"], ["zero-filled", "tv", "cg-sense"], ["single-coil 8x"], slices=2)
    assert [r["method"] for r in rows] == ["zero-filled", "tv"]  # no cg-sense for one coil
    assert all(len(r["psnr"]) == 2 and r["model"] is None for r in rows)
    zero_filled, tv = (np.mean(r["psnr"]) for r in rows)
    assert 8 < zero_filled < tv < 40
    with pytest.raises(ValueError, match="unknown"):
        measure(["unused"], ["tv"], ["single-coil 3x"], slices=1)


def test_main_writes_the_rows_as_json(tmp_path):
    import json

    from sgilo.pipeline.research.unseen_subjects import main

    out = tmp_path / "rows.json"
    args = ["--methods", "zero-filled", "--settings", "8-coil 8x", "--slices", "1", "--head"]
    assert main([*args, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["command"]["head"] is True and record["seed"] == 21
    assert [(r["setting"], r["method"], len(r["psnr"])) for r in record["rows"]] == [
        ("8-coil 8x", "zero-filled", 1)
    ]


def test_auto_summary_compares_auto_with_each_slices_best_methods():
    from sgilo.pipeline.research.unseen_subjects import auto_summary, print_auto_summary

    def row(method, psnr, model=None, **extra):
        return {"setting": "8-coil 8x", "method": method, "model": model, "psnr": psnr, **extra}

    rows = [
        row("l1-wavelet", [20.0, 18.0]),
        row("tv", [19.0, 18.5]),
        row("sgilo", [22.0, 17.0], "p"),
        row("sgilo", [30.0, 30.0], "other prior"),  # another prior's rows do not count
        row("auto", [22.0, 17.8], "p", choice=["sgilo", "l1-wavelet"]),
        {**row("tv", [9.0, 9.0]), "setting": "single-coil 8x"},  # another setting
    ]
    (summary,) = auto_summary(rows)
    assert summary["model"] == "p" and summary["picks"] == {"sgilo": 1, "l1-wavelet": 1}
    # best single per slice: 22.0 (sgilo), 18.5 (tv); best classical: 20.0, 18.5
    assert np.isclose(summary["to_best_mean"], (0.0 - 0.7) / 2)
    assert np.isclose(summary["to_best_worst"], -0.7)
    assert np.isclose(summary["to_classical_mean"], (2.0 - 0.7) / 2)
    assert np.isclose(summary["to_classical_worst"], -0.7)
    assert summary["below_classical_by_0.5"] == 1
    lines = []
    print_auto_summary([summary], log=lines.append)
    assert len(lines) == 3 and "| 8-coil 8x | p | -0.35 / -0.70 | +0.65 / -0.70 | 1 |" in lines[2]
    assert auto_summary([r for r in rows if r["method"] != "auto"]) == []


@pytest.mark.slow
def test_measure_runs_auto_with_the_prior_and_records_its_choice(tmp_path):
    import torch

    from sgilo.models.stylegan2.checkpoint import fit_latent_stats, save_generator
    from sgilo.models.stylegan2.generator import Generator, GeneratorConfig

    torch.manual_seed(0)
    channels = {r: 8 for r in (4, 8, 16, 32, 64, 128)}
    config = GeneratorConfig(
        resolution=128, style_dim=16, n_mlp=2, image_channels=1, channels=channels
    )
    g = Generator(config).eval()
    stats = fit_latent_stats(g, n=500, generator_rng=torch.Generator().manual_seed(1))
    model = str(save_generator(tmp_path / "g.pt", g, latent_stats=stats))
    tv, auto = measure([model], ["tv", "auto"], ["single-coil 8x"], slices=1, log=lambda *a: 0)
    assert tv["model"] is None and auto["model"] == model  # auto ran with the prior
    # SGILO, or the classical candidates blended (named by those with a weight)
    assert auto["choice"][0] == "sgilo" or set(auto["choice"][0].split("+")) <= {"l1-wavelet", "tv"}
    assert auto["ratio"][0] > 0 and auto["unexplained"][0] is not None
    if auto["choice"][0] == "tv":  # a classical pick is that method's image
        assert auto["psnr"] == tv["psnr"]
