"""Early stopping on the device (`host_sync_every`): CSGM, ILO and SGILO give the same result,
up to the float rounding of the generator on batches of other sizes, whether the host reads the
stops every step (ended slices leave the generator's batch at once) or every few (the loops then
run past the stops and are put back); the per-slice stop; the projection without host reads; the
random source."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from sgilo.models.score.model import ScoreModel
from sgilo.models.score.network import ConvScoreNetConfig, MLPScoreNetConfig, build_network
from sgilo.operators.masks import column_mask
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm
from sgilo.pipeline.solvers.host_sync import (
    AUTO_SYNC_EVERY,
    DeviceEarlyStop,
    resolve_sync_every,
)
from sgilo.pipeline.solvers.ilo import ILOConfig, ilo
from sgilo.pipeline.solvers.projections import (
    check_radius,
    l1_ball_project_around_,
    l1_ball_project_around_nosync_,
)
from sgilo.pipeline.solvers.random_source import RNG_DEVICE_ENV, randn_from, solver_rng
from sgilo.pipeline.solvers.sgilo import SGILOConfig, sgilo

R = 16
PLAIN = dict(phase="none", normalize=False, fit_gain=False, data_consistency=False)


def _problem(gen, batch=2):
    mask = torch.from_numpy(column_mask("random", R, 0.25, 4, seed=0).astype(np.float32))
    op = SingleCoilMRI(mask, shape=(R, R))
    with torch.no_grad():
        z = torch.randn(batch, gen.style_dim, generator=torch.Generator().manual_seed(5))
        x = ((gen(z)[:, 0] + 1) / 2).to(torch.complex64)
    return op.A(x), op


def _score_model(shape) -> ScoreModel:
    """An untrained score model (zero network + Gaussian skip): the prior N(0, I)."""
    if len(shape) == 2:
        net = MLPScoreNetConfig(
            n_rows=shape[0], dim=shape[1], hidden=8, depth=1, row_hidden=4, time_dim=4
        )
    else:
        net = ConvScoreNetConfig(
            channels=shape[0], resolution=shape[1], hidden=8, depth=1, groups=4, time_dim=4
        )
    return ScoreModel(build_network(net)).eval().requires_grad_(False)


def _overshoots(steps_run, every) -> bool:
    """Some loop stopped at a step after which the host did not read (so it ran past it)."""
    return any((s + 1) % every for s in steps_run)


def test_auto_reads_every_step_on_the_cpu_only():
    assert resolve_sync_every("auto", "cpu") == 1
    assert resolve_sync_every("auto", "cuda") == AUTO_SYNC_EVERY > 1
    assert resolve_sync_every(3, "cpu") == 3
    with pytest.raises(ValueError):
        CSGMConfig(host_sync_every=0)


def _close(a, b, rtol=1e-5) -> bool:
    """Equal up to float rounding (relative to the largest entry)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return bool(torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max())))


def test_device_early_stop_freezes_at_the_stop_step():
    stop = DeviceEarlyStop(1, torch.device("cpu"), patience=2, every=4)
    losses = [1.0, 0.5, 0.5, 0.5, 0.1, 0.05]  # stalls at steps 2 and 3: stops at 3
    reads = []
    for step, value in enumerate(losses):
        stop.observe(torch.tensor([value], dtype=torch.float64))
        stop.advance(step)
        reads.append(stop.check(step))
    assert reads == [False, False, False, True, False, False]  # read after steps 3 (and 7)
    assert stop.stopped_at() == 3
    assert float(stop.lowest[0]) == 0.5  # the later improvements did not count


def test_each_slice_stops_on_its_own():
    """Slice 0 stalls at once, slice 1 improves until step 4: slice 0 ends at step 2, leaves the
    running rows at the next read, and the loop ends at slice 1's stop (step 6)."""
    stop = DeviceEarlyStop(2, torch.device("cpu"), patience=2)
    losses = [(1.0, 9.0), (1.0, 8.0), (1.0, 7.0), (1.0, 6.0), (1.0, 5.0), (1.0, 5.0), (1.0, 5.0)]
    ended, rows = [], []
    for step, values in enumerate(losses):
        now = stop.observe(torch.tensor(values, dtype=torch.float64))
        stop.advance(step)
        ended.append(now.tolist())
        done = stop.check(step)
        rows.append(None if stop.rows is None else stop.rows.tolist())
        assert done == (step == 6)
    assert ended[2] == [True, False] and ended[6] == [False, True]
    assert rows[:2] == [None, None] and rows[2:6] == [[1]] * 4 and rows[6] == []
    assert stop.stopped_at() == 6 and stop.slice_steps(6) == [2, 6]
    assert float(stop.lowest[1]) == 5.0


def test_the_batch_wide_rule_ends_every_slice_together():
    """``per_slice=False`` (CSGM): the slices of the test above end together, at the first step
    where both have stalled for ``patience`` steps."""
    stop = DeviceEarlyStop(2, torch.device("cpu"), patience=2, per_slice=False)
    losses = [(1.0, 9.0), (1.0, 8.0), (1.0, 7.0), (1.0, 6.0), (1.0, 5.0), (1.0, 5.0), (1.0, 5.0)]
    for step, values in enumerate(losses):
        now = stop.observe(torch.tensor(values, dtype=torch.float64))
        assert now.tolist() == [step == 6] * 2
        stop.advance(step)
        assert stop.check(step) == (step == 6)
    assert stop.slice_steps(6) == [6, 6]


def test_a_forced_stop_replays_a_run():
    """``observe(force=...)`` ends slices whatever their losses; without patience nothing else
    ends them, and a slice never ended ran the whole loop."""
    stop = DeviceEarlyStop(3, torch.device("cpu"), patience=None)
    for step in range(5):
        force = torch.tensor([step == 1, step == 3, False])
        stop.observe(torch.ones(3, dtype=torch.float64), force)
        stop.advance(step)
        assert not stop.check(step)
    assert stop.stopped_at() is None and stop.slice_steps(5) == [1, 3, 5]


def test_ended_slices_leave_the_generator_batch(monkeypatch, gen_stats):
    """ILO's rounds: with the host reading every step, the generator runs on fewer rows once a
    slice ended, never more within a round; CSGM keeps the batch-wide rule (every call on the
    whole batch). That ended slices change nothing is the host-sync equality above."""
    gen, stats = gen_stats
    y, op = _problem(gen, batch=4)
    sizes: list[tuple[int, int]] = []  # (start block, rows)
    synthesize = gen.synthesize

    def recorded(ws, noises=None, **kw):
        sizes.append((kw.get("start", 0), ws.shape[0]))
        return synthesize(ws, noises, **kw)

    monkeypatch.setattr(gen, "synthesize", recorded)
    config = ILOConfig(steps=(40, 40), patience=3, init="random", **PLAIN)
    out = ilo(y, op, generator=gen, latent_stats=stats, config=config)
    assert all(s < 40 for s in out.diagnostics.steps_run)
    for k, ran in enumerate(out.diagnostics.steps_run):
        rows = [n for start, n in sizes if start == k][: ran + 1]  # the round's steps
        assert rows[0] == 4 and min(rows) < 4  # some slice ended before the last
        assert all(a >= b for a, b in zip(rows, rows[1:], strict=False))
    sizes.clear()
    config = CSGMConfig(steps=60, restarts=1, patience=4, lr=1.0, **PLAIN)
    csgm(y, op, generator=gen, config=config, rng=torch.Generator().manual_seed(3))
    assert {n for _, n in sizes} == {4}


def test_csgm_is_the_same_for_every_host_sync(gen_stats):
    gen, _ = gen_stats
    y, op = _problem(gen)

    def run(every):
        config = CSGMConfig(
            steps=60, restarts=2, patience=4, lr=1.0, host_sync_every=every, **PLAIN
        )
        return csgm(y, op, generator=gen, config=config, rng=torch.Generator().manual_seed(3))

    ref = run(1)
    assert max(ref.diagnostics.steps_run) < 60  # it stopped early
    for every in (5, 7):
        out = run(every)
        assert _overshoots(ref.diagnostics.steps_run, every)
        assert torch.equal(out.image, ref.image)  # CSGM's batch-wide stop: no batch changes
        assert out.history == ref.history
        assert out.diagnostics.steps_run == ref.diagnostics.steps_run
        assert out.diagnostics.restart_losses == ref.diagnostics.restart_losses
        assert out.diagnostics.chosen_restart == ref.diagnostics.chosen_restart


def test_sgilo_with_langevin_noise_is_the_same_for_every_host_sync(gen_stats):
    """The rounds run past their stop steps and are put back, the random generator included
    (round 2's noise is the same); no ℓ1 ball, so no projection differs: equal up to the
    generator's rounding on batches of other sizes."""
    gen, stats = gen_stats
    y, op = _problem(gen)
    models = {
        "z": _score_model((gen.n_latent, gen.style_dim)),
        0: _score_model((gen.block_channels(0), 4, 4)),
    }

    def run(every):
        config = SGILOConfig(
            steps=(40, 40, 30),
            chains=2,
            patience=3,
            lr=0.2,
            tau=0.2,
            radius_fraction=None,
            init="random",
            host_sync_every=every,
            **PLAIN,
        )
        rng = torch.Generator().manual_seed(11)
        return sgilo(
            y, op, generator=gen, latent_stats=stats, score_models=models, config=config, rng=rng
        )

    ref = run(1)
    assert all(s < 30 for s in ref.diagnostics.steps_run)  # every round stopped early
    for every in (4, 6):
        out = run(every)
        assert _overshoots(ref.diagnostics.steps_run, every)
        assert _close(out.samples, ref.samples)
        assert _close(out.history, ref.history)
        assert out.diagnostics.steps_run == ref.diagnostics.steps_run
        assert _close(out.diagnostics.round_losses, ref.diagnostics.round_losses)
        assert _close(out.diagnostics.measurement_losses, ref.diagnostics.measurement_losses)


def test_ilo_is_the_same_for_every_host_sync_up_to_the_threshold_rounding(gen_stats):
    """ILO's ℓ1 balls without host reads find the threshold by sorting (Michelot's iteration
    otherwise, for variables of more than 2048 entries): the same steps and nearly the same
    image."""
    gen, stats = gen_stats
    y, op = _problem(gen)

    def run(every):
        config = ILOConfig(
            steps=(40, 40, 30), patience=3, init="csgm", init_steps=20, host_sync_every=every
        )
        return ilo(
            y,
            op,
            generator=gen,
            latent_stats=stats,
            config=config,
            rng=torch.Generator().manual_seed(2),
        )

    ref, out = run(1), run(5)
    assert all(s < 30 for s in ref.diagnostics.steps_run)
    assert _overshoots(ref.diagnostics.steps_run, 5)
    assert out.diagnostics.steps_run == ref.diagnostics.steps_run
    # the threshold's rounding and the generator's on smaller batches, compounded over rounds
    assert _close(out.image, ref.image, rtol=1e-4)
    assert _close(out.history, ref.history, rtol=1e-4)


def _host_reads(monkeypatch, run) -> int:
    """How often ``run()`` reads a tensor's value on the host (``bool``, ``float``, ``int``,
    ``item``, ``tolist``) from outside torch (Adam reads its CPU step counter: not a device
    read)."""
    count = [0]
    for name in ("__bool__", "__float__", "__int__", "__index__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            if "/torch/" not in sys._getframe(1).f_code.co_filename:
                count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    run()
    monkeypatch.undo()
    return count[0]


@pytest.mark.parametrize("method", ["ilo", "sgilo", "csgm"])
def test_host_reads_per_step_fall_to_one_in_n(monkeypatch, gen_stats, method):
    """60 more steps (20 more in each of ILO's/SGILO's 3 rounds, 60 more in CSGM's restart)
    cost at most ⌈steps / N⌉ + 1 more host reads per loop with ``host_sync_every=N`` (the
    early stop's), against at least one a step with N = 1."""
    gen, stats = gen_stats
    y, op = _problem(gen)
    models = {"z": _score_model((gen.n_latent, gen.style_dim))}
    loops = 1 if method == "csgm" else 3

    def reads(every: int, steps: int) -> int:
        def run() -> None:
            kw = dict(patience=10**6, host_sync_every=every, **PLAIN)  # never stops
            if method == "csgm":
                csgm(y, op, generator=gen, config=CSGMConfig(steps=steps, restarts=1, **kw))
                return
            kw |= dict(steps=(steps // loops,) * loops, init="random")
            if method == "ilo":
                ilo(y, op, generator=gen, latent_stats=stats, config=ILOConfig(**kw))
            else:
                config = SGILOConfig(**kw)
                sgilo(y, op, generator=gen, latent_stats=stats, score_models=models, config=config)

        return _host_reads(monkeypatch, run)

    every, more = 8, 60
    assert reads(every, 120) - reads(every, 60) <= loops * (math.ceil(more / loops / every) + 1)
    assert reads(1, 120) - reads(1, 60) >= more


@pytest.mark.parametrize("n", [50, 3000])
def test_projection_without_host_reads_equals_the_exact_one(n):
    g = torch.Generator().manual_seed(n)
    center = torch.randn(4, n, generator=g)
    v = center + torch.randn(4, n, generator=g)
    radius = torch.tensor([0.0, 1.0, 10.0, 1e9])  # the last element is inside its ball
    exact = l1_ball_project_around_(v.clone(), center, radius)
    fast = l1_ball_project_around_nosync_(v.clone(), center, check_radius(radius, v))
    assert torch.equal(fast[3], v[3])
    if n <= 2048:  # the same formula: bit for bit
        assert torch.equal(fast, exact)
    else:  # sort against Michelot's iteration: float rounding of the threshold
        assert torch.allclose(fast, exact, atol=1e-5)
    assert torch.allclose((fast - center).abs().sum(dim=1)[1:3], radius[1:3], rtol=1e-4)


def test_random_numbers_come_from_the_generator_device(monkeypatch):
    monkeypatch.delenv(RNG_DEVICE_ENV, raising=False)
    assert solver_rng(0, "cpu").device.type == "cpu"
    monkeypatch.setenv(RNG_DEVICE_ENV, "cpu")
    assert solver_rng(0, "meta").device.type == "cpu"  # forced onto the CPU
    a = randn_from((2, 3), solver_rng(4, "cpu"), dtype=torch.float32, device=torch.device("cpu"))
    b = torch.randn(2, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)  # on the CPU: what the solvers drew before
