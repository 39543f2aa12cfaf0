"""The tuning measurement of the coil-map refinement (pipeline/research/map_refine_tuning.py)."""

import numpy as np

from sgilo.pipeline.research import map_refine_tuning as tuning


def test_rows_compare_the_three_maps_on_the_flagged_heads():
    rows = tuning.measure(size=64, snrs=(30.0,), heads=((40, 4),))
    settings = {r["setting"] for r in rows}
    assert settings <= {"8-coil 4x", "8-coil 8x"} and "8-coil 4x" in settings
    for setting in settings:
        mine = [r for r in rows if r["setting"] == setting]
        assert {(r["maps"], r["method"]) for r in mine} == {
            (m, k) for m in tuning.MAPS for k in tuning.METHODS
        }
        assert all(len(r["psnr"]) == len(r["slices"]) > 0 for r in mine)
    cg = {
        r["maps"]: np.mean(r["psnr"])
        for r in rows
        if r["setting"] == "8-coil 4x" and r["method"] == "cg-sense"
    }
    assert cg["refined"] > cg["espirit"] + 1, cg
    table = tuning.markdown(rows)
    assert table.count("\n") == 1 + len(settings) and "| 8-coil 4x | 30 dB |" in table
