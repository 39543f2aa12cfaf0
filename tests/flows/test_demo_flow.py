"""The demo flow on a real (test) Prefect API, at a tiny size: every output is written and sane."""

import json

import numpy as np

from sgilo.flows.demo import demo_flow
from sgilo.pipeline.demo import DemoConfig

# prefect_api: the session's one Prefect test server (tests/flows/conftest.py)


def test_demo_flow_writes_report(prefect_api, tmp_path):
    config = DemoConfig(
        num_slices=2,
        size=64,
        settings=[(None, 4, 0.08), (4, 4, 0.08)],
        methods=["zero-filled", "cg-sense", "tv"],
        export_settings=["4-coil 4x"],
    )
    table = demo_flow(out_dir=str(tmp_path), config=config)
    # the 4-coil acquisition went through the batch flow into every export format
    exports = tmp_path / "exports"
    names = {p.name for p in exports.iterdir()}
    stem = "demo_4-coil_4x"
    assert {f"{stem}.h5", f"{stem}.nii.gz", f"{stem}_dicom", f"{stem}.png", "run.json"} <= names
    assert len(list((exports / f"{stem}_dicom").glob("*.dcm"))) == 2
    for name in ("comparison.png", "metrics.md", "metrics.json", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((tmp_path / "metrics.json").read_text())
    # CG-SENSE only on the multi-coil setting: 2 + 3 rows
    assert [(r["setting"], r["method"]) for r in rows] == [
        ("single-coil 4x", "zero-filled"),
        ("single-coil 4x", "tv"),
        ("4-coil 4x", "zero-filled"),
        ("4-coil 4x", "cg-sense"),
        ("4-coil 4x", "tv"),
    ]
    assert all(np.isfinite([r["psnr"], r["ssim"], r["nmse"]]).all() for r in rows)
    psnr = {(r["setting"], r["method"]): r["psnr"] for r in rows}
    # with 4 coils, SENSE unfolds what single-coil zero-filling cannot
    assert psnr[("4-coil 4x", "cg-sense")] > psnr[("4-coil 4x", "zero-filled")] + 3
    assert "| 4-coil 4x | cg-sense |" in table
    saved = json.loads((tmp_path / "config.json").read_text())
    assert DemoConfig(**saved) == config


def test_demo_flow_with_a_prior_adds_the_generative_rows(prefect_api, tmp_path):
    import torch

    from sgilo.models.stylegan2.checkpoint import fit_latent_stats, save_generator
    from sgilo.models.stylegan2.generator import Generator, GeneratorConfig

    torch.manual_seed(0)
    g = Generator(
        GeneratorConfig(
            resolution=16, style_dim=16, n_mlp=2, image_channels=1, channels={4: 8, 8: 8, 16: 8}
        )
    ).eval()
    stats = fit_latent_stats(g, n=500, generator_rng=torch.Generator().manual_seed(1))
    model = save_generator(tmp_path / "g.pt", g, latent_stats=stats)
    config = DemoConfig(
        num_slices=1,
        size=32,
        settings=[(None, 4, 0.08), (None, 8, 0.04)],
        methods=["zero-filled"],
        generative=["csgm", "sgilo"],
        model=str(model),
        samples=2,
        export_settings=[],
        generative_options={"csgm": {"steps": 20, "restarts": 1}, "sgilo": {"steps": (20, 10)}},
    )
    demo_flow(out_dir=str(tmp_path / "demo"), config=config)
    rows = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    # the generative methods run on single-coil 8x only, a 16² prior placed on the 32² grid
    assert [(r["setting"], r["method"]) for r in rows] == [
        ("single-coil 4x", "zero-filled"),
        ("single-coil 8x", "zero-filled"),
        ("single-coil 8x", "csgm"),
        ("single-coil 8x", "sgilo"),
    ]
    figure = tmp_path / "demo" / "uncertainty_single-coil_8x.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
