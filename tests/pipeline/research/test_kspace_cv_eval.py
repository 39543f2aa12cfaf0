"""The λ-from-held-out-k-space evaluation (pipeline/research/kspace_cv_eval.py) on one small
slice: the oracle of the grid bounds both the default λ and auto from above."""

from sgilo.pipeline.experiment import Setting
from sgilo.pipeline.research.kspace_cv_eval import evaluate
from sgilo.pipeline.solvers.kspace_cv import GRID_FACTORS


def test_rows_compare_default_auto_and_oracle():
    rows = evaluate(32, 1, snrs=(30,), settings=(Setting(8, 4, 0.08),))
    assert [(r["setting"], r["method"]) for r in rows] == [
        ("8-coil 4x", "l1-wavelet"),
        ("8-coil 4x", "tv"),
    ]
    for r in rows:
        # the oracle picks per slice the grid point nearest the target: nothing on the grid beats it
        assert r["oracle"] >= r["default"] - 1e-9
        assert r["oracle"] >= r["auto"] - 1e-9
        assert 0 <= r["auto_index"][0] < len(GRID_FACTORS)
        assert r["sigma"] > 0 and r["sigma_estimate"] > 0
