"""The second generative fit's tuning (pipeline/research/auto_second_fit.py): the statistic
that joins the first fit's errors with one part's, and the loss table."""

import pytest

from sgilo.pipeline.research.auto_second_fit import first_fit_columns, loss_table, statistic


def _rows(first_sgilo: float, part_sgilo: float, sgilo_psnr: float):
    """A tuning row pair: 20 outer columns (2 in the first draw), 1 coil, 4 rows per column;
    the first fit's mean squared errors and the per-part squared-error sums."""
    first = {
        "setting": "single-coil 4x",
        "image": "x",
        "psnr": {"sgilo": sgilo_psnr, "tv": 27.0, "l1-wavelet": 26.0},
        "errors": {"sgilo": first_sgilo, "tv": 1.0, "l1-wavelet": 2.0},
    }
    row = {
        "setting": "single-coil 4x",
        "image": "x",
        "outer_columns": 20,
        "coils": 1,
        "rows": 4,
        "generative": [0.0, part_sgilo, 0.0, 0.0],
        "classical": {"tv": [1.0, 10.0, 1.0, 1.0], "l1-wavelet": [9.0, 30.0, 9.0, 9.0]},
    }
    return row, first


def test_statistic_sums_squared_errors_over_both_heldout_sets():
    assert first_fit_columns(20) == 2 and first_fit_columns(3) == 1 and first_fit_columns(2) == 1
    row, first = _rows(first_sgilo=2.0, part_sgilo=5.0, sgilo_psnr=30.0)
    assert statistic(row, first, None) == pytest.approx(2.0)  # 2 / 1 on the first draw
    # 8 samples in the first draw: (2·8 + 5) / (1·8 + 10), tv the lower classical sum
    assert statistic(row, first, 1) == pytest.approx(21 / 18)


def test_loss_table_follows_the_statistic_and_picks_classical_by_all_parts():
    row, first = _rows(first_sgilo=2.0, part_sgilo=5.0, sgilo_psnr=30.0)  # prior +3 dB
    by_first = {t["tau"]: t for t in loss_table([row], [first], None)}
    by_both = {t["tau"]: t for t in loss_table([row], [first], 1)}
    # at tau 1.2 the first draw alone (ratio 2) sends the slice to tv (3 dB lost); with part 1
    # (ratio 1.17) the prior is kept
    assert by_first[1.2]["mean_loss_to_best"] == pytest.approx(3.0)
    assert by_both[1.2]["mean_loss_to_best"] == 0.0
    assert by_both[1.0]["worst_loss_to_classical"] == 0.0  # tv: the best classical, picked


def test_tables_cover_the_parts_that_were_fitted(tmp_path, capsys):
    import json

    from sgilo.pipeline.research.auto_second_fit import main

    row, first = _rows(first_sgilo=2.0, part_sgilo=5.0, sgilo_psnr=30.0)
    row["generative"] = [None, 5.0, None, None]  # `--parts 1`: SGILO fitted with part 1 out
    (tmp_path / "rows.json").write_text(json.dumps([row]))
    (tmp_path / "first.json").write_text(json.dumps([first]))
    args = ["--rows", str(tmp_path / "rows.json"), "--margin-rows", str(tmp_path / "first.json")]
    assert main(args) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| τ"))
    assert header == "| τ | first fit | + part 1 |"
