"""CSGM's restarts raced: side by side for the first steps, then only each slice's leader.

:func:`sgilo.pipeline.solvers.csgm.fit_input_latent` runs its ``R`` random restarts one after
the other, each for its full schedule, and keeps per slice the lowest measurement loss over all.
Most of the time the restart that wins is clear halfway: on 16 MNI training slices
(docs/SPEED.md §10) the restart ahead at step 50 of 100 was the final winner on 14, and keeping
the leader there raised the kept loss by 0.2 % on average (2 % at most). :func:`race_input_latent`
therefore runs the ``R`` restarts as one batch of ``R·B`` rows (restart-major, as
:class:`sgilo.pipeline.solvers.chains.ChainBatch`) for the first ``race`` steps of the schedule,
then per slice keeps only the row with the lowest measurement loss so far (the leader) and
continues it, with its Adam moments, on the same learning-rate schedule to ``steps``:

    row-steps per slice:  R·race + (steps − race)   instead of   R·steps

(150 instead of 200 at ``R = 2``, ``race = 50``, ``steps = 100``). Without early stop the
leader's trajectory is the one it runs alone (the same start, schedule, gradients and Adam
moments, up to the float rounding of a batch of another size). As before, per slice the kept
iterate is the one with the lowest measurement loss over every evaluated step of every restart
(never a ground truth).

Early stop (``patience``, :class:`sgilo.pipeline.solvers.host_sync.DeviceEarlyStop`): in the
race, the rule of the restarts run one after the other, restart by restart: a restart leaves the
race once none of its slices has improved for ``patience`` steps (its rows are no longer
synthesized, its latent stays where it stopped), and the race ends early when every restart has
left. At the hand-over the leader of a slice is the restart with the lowest loss so far among
those still racing (one that left has stalled: continuing it would not pay), while the kept
iterate starts as the lowest of every restart, one that left included; a slice whose restarts
have all left keeps that and is not continued (as restarts run alone that stopped there). The
leaders go on under the batch-wide rule, each slice's count (its lowest loss, the steps since it
improved) going on from the race, as in the restart run alone. So the race costs about what the
restarts run alone cost where early stop ends them early (until 2026-12-07 it ran its steps in
full: 450 row-steps per slice against 256 at 8-coil 4×, docs/SPEED.md §21), and the leaders may
end at other steps than the restarts run alone.

The result's ``restart_losses`` give each restart's lowest loss per slice over the steps it ran
for that slice, ``steps_run`` each restart's longest run (the step it left the race at, or
``race`` plus the steps after the hand-over for a restart that leads some slice), ``history`` the
per-step mean loss of the race (over the restarts still in it), then of the leaders.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sgilo.pipeline.solvers.base import Progress
from sgilo.pipeline.solvers.chains import ChainBatch
from sgilo.pipeline.solvers.compiled import synthesis
from sgilo.pipeline.solvers.csgm import (
    CSGMConfig,
    InputLatentFit,
    Kept,
    LatentGenerator,
    adam_step,
    descend,
    evaluate_latent,
    fit_input_latent,
)
from sgilo.pipeline.solvers.generator_state import frozen
from sgilo.pipeline.solvers.host_sync import DeviceEarlyStop, FrozenRows, resolve_sync_every
from sgilo.pipeline.solvers.problem import ImageProblem, Problem
from sgilo.pipeline.solvers.random_source import randn_from


def races(restarts: int, race: int, steps: int) -> bool:
    """Whether ``restarts`` restarts of ``steps`` steps race for ``race`` steps (two or more
    restarts and ``0 < race < steps``; otherwise they run one after the other)."""
    return restarts > 1 and 0 < race < steps


def fit_restarts(
    problem: Problem | ImageProblem,
    generator: LatentGenerator,
    config: CSGMConfig,
    race: int,
    **options: object,
) -> InputLatentFit:
    """CSGM's fit of ``problem`` with ``config``'s restarts: raced for ``race`` steps when
    :func:`races`, else one after the other (:func:`~sgilo.pipeline.solvers.csgm.
    fit_input_latent`); ``options`` (``rng``, ``callback``, ``label``, ``patience``) go to the
    fit."""
    if races(config.restarts, race, config.steps):
        return race_input_latent(problem, generator, config, race, **options)
    return fit_input_latent(problem, generator, config, **options)


def race_input_latent(
    problem: Problem | ImageProblem,
    generator: LatentGenerator,
    config: CSGMConfig,
    race: int,
    *,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
    label: str = "start",
    patience: int | None = None,
) -> InputLatentFit:
    """CSGM's fit of ``problem`` (``B`` slices) as
    :func:`~sgilo.pipeline.solvers.csgm.fit_input_latent` with ``config``'s ``restarts``,
    ``steps`` and schedule, the restarts raced for the first ``race`` steps (module docstring;
    ``0 < race < steps``, ``restarts ≥ 2``); with ``patience``, a restart leaves the race when
    none of its slices improved for that many steps. The start latents are drawn from ``rng``
    restart after restart, as the sequential fit draws them.
    ``callback(done, total, message)`` after every step, a racing step counting ``R``:
    ``total = R·race + (steps − race)``."""
    restarts, steps, batch = config.restarts, config.steps, problem.batch
    if not races(restarts, race, steps):
        raise ValueError(f"a race needs 2 or more restarts and 0 < race < steps, got {config}")
    dtype, device = problem.dtype, problem.device
    dim = generator.style_dim
    total = restarts * race + steps - race
    synthesize = synthesis(generator, config.compile)
    shape = (batch, dim)
    draws = [randn_from(shape, rng, dtype=dtype, device=device) for _ in range(restarts)]
    z = torch.cat(draws).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=config.lr)
    restart_of_row = torch.arange(restarts, device=device).repeat_interleave(batch)
    by_row = Kept.empty(restarts * batch, dim, dtype, device)
    history: list[torch.Tensor] = []
    every = resolve_sync_every(config.host_sync_every, device)
    # each restart's slices as one group: CSGM's batch-wide rule, restart by restart
    in_race = DeviceEarlyStop(
        restarts * batch,
        device,
        patience,
        every=every,
        per_slice=False,
        groups=restarts,
        compact=config.compile == "off",  # a compiled generator would recompile per batch size
    )
    hold = FrozenRows([z], in_race)  # a restart that left keeps its latent
    with frozen(generator):
        for step in range(race):
            rows = in_race.rows  # the rows racing at the host's last read (None: all)
            data, current = _evaluate_running(problem, generator, z, rows, synthesize)
            wins = (current < by_row.loss) & in_race.active
            in_race.observe(current)
            by_row.take(wins, current, z, restart_of_row)
            in_race.advance(step)
            if in_race.check(step):  # every restart has left
                break
            running = in_race.running
            history.append(torch.where(running, current, 0).sum() / running.sum().clamp(min=1))
            hold.before()
            adam_step(optimizer, z if rows is None else z[rows], data, config, step)
            hold.after()
            if callback:
                callback(restarts * (step + 1), total, f"{label} race")
        # the hand-over: per slice the racing row with the lowest loss so far goes on; the kept
        # iterate starts as the lowest of every row (a restart that left included)
        columns = torch.arange(batch, device=device)
        losses = by_row.loss.view(restarts, batch)
        racing = in_race.running.view(restarts, batch)
        left = ~racing.any(dim=0)  # no restart of the slice races on: nothing to continue
        leader = torch.where(racing, losses, math.inf).argmin(dim=0)
        leader = torch.where(left, losses.argmin(dim=0), leader)
        kept = by_row.rows(losses.argmin(dim=0) * batch + columns)
        index = leader * batch + columns
        z, optimizer = _continue(optimizer, z, index, config.lr)
        stop = DeviceEarlyStop(batch, device, patience, every=every, per_slice=False)
        stop.running = stop.running & ~left
        # each leader's early-stop count goes on from the race, as in a restart run alone
        stop.lowest, stop.stalled = in_race.lowest[index], in_race.stalled[index]

        def on_step(step: int) -> None:
            if callback:
                callback(restarts * race + step - race + 1, total, f"{label} leaders")

        after, ran = [], 0
        if not bool(left.all()):  # (every restart left the race: nothing to continue)
            after, ran = descend(
                problem,
                generator,
                z,
                optimizer,
                config,
                first=race,
                kept=kept,
                restart=leader,
                stop=stop,
                synthesize=synthesize,
                on_step=on_step,
            )
    history += after
    lowest = by_row.loss.view(restarts, batch).clone()
    lowest[leader, columns] = torch.minimum(lowest[leader, columns], stop.lowest)
    leading = set(leader[~left].tolist())
    ended = in_race.stop_step.view(restarts, batch)[:, 0].tolist()  # -1: raced to the end
    return InputLatentFit(
        kept.z,
        kept.loss,
        kept.restart,
        lowest.tolist(),
        torch.stack(history).tolist() if history else [],
        [(race if e < 0 else e) + (ran if r in leading else 0) for r, e in enumerate(ended)],
    )


def _evaluate_running(
    problem: Problem | ImageProblem,
    generator: LatentGenerator,
    z: torch.Tensor,
    rows: torch.Tensor | None,
    synthesize: Callable[..., torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~sgilo.pipeline.solvers.csgm.evaluate_latent` of the race's rows ``z``
    ``(R·B, D)``, restart-major; ``rows``: the rows of the restarts still racing (``None``: all),
    whole restarts in order. Returns the per-row loss of those rows with its graph and the
    detached loss of every row, ``inf`` on rows not computed."""
    batch = problem.batch
    if rows is None:
        return evaluate_latent(ChainBatch(problem, z.shape[0] // batch), generator, z, synthesize)
    data, current = evaluate_latent(
        ChainBatch(problem, rows.numel() // batch), generator, z[rows], synthesize
    )
    full = torch.full((z.shape[0],), math.inf, dtype=current.dtype, device=current.device)
    return data, full.index_copy(0, rows, current)


def _continue(
    optimizer: torch.optim.Optimizer, z: torch.Tensor, index: torch.Tensor, lr: float
) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    """The rows ``index`` of the latent ``z`` and of its Adam state (moments and step count), as
    a new leaf and optimizer that go on where these left off."""
    state = optimizer.state_dict()
    state["state"] = {
        key: {**entry, "exp_avg": entry["exp_avg"][index], "exp_avg_sq": entry["exp_avg_sq"][index]}
        for key, entry in state["state"].items()
    }
    kept = z.detach()[index].requires_grad_(True)  # (indexing copies)
    continued = torch.optim.Adam([kept], lr=lr)
    continued.load_state_dict(state)
    return kept, continued
