"""The CSGM start's raced restarts (pipeline/solvers/raced_restarts.py): each slice's leader runs
the trajectory it runs alone, Adam moments included; the others stop at the hand-over."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from sgilo.operators.masks import column_mask
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.solvers.csgm import CSGMConfig, fit_input_latent
from sgilo.pipeline.solvers.problem import prepare_problem
from sgilo.pipeline.solvers.raced_restarts import race_input_latent
from sgilo.pipeline.solvers.warm_start import WarmStartConfig, csgm_start

R = 16  # the resolution of the `gen_stats` generator (tests/pipeline/conftest.py)
STEPS, RACE, RESTARTS = 24, 8, 3


def _problem(gen, slices: int = 4):
    mask = torch.from_numpy(column_mask("equispaced", R, 0.25, 4, seed=0).astype(np.float32))
    op = SingleCoilMRI(mask, shape=(R, R))
    with torch.no_grad():
        z = torch.randn(slices, gen.style_dim, generator=torch.Generator().manual_seed(5))
        x = ((gen(z)[:, 0] + 1) / 2).to(torch.complex64)
    return prepare_problem(op.A(x), op, gen, phase="none", normalize=False, fit_gain=False)


def test_each_leader_runs_its_own_trajectory(gen_stats):
    """Against the restarts run one after the other (same draws, no early stop): per slice the
    leader's lowest loss is the one its full run reaches alone (so its Adam state went on where
    it was), every other restart's is that of a prefix of its run, and the kept loss is the
    lowest of these."""
    gen, _ = gen_stats
    problem = _problem(gen)
    config = CSGMConfig(steps=STEPS, restarts=RESTARTS)
    alone = fit_input_latent(problem, gen, config, rng=torch.Generator().manual_seed(9))
    seen = []
    raced = race_input_latent(
        problem,
        gen,
        config,
        RACE,
        rng=torch.Generator().manual_seed(9),
        callback=lambda done, total, message: seen.append((done, total)),
    )
    full = torch.tensor(alone.restart_losses, dtype=torch.float64)  # (R, B): lowest of each run
    ran = torch.tensor(raced.restart_losses, dtype=torch.float64)
    leader = raced.restart
    assert len(set(leader.tolist())) > 1  # slices led by different restarts (the row indexing)
    columns = torch.arange(problem.batch)
    torch.testing.assert_close(ran[leader, columns], full[leader, columns], rtol=1e-4, atol=0)
    assert (ran >= full * (1 - 1e-4)).all()  # the others: the lowest of a prefix
    torch.testing.assert_close(raced.loss, ran.min(dim=0).values, rtol=0, atol=0)
    assert raced.z.shape == (problem.batch, gen.style_dim)
    # the cost: R·race + (steps − race) steps, each reported
    total = RESTARTS * RACE + STEPS - RACE
    assert seen[-1] == (total, total) and len(seen) == STEPS
    leading = set(leader.tolist())
    assert raced.steps_run == [STEPS if r in leading else RACE for r in range(RESTARTS)]
    assert len(raced.history) == STEPS


def test_a_slice_whose_late_winner_loses_the_race(gen_stats):
    """Where the sequential fit's winner is not ahead at the hand-over, the race keeps the
    leader: the kept loss may be higher, never lower than the sequential fit's (which saw every
    step of every restart)."""
    gen, _ = gen_stats
    problem = _problem(gen, slices=6)
    config = CSGMConfig(steps=STEPS, restarts=RESTARTS)
    alone = fit_input_latent(problem, gen, config, rng=torch.Generator().manual_seed(2))
    raced = race_input_latent(problem, gen, config, RACE, rng=torch.Generator().manual_seed(2))
    assert (raced.loss >= alone.loss * (1 - 1e-4)).all()
    late = raced.restart != alone.restart  # here 2 of 6 slices (losses 1.11 and 1.47 times)
    assert late.any() and (raced.loss[late] > alone.loss[late]).all()


@pytest.mark.parametrize("every", [1, 4])
def test_a_stalled_restart_leaves_the_race_and_the_leaders_stop_early(gen_stats, every):
    """With a patience, a restart whose slices all stalled leaves the race, the leaders stop
    batch-wide after the hand-over with the count of the race, so each restart ends at the step
    it ends at when the restarts run one after the other, with the same kept loss; a host read
    every 4 steps keeps what a read every step keeps (nothing counts past a stop)."""
    gen, _ = gen_stats
    problem = _problem(gen, slices=1)
    config = CSGMConfig(steps=80, restarts=2, lr=0.3, host_sync_every=every)

    def run(fit, **update):
        return fit(
            problem,
            gen,
            config.model_copy(update=update),
            rng=torch.Generator().manual_seed(3),
            patience=3,
        )

    raced = run(partial(race_input_latent, race=RACE))
    every_step = run(partial(race_input_latent, race=RACE), host_sync_every=1)
    alone = run(fit_input_latent)
    left, led = raced.steps_run
    assert left < RACE < led < 80  # here 5 and 10
    assert raced.steps_run == alone.steps_run
    torch.testing.assert_close(raced.loss, alone.loss, rtol=1e-5, atol=0)
    assert raced.restart.tolist() == alone.restart.tolist() == [1]
    assert len(raced.history) == led
    assert raced.steps_run == every_step.steps_run
    torch.testing.assert_close(raced.loss, every_step.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(raced.z, every_step.z, rtol=1e-5, atol=1e-6)


def test_when_every_restart_leaves_the_race_nothing_goes_on(gen_stats):
    """Every restart stalls within the race: it ends there, no leader is continued, and the
    kept iterate is the lowest of every restart's steps."""
    gen, _ = gen_stats
    problem = _problem(gen, slices=2)
    config = CSGMConfig(steps=80, restarts=2, lr=1e-6)  # too small a step to improve by 1e-3
    seen = []
    raced = race_input_latent(
        problem,
        gen,
        config,
        40,
        rng=torch.Generator().manual_seed(3),
        patience=2,
        callback=lambda done, total, message: seen.append(message),
    )
    assert raced.steps_run == [2, 2]
    assert not any("leaders" in m for m in seen)
    lowest = torch.tensor(raced.restart_losses, dtype=torch.float64).min(dim=0).values
    torch.testing.assert_close(raced.loss, lowest, rtol=0, atol=0)


def test_bad_races_are_refused(gen_stats):
    gen, _ = gen_stats
    problem = _problem(gen, slices=1)
    with pytest.raises(ValueError, match="race"):
        race_input_latent(problem, gen, CSGMConfig(steps=10, restarts=1), 5)
    with pytest.raises(ValueError, match="race"):
        race_input_latent(problem, gen, CSGMConfig(steps=10, restarts=2), 10)


def test_the_start_races_by_default(gen_stats):
    """The ILO/SGILO start races (50 of 100 steps, 2 restarts: 150 steps' cost); ``init_race=0``
    runs the restarts one after the other, as does a race as long as the schedule."""
    gen, (mu, sigma) = gen_stats
    problem = _problem(gen, slices=2)
    default = WarmStartConfig()
    assert default.races() and default.init_steps_total() == 150
    assert not WarmStartConfig(init_race=0).races()
    assert WarmStartConfig(init_race=0).init_steps_total() == 200
    assert not WarmStartConfig(init_race=100).races()
    assert not WarmStartConfig(init_restarts=1).races()
    counts = {}
    for race in (0, 4):
        seen = []
        config = WarmStartConfig(init_steps=12, init_race=race, init_early_stop=False)
        csgm_start(
            problem,
            gen,
            mu,
            sigma,
            config,
            rng=torch.Generator().manual_seed(1),
            callback=lambda done, total, message, seen=seen: seen.append((done, total, message)),
        )
        counts[race] = seen[-1][:2]
        assert counts[race] == (config.init_steps_total(),) * 2
        assert ("race" in seen[0][2]) == (race > 0)
    assert counts == {0: (24, 24), 4: (16, 16)}
