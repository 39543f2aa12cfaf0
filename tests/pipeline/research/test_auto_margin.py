"""The prior margin's tuning (pipeline/research/auto_margin.py): the tuning set and the table."""

import re

import numpy as np
import pytest

from sgilo.pipeline.research.auto_margin import (
    auto_pick,
    choose_kind_limit,
    choose_margin,
    choose_margin_and_limit,
    limit_table,
    margin_table,
    tuning_images,
)


def _row(sgilo_error, classical_error, sgilo_psnr, classical_psnr):
    return {
        "psnr": {"sgilo": sgilo_psnr, "tv": classical_psnr, "l1-wavelet": classical_psnr - 1},
        "errors": {"sgilo": sgilo_error, "tv": classical_error, "l1-wavelet": 2 * classical_error},
    }


def test_auto_pick_and_the_table_follow_the_margin():
    in_domain = _row(1.1, 1.0, 30.0, 27.0)  # prior slightly worse on held-out k-space, +3 dB
    unlike = _row(2.0, 1.0, 20.0, 24.0)  # prior far worse held out, -4 dB
    assert auto_pick(in_domain, 1.0) == "tv" and auto_pick(in_domain, 1.2) == "sgilo"
    assert auto_pick(unlike, 1.2) == "tv" and auto_pick(unlike, float("inf")) == "sgilo"
    table = {t["tau"]: t for t in margin_table([in_domain, unlike], (1.0, 1.2, float("inf")))}
    assert table[1.2]["mean_loss_to_best"] == 0.0
    assert table[1.0]["mean_loss_to_best"] == pytest.approx(1.5)
    assert table[float("inf")]["worst_loss_to_classical"] == pytest.approx(4.0)


def test_choose_margin_takes_the_lowest_loss_and_the_smaller_tau_on_ties():
    in_domain = _row(1.6, 1.0, 30.0, 27.0)  # needs tau >= 1.6 to keep the prior (+3 dB)
    unlike = _row(2.4, 1.0, 20.0, 24.0)  # tau >= 2.4 would keep the prior (-4 dB)
    assert choose_margin([in_domain, unlike], (1.0, 1.5, 1.8, 2.0, 3.0)) == 1.8


def test_the_unexplained_limit_vetoes_the_prior_and_is_chosen_with_tau():
    # held out, the prior looks fine on both rows (ratio 1.1); one is unlike its training
    # images and only the unexplained fraction says so
    in_domain = {**_row(1.1, 1.0, 30.0, 27.0), "unexplained": 0.03}
    unlike = {**_row(1.1, 1.0, 20.0, 24.0), "unexplained": 0.3}
    assert auto_pick(unlike, 1.2) == "sgilo" and auto_pick(unlike, 1.2, 0.1) == "tv"
    assert auto_pick(in_domain, 1.2, 0.1) == "sgilo" and auto_pick(in_domain, 1.2, 0.02) == "tv"
    taus, limits = (1.0, 1.2), (0.02, 0.1, float("inf"))
    table = limit_table([in_domain, unlike], taus, limits)
    assert table[(1.2, 0.1)] == 0.0 and table[(1.2, float("inf"))] == pytest.approx(2.0)
    assert table[(1.0, 0.1)] == pytest.approx(1.5)
    assert choose_margin_and_limit([in_domain, unlike], taus, limits) == (1.2, 0.1)
    # rows without the statistic: a finite limit needs it
    with pytest.raises(KeyError):
        auto_pick(_row(1.1, 1.0, 30.0, 27.0), 1.2, 0.1)


def test_a_kind_of_data_gets_its_own_limit_only_where_its_rows_resolve_it():
    # the prior wins the first row by 3 dB at u 0.095, loses the second by 4 dB at u 0.3
    rows = [
        {**_row(1.1, 1.0, 30.0, 27.0), "unexplained": 0.095},
        {**_row(1.1, 1.0, 20.0, 24.0), "unexplained": 0.3},
    ]
    taus, limits = (1.0, 1.2), (0.09, 0.1, float("inf"))
    assert choose_margin_and_limit(rows, taus, limits) == (1.2, 0.1)
    # at the joint 0.09 the first row goes to tv (1.5 dB lost on average): 0.1 resolves it
    assert choose_kind_limit(rows, 0.09, taus, limits) == 0.1
    # a gain within the tie keeps the joint limit
    assert choose_kind_limit(rows, 0.09, taus, limits, tie=1.6) == 0.09
    # the joint limit already the kind's own: kept
    assert choose_kind_limit(rows, 0.1, taus, limits) == 0.1


def test_tuning_images_are_twelve_distinct_unit_range_slices():
    images, names = tuning_images(64)
    assert images.shape == (12, 64, 64) and len(set(names)) == 12
    assert sum(n.startswith("unseen-axial") for n in names) == 4
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    flat = images.reshape(12, -1)
    assert np.linalg.matrix_rank(flat) == 12


def test_extra_tuning_images_are_twelve_new_distinct_slices():
    from sgilo.pipeline.research.auto_margin import IMAGE_SETS, extra_tuning_images

    images, names = extra_tuning_images(64)
    _, base = tuning_images(64)
    assert images.shape == (12, 64, 64) and len(set(names)) == 12 and not set(names) & set(base)
    assert sum("head" in n for n in names) == 2 and sum("coronal" in n for n in names) == 2
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert np.linalg.matrix_rank(images.reshape(12, -1)) == 12
    assert np.array_equal(IMAGE_SETS["extra"](64)[0], images)  # seeded: the same every time


def test_main_keeps_the_rows_of_the_chosen_sets_and_tabulates_them(tmp_path, capsys):
    import json

    from sgilo.pipeline.research.auto_margin import extra_tuning_images, main

    rows = []
    for names in (tuning_images(32)[1], extra_tuning_images(32)[1]):
        for k, name in enumerate(names):
            for setting in ("single-coil 4x", "8-coil 8x"):
                row = _row(1.0 + 0.1 * k, 1.0, 25.0 + k % 3, 24.0)
                rows.append({"setting": setting, "image": name, **row})
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    out = tmp_path / "out.json"
    assert main(["--rows", str(path), "--out", str(out)]) == 0  # both sets: nothing to measure
    assert len(json.loads(out.read_text())) == len(rows)
    printed = capsys.readouterr().out
    assert "4x (24 rows)" in printed and "unexplained" not in printed  # rows without it
    assert main(["--rows", str(path), "--out", str(out), "--images", "extra"]) == 0
    kept = json.loads(out.read_text())
    assert len(kept) == 24 and all(r["image"].startswith("extra-") for r in kept)
    # 8x rows with the unexplained fraction: the τ × θ table as well
    eight = [{**r, "unexplained": 0.05} for r in rows if r["setting"] == "8-coil 8x"]
    path.write_text(json.dumps(eight))
    capsys.readouterr()
    assert main(["--rows", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8x all (24 rows), τ × θ" in printed and "8x 8-coil (24 rows), τ × θ" in printed
    assert re.search(r"chosen τ = [0-9.]+, θ = [0-9.]+", printed)
    assert "single-coil" not in printed  # no such rows: no table, no margin of their own
    assert "8x 8-coil at θ" in printed
    # with single-coil 8x rows: their table, and their margin at the θ of all rows
    single = [{**r, "setting": "single-coil 8x"} for r in eight]
    path.write_text(json.dumps(eight + single))
    assert main(["--rows", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8x all (48 rows)" in printed and "8x single-coil (24 rows), τ × θ" in printed
    for kind in ("single-coil", "8-coil"):
        assert re.search(rf"8x {kind} at θ = [0-9.]+ \(chosen on all rows\): τ = ", printed)


def test_head_tuning_images_are_new_heads_apart_from_the_default_sets():
    from sgilo.pipeline.research.auto_margin import (
        DEFAULT_IMAGE_SETS,
        IMAGE_SETS,
        extra_tuning_images,
        head_tuning_images,
    )
    from sgilo.pipeline.research.unseen_subjects import subject_images

    images, names = head_tuning_images(64)
    assert images.shape == (8, 64, 64) and len(set(names)) == 8
    assert not set(names) & (set(tuning_images(64)[1]) | set(extra_tuning_images(64)[1]))
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert np.linalg.matrix_rank(images.reshape(8, -1)) == 8
    assert np.array_equal(IMAGE_SETS["heads"](64)[0], images)  # seeded
    assert "heads" in IMAGE_SETS and "heads" not in DEFAULT_IMAGE_SETS
    # heads: more of the field of view is bright than in the skull-stripped extra axial slices
    extra, extra_names = extra_tuning_images(64)
    plain = {"extra-axial-0", "extra-axial-1", "extra-axial-2"}
    axial = extra[[k for k, n in enumerate(extra_names) if n in plain]]
    assert len(axial) == 3
    assert (images > 0.05).mean() > (axial > 0.05).mean()
    # training planes, not the validation heads of unseen_subjects
    validation = subject_images(8, 64, head=True).reshape(8, -1)
    corr = np.corrcoef(np.concatenate([images.reshape(8, -1), validation]))[:8, 8:]
    assert corr.max() < 0.99


def test_measured_rows_carry_the_noise_level(gen_stats):
    """A row of a tuning run at a given SNR records it and the estimated noise level σ̂/s, which
    grows as the SNR falls (the rows that a noise-dependent rule is chosen on)."""
    from pathlib import Path

    from sgilo.pipeline.methods import Prior
    from sgilo.pipeline.research.auto_margin import measure

    prior = Prior(*gen_stats, Path("tiny.pt"))
    fast = frozenset({"single-coil 4x"})
    kwargs = {"size": 32, "settings": fast, "image_set": "base", "skip": frozenset()}
    names = tuning_images(32)[1]
    kwargs["skip"] = frozenset(names[2:])  # two images keep it quick
    noisy = measure(prior, snr_db=10.0, **kwargs)
    clean = measure(prior, snr_db=40.0, **kwargs)
    assert [r["image"] for r in noisy] == names[:2] == [r["image"] for r in clean]
    assert all(r["snr_db"] == 10.0 for r in noisy) and all(r["snr_db"] == 40.0 for r in clean)
    for a, b in zip(noisy, clean, strict=True):
        assert a["sigma_rel"] > 2 * b["sigma_rel"] > 0
        assert set(a["psnr"]) == {"sgilo", "l1-wavelet", "tv"} and "unexplained" in a
