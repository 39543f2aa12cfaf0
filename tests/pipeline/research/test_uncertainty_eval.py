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
    assert "classical_gap" not in ue.indicators_of(model, output)
    tv, l1 = np.full((1, 2, 2), 0.5), np.full((1, 2, 2), 0.5)
    tv[0, 0, 0], l1[0, 0, 0], l1[0, 1, 1] = 2.5, 1.5, 1.5
    ind = ue.indicators_of(model, output, [tv, l1])
    two = ue.indicators_of(torch.cat([model, 2 * model], 1), torch.cat([output, 2 * output], 1))
    # per slice: slice 0 against its own peak 2.5 (not the batch's 5), slice 1 against 5
    assert two["darkness"][0, 1, 1] == pytest.approx(2.0)
    assert two["darkness"][1, 1, 1] == pytest.approx(4.0)
    assert set(ind) == set(ue.INDICATORS)
    assert ind["classical_gap"][0, 0, 0] == pytest.approx(0.5)  # (|2.5 − 2.5| + |2.5 − 1.5|) / 2
    assert (
        ind["classical_gap"][0, 1, 1] == pytest.approx(0.5) and ind["classical_gap"][0, 0, 1] == 0
    )
    assert ind["darkness"][0, 0, 0] == 0 and ind["darkness"][0, 1, 1] == pytest.approx(2.0)
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
    old = {k: {m: v for m, v in rows.items() if m != "support_local"} for k in ue.INDICATORS[:3]}
    table = ue.markdown(
        [
            {"setting": "single-coil 8x", "spearman": {k: rows for k in ue.INDICATORS}},
            {"setting": "8-coil 8x", "spearman": old},  # a row measured before the new columns
        ]
    )
    assert table.count("\n") == 3 and "| single-coil 8x | defaults |" in table
    new_row, old_row = table.splitlines()[2:]
    assert new_row.count(" / — ") == 0 and old_row.count("0.11 / —") == 3
    assert old_row.endswith("| — / — / — / — | — / — / — / — |")


def test_local_scope_ranks_regions_not_pixels():
    """Error in one half of the object, with pixel noise: an indicator that knows only which
    half is wrong fails pixel by pixel and succeeds at a region's scale."""
    rng = np.random.default_rng(1)
    support = np.ones((1, 48, 48), dtype=bool)
    error = rng.random((1, 48, 48))
    error[0, :, 24:] *= 3.0  # the right half is wrong
    region = np.zeros((1, 48, 48))
    region[0, :, 24:] = 1.0
    indicator = region + 0.01 * rng.random((1, 48, 48))
    rows = ue.rank_agreement({"region": indicator}, error, support)["region"]
    assert rows["support_local"] > 0.8
    assert rows["support_local"] > rows["support"] + 0.2
    assert ue.local_rms(np.full((1, 8, 8), 2.0)) == pytest.approx(np.full((1, 8, 8), 2.0))


def test_local_rms_stays_in_its_slice_and_its_support():
    """Slice by slice (a zero slice next to a constant one stays zero), and with a support the
    background never enters the window: a constant object on a bright background reads as the
    object's value up to its rim."""
    stack = np.zeros((2, 16, 16))
    stack[1] = 3.0
    out = ue.local_rms(stack)
    assert np.all(out[0] == 0) and out[1] == pytest.approx(np.full((16, 16), 3.0))
    values = np.full((1, 32, 32), 10.0)
    support = np.zeros((1, 32, 32), dtype=bool)
    support[0, 8:24, 8:24] = True
    values[support] = 1.0
    inside = ue.local_rms(values, support)[support]
    assert inside == pytest.approx(np.ones(inside.size))
    assert ue.local_rms(values)[0, 8, 8] > 3.0  # without the support the background leaks in
