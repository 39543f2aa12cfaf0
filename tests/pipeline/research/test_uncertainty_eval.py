"""The rank agreement of SGILO's uncertainty with the true error
(pipeline/research/uncertainty_eval.py): support, indicators, Spearman inside and outside it."""

import numpy as np
import pytest
import torch

from sgilo.pipeline.research import uncertainty_eval as ue


def test_spearman_is_rank_based():
    a = np.arange(10.0)
    assert ue.spearman(a, a**3) == pytest.approx(1.0)
    assert ue.spearman(a, -np.exp(a)) == pytest.approx(-1.0)
    assert np.isnan(ue.spearman(a[:2], a[:2]))


def test_support_is_per_slice_relative():
    target = np.zeros((2, 4, 4))
    target[0, 1, 1], target[0, 2, 2] = 1.0, 0.01
    target[1, 0, 0], target[1, 3, 3] = 100.0, 10.0
    support = ue.support_of(target, level=0.05)
    assert support[0].sum() == 1 and support[0, 1, 1]
    assert support[1].sum() == 2


def test_indicators_from_chains():
    """Two model chains that differ by ±1 on one pixel, outputs that the final step pulled
    together there (±0.25) and moved by 0.5 everywhere: each indicator reads its own input."""
    model = torch.zeros(2, 1, 2, 2, dtype=torch.complex64)
    model[0, 0, 0, 0], model[1, 0, 0, 0] = 1.0, 3.0
    output = torch.full_like(model, 0.5)
    output[0, 0, 0, 0], output[1, 0, 0, 0] = 2.25, 2.75
    ind = ue.indicators_of(model, output)
    assert set(ind) == set(ue.INDICATORS)
    assert ind["std_model"][0, 0, 0] == pytest.approx(1.0) and ind["std_model"][0, 1, 1] == 0
    assert ind["std"][0, 0, 0] == pytest.approx(0.25) and ind["std"][0, 1, 1] == 0
    assert ind["deviation"][0, 0, 0] == pytest.approx(0.5)  # |2.5| − |2|
    assert ind["deviation"][0, 1, 1] == pytest.approx(0.5)


def test_background_inflates_the_whole_image_agreement():
    """The issue's observation in miniature: an indicator that is zero with the error on a
    large background ranks the whole image well and the object badly."""
    rng = np.random.default_rng(0)
    error = np.zeros((1, 32, 32))
    indicator = np.zeros((1, 32, 32))
    support = np.zeros((1, 32, 32), dtype=bool)
    support[0, 8:24, 8:24] = True
    error[support] = rng.random(support.sum()) + 0.1
    indicator[support] = rng.random(support.sum()) + 0.1  # unrelated inside
    rows = ue.rank_agreement({"std": indicator}, error, support)["std"]
    assert rows["whole"] > 0.6
    assert abs(rows["support"]) < 0.2 and abs(rows["support_median"]) < 0.2
    table = ue.markdown(
        [{"setting": "single-coil 8x", "spearman": {k: rows for k in ue.INDICATORS}}]
    )
    assert table.count("\n") == 2 and "| single-coil 8x | defaults |" in table
