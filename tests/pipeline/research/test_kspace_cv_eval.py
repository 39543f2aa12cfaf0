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


def test_score_applies_the_rule_to_collected_curves():
    from sgilo.pipeline.research.kspace_cv_eval import score

    # one column per fold, 3 folds: all three agree that grid point 5 predicts best
    shape = [4.0, 3.0, 2.0, 1.5, 1.2, 1.0, 1.4]
    row = {
        "setting": "8-coil 8x",
        "snr": 20,
        "method": "tv",
        "default": 0.003,
        "column_errors": [[v, v + 5.0, v + 0.5 + 0.01 * g] for g, v in enumerate(shape)],
        "fold": [0, 1, 2],
        "mse": [0.04, 0.03, 0.02, 0.02, 0.015, 0.01, 0.012],
    }
    (one,) = score([row], folds=1)  # one column: no spread, the default is kept
    assert one["auto_index"] == [3] and one["auto"] == one["default"]
    (three,) = score([row], folds=3)
    assert three["auto_index"] == [5] and three["auto"] == three["oracle"] > three["default"]
