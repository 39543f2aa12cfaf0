"""The prepared GPU probe runs end to end on the CPU with a tiny model: agreement entries for
every generative method (CPU against CPU: no difference), a timing row per case, JSON in OUT."""

from __future__ import annotations

import json

import numpy as np

from sgilo.models.stylegan2.checkpoint import save_generator
from sgilo.pipeline.research.gpu_recon_probe import main

SHORT = {
    "csgm": {"steps": 4, "restarts": 1},
    "ilo": {"steps": (3, 3), "init_steps": 3, "init_restarts": 1},
    "sgilo": {"steps": (3, 3), "init_steps": 3, "init_restarts": 1},
    "auto": {"generative": "csgm", "generative_settings": {"steps": 3, "restarts": 1}},
}


def test_probe_writes_agreement_and_timing(tmp_path, gen_stats):
    g, stats = gen_stats
    model = save_generator(tmp_path / "g.pt", g, latent_stats=stats)
    u = np.linspace(-1, 1, 16)
    images = np.stack([np.exp(-(u[:, None] ** 2 + u[None] ** 2) * (1 + k)) for k in range(6)])
    np.save(tmp_path / "x.npy", images.astype(np.float32))
    out = tmp_path / "out"
    argv = ["--images", str(tmp_path / "x.npy"), "--out", str(out), "--model", str(model)]
    argv += ["--device", "cpu", "--cases", "32x2,16x1", "--batches", "1,2"]
    argv += ["--options", json.dumps(SHORT)]
    assert main(argv) == 0
    record = json.loads((out / "gpu_recon_probe.json").read_text())
    assert [a["method"] for a in record["agreement"]] == ["csgm", "ilo", "sgilo"]
    for entry in record["agreement"]:
        assert entry["psnr_diff_same_rng"] == 0.0 and entry["max_pixel_diff_same_rng"] == 0.0
        assert [r["rng"] for r in entry["runs"]] == ["cpu", "cpu", "device"]
    syncs = [(r["method"], r["host_sync_every"]) for r in record["host_sync"]]
    assert syncs == [("ilo", 1), ("ilo", "auto"), ("sgilo", 1), ("sgilo", "auto")]
    timing = record["timing"]
    assert timing["device"] == "cpu" and timing["revision"] and timing["date"]
    cases = [(r["size"], r["coils"], r["batch"], r["method"]) for r in timing["rows"]]
    want = [
        (s, c, b, m)
        for s, c in ((32, 2), (16, 1))  # in the order given
        for b in (1, 2)
        for m in ("csgm", "ilo", "sgilo", "auto")
    ]
    assert cases == want
    assert all(r["seconds"] > 0 and np.isfinite(r["psnr"]) for r in timing["rows"])
    assert all("error" not in r for r in timing["rows"])


def test_budget_skips_the_rows_it_cannot_start(tmp_path, gen_stats):
    g, stats = gen_stats
    model = save_generator(tmp_path / "g.pt", g, latent_stats=stats)
    images = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    argv = ["--images", str(tmp_path / "x.npy"), "--out", str(tmp_path), "--model", str(model)]
    argv += ["--device", "cpu", "--cases", "16x1", "--batches", "1"]
    argv += ["--methods", "csgm", "--budget-s", "0", "--options", json.dumps(SHORT)]
    argv += ["--compile", "aot_eager"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "gpu_recon_probe.json").read_text())
    assert len(record["agreement"]) == 1
    compiled = [(r["compile"], r["run"], "error" in r) for r in record["compile"]]
    assert compiled == [("aot_eager", "first", False), ("aot_eager", "second", False)]
    assert record["timing"]["rows"] == [
        {"size": 16, "coils": 1, "method": "csgm", "batch": 1, "skipped": "budget"}
    ]
