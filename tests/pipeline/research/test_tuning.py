"""`sgilo tune-classical`'s sweep restricted to chosen methods and values
(pipeline/research/tuning.py)."""

from __future__ import annotations

import pytest
import torch

from sgilo.pipeline.research.tuning import run


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """``run`` sets torch to 2 threads for the CLI; restore the suite's setting
    (tests/conftest.py) so that later tests do not run under another thread count (and so other
    roundings) depending on which tests ran before them."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_run_sweeps_only_the_chosen_methods_and_values():
    rows, best = run(num_slices=1, only=("cg-sense",), values=(3.0,))
    assert {r.method for r in rows} == {"zero-filled", "cg-sense"}
    swept = [r for r in rows if r.method == "cg-sense"]
    assert {r.setting for r in swept} == {"8-coil 4x", "8-coil 8x"}  # multi-coil only
    assert all(r.lam == 3.0 for r in swept)
    assert best == {("cg-sense", "multi-coil"): 3.0}


def test_run_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="cannot tune sense-magic"):
        run(num_slices=1, only=("sense-magic",))
