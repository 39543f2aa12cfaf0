"""The demo flow on a real (test) Prefect API, at a tiny size: every output is written and sane."""

import json

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.demo import demo_flow
from pipeline.demo import DemoConfig


@pytest.fixture(scope="module")
def prefect_api():
    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_demo_flow_writes_report(prefect_api, tmp_path):
    config = DemoConfig(
        num_slices=2,
        size=64,
        settings=[(None, 4, 0.08), (4, 4, 0.08)],
        methods=["zero-filled", "cg-sense", "tv"],
    )
    table = demo_flow(out_dir=str(tmp_path), config=config)
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
