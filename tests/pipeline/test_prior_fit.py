"""The prior-fit check of the generative methods (pipeline/prior_fit.py) and ``--method auto``
(pipeline/method_choice.py): what is held out, that the output still uses every measurement,
the report's numbers, and auto's per-slice choice and refit."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sgilo.operators.fft import fft2c
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.method_choice import (
    SECOND_FIT_BELOW,
    SECOND_FIT_PART,
    TWO_FIT_MARGIN,
    AutoConfig,
    choice_summary,
    outer_partition,
    per_fold_part,
    scaled_steps,
)
from sgilo.pipeline.methods import Prior, run_method, solve
from sgilo.pipeline.prior_fit import (
    PRIOR_MARGINS,
    SINGLE_COIL_PRIOR_MARGINS,
    SINGLE_COIL_UNEXPLAINED_LIMITS,
    UNEXPLAINED_FROM,
    UNEXPLAINED_LIMIT,
    classical_candidates,
    fit_on_split,
    heldout_split,
    mismatch_warning,
    predict_on_split,
    prior_margin,
    ratio_text,
    slice_accelerations,
    unexplained_limit,
    unexplained_text,
)
from sgilo.pipeline.solvers.classical import scoring_options
from sgilo.pipeline.solvers.diagnostics import PriorFit
from sgilo.pipeline.solvers.kspace_split import fitted_residual, heldout_error

R = 16
#: the centre run 6…9 and six outer columns
MEASURED = [0, 2, 4, 6, 7, 8, 9, 11, 13, 15]
FAST = {"steps": 6, "restarts": 1}  # CSGM settings that keep the tests quick


@pytest.fixture(scope="module")
def prior(gen_stats) -> Prior:
    gen, stats = gen_stats
    return Prior(gen, stats, Path("tiny.pt"))


def _mask(columns: list[int] = MEASURED) -> torch.Tensor:
    mask = torch.zeros(R)
    mask[columns] = 1
    return mask


def _images(batch: int = 2) -> torch.Tensor:
    """Smooth blobs with a phase ramp: nothing like the tiny generator's samples."""
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    out = []
    for b in range(batch):
        blob = torch.exp(-((yy - 6.0 - 2 * b) ** 2 + (xx - 8.0) ** 2) / 10.0)
        out.append(blob * torch.exp(1j * 0.1 * xx))
    return torch.stack(out).to(torch.complex64)


def test_generative_output_uses_every_measurement_and_reports_the_fit(prior):
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_images())
    # exact single-coil data consistency: the output's measured k-space is y, held-out included
    result = solve(y, op, "csgm", prior=prior, solver_options={**FAST, "dc_wavelet": 0})
    sampled = (op.mask > 0).expand(2, R, R)
    torch.testing.assert_close(fft2c(result.image)[sampled], y[sampled], rtol=1e-4, atol=1e-5)
    report = result.diagnostics.prior_fit
    assert report is not None and report.heldout_fraction == pytest.approx(0.1)
    assert set(report.heldout_errors) == {"csgm", *classical_candidates(op)}
    for b in range(2):
        classical = {k: v[b] for k, v in report.heldout_errors.items() if k != "csgm"}
        best = min(classical, key=classical.get)
        assert report.best_classical[b] == best
        assert report.ratio[b] == pytest.approx(report.heldout_errors["csgm"][b] / classical[best])
    record = result.diagnostics_dict()
    assert record["prior_fit_ratio"] == report.ratio and record["prior_fit"] is True


def test_classical_errors_are_those_of_a_fit_without_the_heldout_columns(prior):
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_images())
    report = solve(y, op, "csgm", prior=prior, solver_options=FAST).diagnostics.prior_fit
    fits = heldout_split(y, op, 0.1, 0)  # the same seeded draw
    held = fits.part.held_op.slice_masks(2)[:, 0] > 0  # (B, W)
    assert held.sum(dim=1).tolist() == [1, 1]  # 10 % of 6 outer columns: one per slice
    assert not held[:, 6:10].any()  # never the fully sampled centre
    # a fit that only scores runs in complex64 (SCORING_DTYPE): the errors of the complex128 fit
    # that is an output to the rounding of float32 carried through 100 iterations
    for name in ("tv", "l1-wavelet"):
        fit = run_method(
            fits.part.fit_y, fits.part.fit_op, name, solver_options=scoring_options(name)
        )
        expected = heldout_error(fits.part, fit.image)[0].tolist()
        assert report.heldout_errors[name] == pytest.approx(expected, rel=1e-12)
        precise = run_method(fits.part.fit_y, fits.part.fit_op, name).image
        assert report.heldout_errors[name] != heldout_error(fits.part, precise)[0].tolist()
        assert report.heldout_errors[name] == pytest.approx(
            heldout_error(fits.part, precise)[0].tolist(), rel=1e-3
        )


def test_unexplained_fraction_is_the_model_images_residual_beyond_the_best_classical(prior):
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_images())
    result = solve(y, op, "csgm", prior=prior, solver_options=FAST)
    report = result.diagnostics.prior_fit
    part = heldout_split(y, op, 0.1, 0).part  # the same seeded draw
    # the latent fit alone (no final data-consistency step), on the fitted samples
    no_dc = {**FAST, "data_consistency": False}
    model = run_method(part.fit_y, part.fit_op, "csgm", prior=prior, seed=0, solver_options=no_dc)
    generative = fitted_residual(part, model.image)[0]
    classical = torch.stack(
        [
            fitted_residual(part, run_method(part.fit_y, part.fit_op, c).image)[0]
            for c in classical_candidates(op)
        ]
    ).min(dim=0)
    energy = part.fit_y.abs().pow(2).flatten(1).sum(dim=1).to(torch.float64)
    expected = (generative - classical.values) / energy
    assert report.unexplained == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)
    # the tiny random generator cannot draw smooth blobs: it leaves part of them unexplained
    assert min(report.unexplained) > 0
    # 10 of 16 columns (R = 1.6): reported, not judged
    assert report.unexplained_limit == [None, None]
    record = result.diagnostics_dict()
    assert record["prior_fit_unexplained"] == report.unexplained
    assert record["prior_fit_unexplained_limit"] == [None, None]


def test_the_unexplained_limit_applies_from_its_acceleration_on():
    assert unexplained_limit(UNEXPLAINED_FROM, multi_coil=True) == UNEXPLAINED_LIMIT
    assert (
        unexplained_limit(8.0, multi_coil=True)
        == unexplained_limit(12.0, multi_coil=True)
        == UNEXPLAINED_LIMIT
    )
    assert unexplained_limit(4.0, multi_coil=True) == UNEXPLAINED_LIMIT  # 4x data too
    assert (
        unexplained_limit(1.6, multi_coil=True) is None
        and unexplained_limit(UNEXPLAINED_FROM - 0.01, multi_coil=True) is None
    )
    # one coil: its own table, log-linear in R between its points
    (r4, t4), (r8, t8) = SINGLE_COIL_UNEXPLAINED_LIMITS
    assert unexplained_limit(r4, multi_coil=False) == pytest.approx(t4)
    assert unexplained_limit(r8, multi_coil=False) == unexplained_limit(16.0, multi_coil=False)
    assert unexplained_limit(r8, multi_coil=False) == pytest.approx(t8) and t8 > UNEXPLAINED_LIMIT
    middle = unexplained_limit((r4 * r8) ** 0.5, multi_coil=False)
    assert middle == pytest.approx((t4 + t8) / 2)
    assert unexplained_limit(UNEXPLAINED_FROM, multi_coil=False) == pytest.approx(t4)
    assert unexplained_limit(UNEXPLAINED_FROM - 0.01, multi_coil=False) is None
    assert prior_margin(8.0, multi_coil=True) == PRIOR_MARGINS[-1][1]


def test_auto_keeps_a_classical_method_where_the_prior_leaves_too_much_unexplained(prior):
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_images())
    # no second fit (the default) and a margin no ratio reaches: only the limit decides
    options = {
        "generative": "csgm",
        "generative_settings": FAST,
        "second_fit_below": 0,
        "margin": 1e9,
    }
    loose = solve(y, op, "auto", prior=prior, solver_options={**options, "unexplained_limit": 1e9})
    assert loose.diagnostics.auto_choice == ["csgm", "csgm"]
    u = loose.diagnostics.prior_fit.unexplained
    assert u[0] != pytest.approx(u[1])
    limit = (u[0] + u[1]) / 2
    tight = {**options, "unexplained_limit": limit}
    d = solve(y, op, "auto", prior=prior, solver_options=tight).diagnostics
    assert d.prior_fit.unexplained == pytest.approx(u)  # the same fits
    assert d.auto_unexplained_limit == [limit, limit]
    for b, chosen in enumerate(d.auto_choice):
        assert (chosen == "csgm") == (u[b] <= limit)
        assert (d.auto_weights[b] is None) == (u[b] <= limit)  # else the classical blend's
    assert sorted(d.auto_choice).count("csgm") == 1
    # by default no limit below 3x (R = 1.6 here)
    plain = solve(y, op, "auto", prior=prior, solver_options=options).diagnostics
    assert plain.auto_unexplained_limit == [None, None]
    assert plain.auto_choice == ["csgm", "csgm"]
    # a limit must be finite (run.json is strict JSON); 1e9 turns it off
    with pytest.raises(ValueError, match="unexplained_limit"):
        AutoConfig(unexplained_limit=math.inf)
    # other candidates: u beyond the best of those
    only_tv = solve(y, op, "auto", prior=prior, solver_options={**options, "candidates": ["tv"]})
    fits = heldout_split(y, op, 0.1, 0)
    tv = fitted_residual(fits.part, run_method(fits.part.fit_y, fits.part.fit_op, "tv").image)[0]
    best = (
        torch.stack(
            [
                fitted_residual(fits.part, run_method(fits.part.fit_y, fits.part.fit_op, c).image)[
                    0
                ]
                for c in classical_candidates(op)
            ]
        )
        .min(dim=0)
        .values
    )
    shift = (tv - best) / fits.part.fit_y.abs().pow(2).flatten(1).sum(dim=1).to(torch.float64)
    assert only_tv.diagnostics.prior_fit.unexplained == pytest.approx(
        (torch.tensor(u, dtype=torch.float64) - shift).tolist(), rel=1e-4, abs=1e-6
    )


def test_prior_fit_off_is_the_plain_solver(prior):
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_images())
    off = solve(y, op, "csgm", prior=prior, solver_options={**FAST, "prior_fit": False})
    plain = run_method(y, op, "csgm", prior=prior, solver_options=FAST)
    assert off.diagnostics.prior_fit is None
    torch.testing.assert_close(off.image, plain.image)


def test_nothing_to_hold_out_runs_on_all_samples_with_a_note(prior):
    op = SingleCoilMRI(_mask([6, 7, 8, 9, 13]), shape=(R, R))  # one outer column only
    y = op.A(_images())
    result = solve(y, op, "csgm", prior=prior, solver_options=FAST)
    report = result.diagnostics.prior_fit
    assert report.ratio is None and "at least 2 are needed" in report.note
    auto = solve(y, op, "auto", prior=prior, solver_options={"generative": "csgm"})
    assert auto.diagnostics.auto_choice == ["csgm", "csgm"]
    assert "csgm on every slice" in auto.diagnostics.auto_note


def test_auto_keeps_the_generative_method_or_blends_the_classical_ones_per_slice(prior):
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(3, R, R, generator=g) + 1j * torch.randn(3, R, R, generator=g)
    maps = (maps / maps.abs().pow(2).sum(0).sqrt()).to(torch.complex64)
    op = MultiCoilMRI(maps, _mask())
    y = op.A(_images())
    plain = {"generative": "csgm", "generative_settings": FAST}
    options = {**plain, "second_fit_below": 6.0}  # the second fit, off by default
    result = solve(y, op, "auto", prior=prior, solver_options=options)
    d = result.diagnostics
    errors = d.prior_fit.heldout_errors
    assert set(errors) == {"csgm", "cg-sense", "l1-wavelet", "tv"}
    assert AutoConfig().margin is None  # by default the margin of the statistic used
    # 10 of 16 columns measured (R = 1.6 < 6): a second generative fit scored every slice
    assert all(r < 6.0 for r in slice_accelerations(op, 2))
    assert d.auto_margin == [TWO_FIT_MARGIN, TWO_FIT_MARGIN]
    second = d.second_fit_errors
    assert set(second) == set(errors)
    # its held-out columns: part 1 of the partition, disjoint from the first split's draw
    first = heldout_split(y, op, 0.1, seed=0).part
    parts = outer_partition(y, op, AutoConfig().classical_folds)
    held = per_fold_part(y, op, parts[SECOND_FIT_PART])
    first_columns = (first.held_op.slice_masks(2) > 0).any(dim=-2)
    assert not (first_columns & parts[SECOND_FIT_PART]).any()
    # ... and its generative error is that of a fit that never saw them, with half the steps
    half = {**FAST, "steps": 3}
    assert scaled_steps("csgm", FAST["steps"], AutoConfig().second_fit_steps) == 3
    _, predicted, _ = fit_on_split(y, op, held, "csgm", prior=prior, solver_options=half)
    torch.testing.assert_close(
        torch.tensor(second["csgm"], dtype=torch.float64), heldout_error(held, predicted)[0]
    )
    # (predict_on_split: the same prediction, without the output on every sample)
    alone = predict_on_split(y, held, "csgm", prior=prior, solver_options=half)
    torch.testing.assert_close(alone, predicted)
    n0, n1 = first.held_op.num_measurements(2), held.held_op.num_measurements(2)
    folds = d.classical_fold_errors
    assert set(folds) == {"cg-sense", "l1-wavelet", "tv"}
    for b, chosen in enumerate(d.auto_choice):
        # the statistic: squared errors summed over both held-out sets, generative / classical
        summed = {k: float(errors[k][b] * n0[b] + second[k][b] * n1[b]) for k in errors}
        ratio = summed["csgm"] / min(v for k, v in summed.items() if k != "csgm")
        assert d.auto_ratio[b] == pytest.approx(ratio, rel=1e-6)
        assert (chosen == "csgm") == (ratio <= TWO_FIT_MARGIN)
        if chosen != "csgm":  # the classical candidates with a weight, refitted on every sample
            weights = d.auto_weights[b]
            assert chosen == "+".join(sorted(weights, key=lambda n: -weights[n]))
            assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) > 0
            blend = sum(w * run_method(y, op, n).image[b] for n, w in weights.items())
            torch.testing.assert_close(result.image[b], blend.to(result.image.dtype))
    # the tiny random generator cannot draw smooth blobs: a classical method wins somewhere
    assert any(c != "csgm" for c in d.auto_choice)
    # without the blend: the candidate with the lowest error summed over the 4 folds, refitted
    single = solve(y, op, "auto", prior=prior, solver_options={**options, "classical_blend": False})
    for b, chosen in enumerate(single.diagnostics.auto_choice):
        if chosen != "csgm":
            assert chosen == min(folds, key=lambda name: folds[name][b])
            assert single.diagnostics.auto_weights[b] == {chosen: 1.0}
            refit = run_method(y, op, chosen).image
            torch.testing.assert_close(single.image[b], refit[b].to(result.image.dtype))
    assert [c == "csgm" for c in single.diagnostics.auto_choice] == [
        c == "csgm" for c in d.auto_choice
    ]
    # margin 1e9: the generative method everywhere; a tiny margin: the best classical one
    always = solve(y, op, "auto", prior=prior, solver_options={**options, "margin": 1e9})
    assert always.diagnostics.auto_choice == ["csgm", "csgm"]
    # nothing went to a classical method: the ranking folds were not fitted, and the statistic
    # is the same
    assert always.diagnostics.classical_fold_errors is None
    assert always.diagnostics.auto_weights is None
    assert always.diagnostics.auto_ratio == pytest.approx(d.auto_ratio)
    record = result.diagnostics_dict()
    assert record["auto_choice"] == d.auto_choice and record["generative"] == "csgm"
    assert record["generative_run"]["steps"] == 6
    assert record["auto_ratio"] == d.auto_ratio and record["second_fit_errors"] == second
    # no second fit (the default): the first split's prior-fit ratio against its margin
    assert SECOND_FIT_BELOW == 0
    one = solve(y, op, "auto", prior=prior, solver_options=plain)
    d1 = one.diagnostics
    assert d1.second_fit_errors is None and "second_fit_errors" not in one.diagnostics_dict()
    assert d1.auto_ratio == pytest.approx(d1.prior_fit.ratio)
    coils = op.num_coils > 1
    assert d1.auto_margin == [prior_margin(r, multi_coil=coils) for r in slice_accelerations(op, 2)]
    for b, chosen in enumerate(d1.auto_choice):
        if d1.auto_ratio[b] <= d1.auto_margin[b]:
            assert chosen == "csgm"
        else:  # the ranking folds exist once some slice goes to a classical method
            assert set(d1.auto_weights[b]) <= set(d1.classical_fold_errors)


def test_second_fit_steps_scale_every_round():
    assert scaled_steps("sgilo", None, 0.5) == [150, 100, 50, 50]  # the default schedule
    assert scaled_steps("ilo", [10, 0, 3], 0.5) == [5, 0, 2]  # a skipped round stays skipped
    assert scaled_steps("csgm", None, 1.0) == 300
    assert scaled_steps("csgm", 1, 0.1) == 1


def test_auto_config_checks_the_generative_settings():
    with pytest.raises(ValueError, match="steps"):
        AutoConfig(generative="csgm", generative_settings={"steps": -1})
    with pytest.raises(ValueError, match="prior_fit"):
        AutoConfig(generative_settings={"prior_fit": False})
    assert AutoConfig().generative == "sgilo"


def test_report_texts():
    report = PriorFit(
        heldout_fraction=0.1,
        heldout_errors={"sgilo": [2.5, 0.5], "tv": [1.0, 1.0]},
        best_classical=["tv", "tv"],
        ratio=[2.5, 0.5],
    )
    assert PRIOR_MARGINS[0][1] < 2.5  # the first slice is beyond the 4x margin
    assert ratio_text(report) == "prior-fit 1.50 (unlike prior on 1/2)"
    line = mismatch_warning(report, "sgilo")
    assert line.startswith("warning: sgilo's prior") and "1 of 2 slice(s)" in line
    # without per-slice margins, the 4x one; a margin of 1 reads "worse than"
    how = f"more than {PRIOR_MARGINS[0][1]:.2g}x worse"
    assert "--method auto" in line and how in line and "\n" not in line
    plain = mismatch_warning(replace(report, margin=[1.0, 1.0]), "sgilo")
    assert "held-out k-space worse than tv" in plain
    # per-slice margins (an 8x slice may have a larger one): a ratio of 2.5 within a margin of 2.5
    wide = replace(report, margin=[2.5, 1.2])
    assert ratio_text(wide) == "prior-fit 1.50" and mismatch_warning(wide, "sgilo") is None
    assert "more than 2.5x" in mismatch_warning(
        replace(report, ratio=[3.0, 0.5], margin=[2.5, 1.2]), "sgilo"
    )
    # the unexplained fraction: judged against its limit where there is one
    unexplained = PriorFit(
        heldout_fraction=0.1,
        best_classical=["tv", "tv"],
        ratio=[1.0, 0.5],
        margin=[1.8, 1.8],
        unexplained=[0.2, 0.01],
        unexplained_limit=[0.09, 0.09],
    )
    assert ratio_text(unexplained) == "prior-fit 0.75 (unlike prior on 1/2)"
    assert unexplained_text(unexplained) == "unexplained 20% (limit 9%)"
    line = mismatch_warning(unexplained, "sgilo", auto=True)
    assert "left 20% more of the fitted k-space energy unexplained than tv (limit 9%)" in line
    assert "1 of 2 slice(s)" in line and "held-out" not in line
    assert "auto kept a classical method there" in line
    # auto with its own settings may have kept the prior on a flagged slice: the line says so
    kept = mismatch_warning(unexplained, "sgilo", auto=True, choice=["sgilo", "tv"])
    assert "auto kept sgilo on 1 of them" in kept
    # not judged on any slice (below 3x): the largest over all slices, said so
    below = replace(unexplained, unexplained_limit=[None, None], unexplained=[0.14, 0.02])
    assert unexplained_text(below) == "unexplained 14% (not judged below 3x)"
    both = replace(unexplained, ratio=[1.0, 3.0])
    assert "ratio up to 3.00" in mismatch_warning(both, "sgilo") and "2 of 2" in (
        mismatch_warning(both, "sgilo")
    )
    assert mismatch_warning(replace(unexplained, unexplained_limit=[None, None]), "sgilo") is None
    good = PriorFit(heldout_fraction=0.1, ratio=[0.5], best_classical=["tv"])
    assert mismatch_warning(good, "sgilo") is None
    assert ratio_text(PriorFit(heldout_fraction=None, note="x")) is None
    assert choice_summary(["tv", "sgilo", "tv"]) == "tv on 2 slices, sgilo on 1 slice"


def test_the_classical_folds_score_complex64_fits():
    # auto's ranking of the classical candidates scores fits on each part's other samples in
    # complex64 (SCORING_DTYPE), as the prior-fit check does
    from sgilo.pipeline.method_choice import kfold_errors

    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_images())
    parts = outer_partition(y, op, 2)
    total = kfold_errors(y, op, ("l1-wavelet", "tv"), parts)
    for k in range(2):
        part = per_fold_part(y, op, parts[k])
        count = part.held_op.num_measurements(2)
        for j, name in enumerate(("l1-wavelet", "tv")):
            fit = run_method(part.fit_y, part.fit_op, name, solver_options=scoring_options(name))
            expected = heldout_error(part, fit.image)[0] * count
            assert torch.equal(total[k, :, j], expected)


def test_classical_folds_hold_out_every_outer_column_exactly_once():
    from sgilo.pipeline.solvers.heldout_columns import draw_columns, partition_columns

    candidates = torch.zeros(2, R, dtype=torch.bool)
    candidates[0, [0, 2, 4, 11, 13, 15]] = True
    candidates[1, [1, 3, 5, 12, 14]] = True
    parts = partition_columns(candidates, 4, seed=0)
    assert parts.shape == (4, 2, R)
    assert torch.equal(parts.sum(dim=0), candidates.long())  # each candidate once, nothing else
    assert parts.sum(dim=2).min() >= 1  # no empty fold
    # the first part begins where the seeded draw of the prior-fit check begins
    first = draw_columns(candidates, 0.1, seed=0)
    assert (first & parts[0]).sum() == first.sum()
    with pytest.raises(ValueError, match="folds"):
        partition_columns(candidates, 6, seed=0)  # slice 1 has only 5 candidates


@pytest.mark.parametrize(
    ("multi_coil", "table"), [(True, PRIOR_MARGINS), (False, SINGLE_COIL_PRIOR_MARGINS)]
)
def test_prior_margin_by_acceleration_and_coils(multi_coil, table):
    (r_lo, t_lo), (r_hi, t_hi) = table[0], table[-1]
    assert prior_margin(r_lo, multi_coil=multi_coil) == t_lo
    assert prior_margin(r_hi, multi_coil=multi_coil) == t_hi
    assert prior_margin(1.0, multi_coil=multi_coil) == t_lo  # constant outside
    assert prior_margin(100.0, multi_coil=multi_coil) == t_hi
    middle = prior_margin(math.sqrt(r_lo * r_hi), multi_coil=multi_coil)  # log-linear in R
    assert middle == pytest.approx((t_lo + t_hi) / 2)


def test_each_kind_of_data_has_its_own_8x_margin_and_limit(prior):
    """One coil's one or two held-out columns at 8x are judged by the single-coil tables, several
    coils' by the multi-coil ones (margins equal since the trusted band, tuned apart; the
    unexplained limit higher for one coil), in the report of a real run as in auto's choice;
    multi-coil data with one coil map counts as one coil."""
    assert prior_margin(8.0, multi_coil=False) == SINGLE_COIL_PRIOR_MARGINS[-1][1]
    assert prior_margin(8.0, multi_coil=True) == PRIOR_MARGINS[-1][1]
    assert prior_margin(4.0, multi_coil=False) == prior_margin(4.0, multi_coil=True)
    maps = torch.ones(2, R, R, dtype=torch.complex64) / math.sqrt(2.0)
    mask = _mask([3, 12])  # two columns of 16, no centre: R = 8
    cases = [
        (SingleCoilMRI(mask, (R, R)), False),
        (MultiCoilMRI(maps[:1] * math.sqrt(2.0), mask), False),
        (MultiCoilMRI(maps, mask), True),
    ]
    for op, multi_coil in cases:
        y = op.A(_images())
        settings = {**FAST, "phase": "none"}  # no calibration region to take a phase from
        options = {"generative": "csgm", "generative_settings": settings}
        d = solve(y, op, "auto", prior=prior, solver_options=options).diagnostics
        expected = prior_margin(8.0, multi_coil=multi_coil)
        assert d.prior_fit.margin == [expected, expected] and d.auto_margin == d.prior_fit.margin
        limit = SINGLE_COIL_UNEXPLAINED_LIMITS[-1][1] if not multi_coil else UNEXPLAINED_LIMIT
        assert d.prior_fit.unexplained_limit == [limit, limit] == d.auto_unexplained_limit
    assert SINGLE_COIL_UNEXPLAINED_LIMITS[-1][1] != UNEXPLAINED_LIMIT


def test_slice_accelerations_from_the_masks():
    mask = torch.zeros(R, dtype=torch.bool)
    mask[::4] = True  # every 4th column: R = 4
    op = SingleCoilMRI(mask, (R, R))
    assert slice_accelerations(op, 3) == pytest.approx([4.0] * 3)
