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

Early stop: the race runs its steps in full; from the hand-over on, the batch-wide rule of the
fit over the leaders (``patience``, :class:`sgilo.pipeline.solvers.host_sync.DeviceEarlyStop`),
its count starting there. With early stop the leaders may therefore end at other steps than the
restarts run alone (at the defaults, 100 steps, patience 20 and the learning rate ramped down over
the last 25, the batch-wide rule did not fire before the ramp on 16 slices, docs/SPEED.md §10).

The result's ``restart_losses`` give each restart's lowest loss per slice over the steps it ran
for that slice, ``steps_run`` each restart's longest run (``race``, plus the steps after the
hand-over for a restart that leads some slice), ``history`` the per-step mean loss of the race,
then of the leaders.
"""

from __future__ import annotations

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
from sgilo.pipeline.solvers.host_sync import DeviceEarlyStop, resolve_sync_every
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
    ``0 < race < steps``, ``restarts ≥ 2``). The start latents are drawn from ``rng`` restart
    after restart, as the sequential fit draws them.
    ``callback(done, total, message)`` after every step, a racing step counting ``R``:
    ``total = R·race + (steps − race)``."""
    restarts, steps, batch = config.restarts, config.steps, problem.batch
    if not races(restarts, race, steps):
        raise ValueError(f"a race needs 2 or more restarts and 0 < race < steps, got {config}")
    dtype, device = problem.dtype, problem.device
    dim = generator.style_dim
    total = restarts * race + steps - race
    synthesize = synthesis(generator, config.compile)
    rows = ChainBatch(problem, restarts)
    shape = (batch, dim)
    draws = [randn_from(shape, rng, dtype=dtype, device=device) for _ in range(restarts)]
    z = torch.cat(draws).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=config.lr)
    restart_of_row = torch.arange(restarts, device=device).repeat_interleave(batch)
    by_row = Kept.empty(restarts * batch, dim, dtype, device)
    history: list[torch.Tensor] = []
    with frozen(generator):
        for step in range(race):
            data, current = evaluate_latent(rows, generator, z, synthesize)
            by_row.take(current < by_row.loss, current, z, restart_of_row)
            history.append(current.mean())
            adam_step(optimizer, z, data, config, step)
            if callback:
                callback(restarts * (step + 1), total, f"{label} race")
        # the hand-over: per slice the row with the lowest loss so far
        leader = by_row.loss.view(restarts, batch).argmin(dim=0)
        index = leader * batch + torch.arange(batch, device=device)
        kept = by_row.rows(index)
        z, optimizer = _continue(optimizer, z, index, config.lr)
        every = resolve_sync_every(config.host_sync_every, device)
        stop = DeviceEarlyStop(batch, device, patience, every=every, per_slice=False)

        def on_step(step: int) -> None:
            if callback:
                callback(restarts * race + step - race + 1, total, f"{label} leaders")

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
    columns = torch.arange(batch, device=device)
    lowest[leader, columns] = torch.minimum(lowest[leader, columns], stop.lowest)
    leading = set(leader.tolist())
    return InputLatentFit(
        kept.z,
        kept.loss,
        kept.restart,
        lowest.tolist(),
        torch.stack(history).tolist() if history else [],
        [race + (ran if r in leading else 0) for r in range(restarts)],
    )


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
