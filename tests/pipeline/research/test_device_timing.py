"""`sgilo.pipeline.research.device_timing` times the methods through `solve` on single- and
multi-coil acquisitions of several grids; its command refuses bad images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgilo.models.stylegan2.checkpoint import save_generator
from sgilo.pipeline.research.device_timing import acquisition, coil_maps, main, run, slices


def test_timing_record_has_a_row_per_batch_and_method(tmp_path, gen_stats):
    g, stats = gen_stats
    model = save_generator(tmp_path / "g.pt", g, latent_stats=stats)
    u = np.linspace(-1, 1, 16)
    images = np.stack([np.exp(-(u[:, None] ** 2 + u[None] ** 2) * (1 + k)) for k in range(5)])
    images = images.astype(np.float32)
    short = {"csgm": {"steps": 5, "restarts": 1}, "ilo": {"steps": (3, 3), "init": "random"}}
    record = run(
        images,
        model=str(model),
        methods=("csgm", "ilo"),
        batches=(1, 3),
        device="cpu",
        solver_options=short,
    )
    assert record["device"] == "cpu" and record["model"] == str(model)
    rows = record["rows"]
    want = [("csgm", 1), ("ilo", 1), ("csgm", 3), ("ilo", 3)]
    assert [(r["method"], r["batch"]) for r in rows] == want
    for r in rows:
        assert r["seconds"] > 0
        assert abs(r["seconds_per_slice"] - r["seconds"] / r["batch"]) < 2e-3


def test_main_refuses_images_that_are_not_a_stack(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((16, 16), np.float32))
    argv = ["--images", str(tmp_path / "x.npy"), "--out", str(tmp_path / "t.json")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "want (N, R, R)" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_acquisition_is_an_8x_single_coil_sampling_of_distinct_slices():
    images = np.random.default_rng(0).random((10, 32, 32)).astype(np.float32)
    y, op = acquisition(images, 4, "cpu")
    assert y.shape == (4, 32, 32) and y.is_complex()
    sampled = (y.abs().sum(dim=(0, 1)) > 0).float().mean().item()
    assert 1 / 8 - 0.05 < sampled < 1 / 8 + 0.05  # fraction of columns kept
    assert not torch.allclose(y[0], y[1])  # evenly spaced, different slices


def test_coil_maps_are_normalised_and_distinct():
    maps = coil_maps(8, 32)
    assert maps.shape == (8, 32, 32) and maps.dtype == torch.complex64
    assert torch.allclose(maps.abs().pow(2).sum(dim=0), torch.ones(32, 32), atol=1e-5)
    assert not torch.allclose(maps[0].abs(), maps[4].abs(), atol=0.1)


def test_multi_coil_acquisition_on_a_larger_grid():
    images = np.random.default_rng(0).random((10, 16, 16)).astype(np.float32)
    y, op = acquisition(images, 3, "cpu", size=32, coils=8)
    assert y.shape == (3, 8, 32, 32) and op.ishape == (32, 32)
    x = slices(images, 3, 32)
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.allclose(y, op.A(x.to(torch.complex64)))
