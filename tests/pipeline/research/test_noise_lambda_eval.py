"""The scoring of a noise rule for λ on measured rows (pipeline/research/noise_lambda_eval.py)."""

from __future__ import annotations

import pytest

from sgilo.pipeline.research.noise_lambda_eval import FACTORS, rule_gain


def _row(snr: float, setting: str, r: list[float], psnr: list[list[float]]) -> dict:
    return {"snr": snr, "setting": setting, "sigma_rel": r, "l1-wavelet": psnr}


def test_rule_gain_interpolates_in_log_lambda_and_keeps_quiet_slices():
    """A slice under ``r_0`` keeps the default (gain 0); one at ``r = 3 r_0`` with ``p = 1`` takes
    the factor-3 PSNR; ``r = √30 r_0`` lies halfway in log λ between factors 3 and 10; factors
    beyond 30 are held at 30; single-coil rows are not scored for the 8-coil kind."""
    assert FACTORS == (1 / 3, 1.0, 3.0, 10.0, 30.0)
    psnr = [[10.0, 10.0, 10.0], [20.0, 20.0, 20.0], [23.0, 23.0, 23.0], [25.0, 25.0, 25.0]]
    psnr.append([24.0, 24.0, 24.0])
    rows = [
        _row(12.0, "8-coil 4x", [0.005, 0.03, 0.01 * 30**0.5], psnr),
        _row(12.0, "single-coil 4x", [1.0, 1.0, 1.0], psnr),
    ]
    out = rule_gain(rows, "l1-wavelet", "8-coil", 0.01, 1.0)
    halfway = 23.0 + (25.0 - 23.0) * 0.5  # log √30 is halfway between log 3 and log 10
    assert out["per_case"] == {"12 dB 8-coil 4x": pytest.approx((0 + 3 + halfway - 20) / 3)}
    assert out["worst"] == 0.0
    capped = rule_gain(rows, "l1-wavelet", "8-coil", 0.0001, 1.0)  # factors beyond 30: held
    assert capped["per_case"]["12 dB 8-coil 4x"] == pytest.approx(4.0)
