"""The classical-blend evaluation on a tuning set at 64² (the real images and acquisitions)."""

from __future__ import annotations

import pytest

from sgilo.pipeline.research.classical_blend_eval import measure, summary


def test_rows_and_summary_on_the_heads_set():
    rows = measure("heads", 30.0, 3, size=64)
    assert len(rows) == 8 * 4  # 8 images x the 4 default settings
    for r in rows:
        assert sum(r["weights"].values()) == pytest.approx(1.0)
        assert set(r["weights"]) == set(r["psnr"])
        assert r["lowest_error_psnr"] == r["psnr"][r["lowest_error"]]
        used = [n for n, w in r["weights"].items() if w > 0]
        assert sorted(r["blend"].split("+")) == sorted(used)
        if len(used) == 1:  # a vertex: the blend is that candidate's image
            assert r["blend_psnr"] == pytest.approx(r["psnr"][used[0]], abs=1e-4)
    table = summary(rows)
    assert table[-1].startswith("| all | 32 |")
    assert len(table) == 2 + 4 + 1
