"""The rounds of intermediate layer optimisation, shared by ILO and SGILO (docs/ALGORITHMS.md §3).

:func:`run_rounds` runs rounds ``k = 0, 1, …`` of Adam on ``z``, the noise maps of blocks
``k … k + noise_blocks_ahead`` and, from round 1, the previous block output ``h_{k−1}``
(:func:`init_round_state` hands over exactly the image the previous round ended with), on the
measurement loss plus GeoCross (:func:`geocross`); after every step it calls the solver's hook
(ILO: sphere projection and ℓ1 balls, :func:`sgilo.pipeline.solvers.ilo.ball_hook`; SGILO: the
score model's prior step), ends each slice's round early once it stops improving (the ended
slices leave the generator's batch, :mod:`sgilo.pipeline.solvers.host_sync`), and keeps per
slice the iterate with the lowest measurement loss (or held-out loss, :func:`heldout_choice`). The
ILO module docstring (:mod:`sgilo.pipeline.solvers.ilo`) gives the full algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from sgilo.models.stylegan2.checkpoint import LatentStats, gaussianized_to_w
from sgilo.models.stylegan2.generator import Generator, SynthesisState
from sgilo.pipeline.solvers.base import Progress
from sgilo.pipeline.solvers.diagnostics import HeldoutChoice
from sgilo.pipeline.solvers.host_sync import DeviceEarlyStop, FrozenRows, StopSnapshot
from sgilo.pipeline.solvers.problem import Problem
from sgilo.pipeline.solvers.projections import sphere_project_


def geocross(z: torch.Tensor) -> torch.Tensor:
    """PULSE's GeoCross over the rows of ``z`` ``(B, n, D)`` → ``(B,)``: the mean over row pairs
    ``i < j`` of the squared geodesic angle ``(2·atan2(‖z_i − z_j‖, ‖z_i + z_j‖))²``."""
    n = z.shape[1]
    if n < 2:
        return z.new_zeros(z.shape[0])
    i, j = torch.triu_indices(n, n, offset=1, device=z.device)
    a, b = z[:, i], z[:, j]
    angle = 2 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))
    return angle.pow(2).mean(dim=1)


def init_round_state(
    generator: Generator,
    ws: torch.Tensor,
    noises: Sequence[torch.Tensor],
    k: int,
    h_prev: SynthesisState | None = None,
) -> SynthesisState | None:
    """``h_{k−1}`` for round ``k`` from the previous round's solution (``ws``, ``noises`` and, for
    ``k ≥ 2``, its optimised ``h_prev = h_{k−2}``): block ``k − 1`` run on it. ``None`` for
    ``k = 0``. Then ``synthesize(ws, noises, start=k, h=result)`` is the previous round's image."""
    if k == 0:
        return None
    if k == 1:
        return generator.block_output(0, ws, noises)
    if h_prev is None:
        raise ValueError(f"round {k} needs the previous round's h_{k - 2}")
    state = generator.synthesize(ws, noises, start=k - 1, end=k, h=h_prev)
    assert isinstance(state, SynthesisState)
    return state


def latent_stats_on(
    latent_stats: LatentStats, generator: Generator, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``μ, σ`` of the Gaussianized latent on the latent's dtype/device; ``ValueError`` unless
    both are ``(style_dim,)`` vectors."""
    mu = latent_stats.mu.to(device=device, dtype=dtype)
    sigma = latent_stats.sigma.to(device=device, dtype=dtype)
    if mu.shape != (generator.style_dim,) or sigma.shape != (generator.style_dim,):
        raise ValueError(
            f"latent_stats must be ({generator.style_dim},) vectors, got "
            f"{tuple(mu.shape)} and {tuple(sigma.shape)}"
        )
    return mu, sigma


@dataclass(frozen=True)
class EarlyStop:
    """End a slice's round when its measurement loss has not improved by the relative ``tol`` (on
    its lowest value of the round) for ``patience`` steps; the round ends when every slice's
    has."""

    patience: int
    tol: float = 1e-3


@dataclass
class Round:
    """The variables of round ``k`` (``variables = [z, *active noise maps, *h]``), their
    round-start values ``starts`` and the ℓ2 norms the sphere projection restores."""

    k: int
    z: torch.Tensor
    noises: list[torch.Tensor]
    active: list[int]
    h: SynthesisState | None
    variables: list[torch.Tensor]
    starts: list[torch.Tensor]
    z_norms: torch.Tensor
    noise_norms: list[torch.Tensor]
    sync_every: int = 1  # > 1: the hook must not read device values on the host

    @torch.no_grad()
    def sphere_project(self) -> None:
        """In place: each row of ``z`` and each optimised noise map back to its start norm."""
        sphere_project_(self.z, self.z_norms)
        for j, i in enumerate(self.active):
            sphere_project_(self.noises[i], self.noise_norms[j])


@dataclass
class RoundsResult:
    """Of :func:`run_rounds`: the kept image (normalised units) and its loss ``(B,)``, the mean
    loss at the end/start of every round, the last round's per-iterate losses, the step
    counter after the run and the per-slice ``(B,)`` losses at the end/start of every round;
    the steps each round ran (its last slice's) and per round the steps each slice ran
    ``(rounds, B)``; with a hold-out, the kept iterate's held-out loss and round ``(B,)``."""

    best_x: torch.Tensor
    best_loss: torch.Tensor
    round_losses: list[float]
    round_start_losses: list[float]
    last_round_losses: list[list[float]]
    done: int
    round_slice_losses: list[torch.Tensor] = field(default_factory=list)
    round_start_slice_losses: list[torch.Tensor] = field(default_factory=list)
    steps_run: list[int] = field(default_factory=list)
    slice_steps_run: list[list[int]] = field(default_factory=list)
    best_heldout: torch.Tensor | None = None
    best_round: torch.Tensor | None = None
    best_step: torch.Tensor | None = None


def run_rounds(
    problem: Problem,
    generator: Generator,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    z: torch.Tensor,
    *,
    steps: Sequence[int],
    lr: float,
    geocross_weight: float,
    noise_blocks_ahead: int,
    after_step: Callable[[Round], Callable[[], None]],
    learning_rate: Callable[[int, int], float] | None = None,
    keep_last: bool = False,
    stop_at: torch.Tensor | None = None,
    keep_at: torch.Tensor | None = None,
    history: list[float],
    slice_history: list[torch.Tensor] | None = None,
    early_stop: EarlyStop | None = None,
    sync_every: int = 1,
    rng: torch.Generator | None = None,
    synthesize: Callable[..., torch.Tensor | SynthesisState] | None = None,
    callback: Progress | None = None,
    total: int = 0,
    done: int = 0,
    label: str = "ilo",
    compact: bool = True,
) -> RoundsResult:
    """ILO's rounds (see the module docstring) from the initial latent ``z``.

    ``after_step(round)`` is called once at the start of each round and returns the hook run
    (under ``no_grad``) after every Adam step of that round; ``learning_rate(steps, step)`` the
    step's learning rate (``None``: constant ``lr``); ``keep_last``: keep the last round's final
    iterate instead of its lowest-loss one; otherwise, when the problem holds measurements out
    (its ``image_and_losses`` returns a held-out loss), the iterate of any round with the lowest
    held-out loss is kept. ``stop_at`` ``(rounds, B)``: end slice ``b``'s round ``k`` after
    ``stop_at[k, b]`` steps, replaying a run's per-slice stops (the schedule still that of
    ``steps[k]``; rounds beyond ``len(stop_at)`` are not run; no early stop then); ``keep_at``
    ``(B, 2)``: keep, per slice, the iterate at (round, step) ``keep_at[b]`` (a hold-out run's
    choice, replayed on all measurements). The per-step mean measurement loss is appended to
    ``history`` (at the end of each round: no per-step host read-out), and the per-slice losses
    ``(B,)`` to ``slice_history`` when given; ``callback(done, total, f"{label} round {k}")``
    after every step. ``early_stop``: a slice's round ends once its measurement loss has not
    improved by the relative ``tol`` for ``patience`` steps (that iterate is then its final
    one); the round ends when every slice's has, and an ended slice is no longer synthesized
    (:mod:`sgilo.pipeline.solvers.host_sync`; its losses stay those of its stop). The steps
    each round and each slice ran are in ``RoundsResult.steps_run`` and ``slice_steps_run``.
    The stops are decided on the device and read by the host every ``sync_every`` steps; a
    round that ran past its last stop puts ``rng`` (the generator the hook draws from) back to
    it, so the result is the same for every ``sync_every`` up to float rounding.
    ``synthesize``: the generator's, or a compiled form of it
    (:mod:`sgilo.pipeline.solvers.compiled`; ``compact=False`` then keeps every row in the
    batch)."""
    batch = problem.batch
    dtype, device = z.dtype, z.device
    noises = [
        n.detach().to(dtype).expand(batch, -1, -1, -1).clone() for n in generator.noise_buffers()
    ]
    h: SynthesisState | None = None
    rounds = len(steps)
    round_losses: list[torch.Tensor] = []  # 0-d, read out at the end
    round_start_losses: list[torch.Tensor] = []
    round_slice_losses: list[torch.Tensor] = []
    round_start_slice_losses: list[torch.Tensor] = []
    last_round_losses: list[list[float]] = []
    steps_run: list[int] = []
    slice_steps_run: list[list[int]] = []
    best_loss = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
    best_x = torch.zeros(batch, *problem.op.ishape, dtype=problem.y.dtype, device=device)
    best_heldout = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
    best_round = torch.full((batch,), -1, dtype=torch.long, device=device)
    best_step = torch.full((batch,), -1, dtype=torch.long, device=device)
    by_heldout = False
    synth = synthesize or generator.synthesize
    if stop_at is not None:
        steps = list(steps)[: len(stop_at)]
        rounds = len(steps)
    for k, round_steps in enumerate(steps):
        last = k == rounds - 1
        with torch.no_grad():
            h = init_round_state(generator, gaussianized_to_w(z, mu, sigma), noises, k, h)
        active = sorted(
            {
                i
                for b in range(k, min(k + noise_blocks_ahead + 1, generator.num_blocks))
                for i in generator.block_noise_indices(b)
            }
        )
        z = z.detach().clone().requires_grad_(True)
        noises = [n.detach().clone() for n in noises]
        for i in active:
            noises[i].requires_grad_(True)
        variables: list[torch.Tensor] = [z, *(noises[i] for i in active)]
        if h is not None:
            h = SynthesisState(
                h.features.detach().clone().requires_grad_(True),
                h.skip.detach().clone().requires_grad_(True),
            )
            variables += [h.features, h.skip]
        starts = [v.detach().clone() for v in variables]
        z_norms = starts[0].norm(dim=-1)  # (B, n_latent)
        noise_norms = [starts[1 + j].reshape(batch, -1).norm(dim=1) for j in range(len(active))]
        hook = after_step(
            Round(k, z, noises, active, h, variables, starts, z_norms, noise_norms, sync_every)
        )
        optimizer = torch.optim.Adam(variables, lr=lr, foreach=True)
        iterate_losses: list[torch.Tensor] = []
        step_losses: list[torch.Tensor] = []  # this round's history, read out once at its end
        replay = None if stop_at is None else stop_at[k].to(device)
        patience = None if early_stop is None or replay is not None else early_stop.patience
        stop = DeviceEarlyStop(
            batch,
            device,
            patience,
            every=sync_every,
            tol=1e-3 if early_stop is None else early_stop.tol,
            compact=compact,
        )
        frozen_rows = FrozenRows(variables, stop)
        stops = patience is not None or replay is not None
        snapshot = StopSnapshot(rng) if sync_every > 1 and stops else None
        final_loss = torch.zeros(batch, dtype=torch.float64, device=device)
        g_last: torch.Tensor | None = None  # the last output: ended rows keep theirs
        sliced = 0  # entries appended to slice_history in this round
        for step in range(round_steps + 1):
            g = _synthesize_rows(synth, z, mu, sigma, noises, k, h, stop.rows, g_last)
            g_last = g.detach()
            x, data, held = problem.image_and_losses(g)
            current = data.detach().to(torch.float64)
            counts = stop.active  # (B,): steps after a slice's stop change nothing of it
            by_heldout = held is not None and not keep_last
            if by_heldout:
                assert held is not None
                score = held.detach().to(torch.float64)
                wins = (score < best_heldout) & counts
                best_heldout = torch.where(wins, score, best_heldout)
                best_loss = torch.where(wins, current, best_loss)
                best_round = torch.where(wins, k, best_round)
                best_step = torch.where(wins, step, best_step)
                best_x = torch.where(wins.view(-1, *([1] * (x.ndim - 1))), x.detach(), best_x)
            final = step == round_steps
            if keep_at is not None:
                hit = (keep_at[:, 0] == k) & (keep_at[:, 1] == step) & counts
                best_loss = torch.where(hit, current, best_loss)
                best_x = torch.where(hit.view(-1, *([1] * (x.ndim - 1))), x.detach(), best_x)
            now = None
            if not final:
                now = stop.observe(current, None if replay is None else replay == step)
            ends = counts if final else counts & now  # (B,) the slices' last iterates
            if step == 0:
                round_start_losses.append(current.mean())
                round_start_slice_losses.append(current)
            if last:
                iterate_losses.append(current)
            if last and not by_heldout and keep_at is None:
                keep = ends if keep_last else (current < best_loss) & counts
                best_loss = torch.where(keep, current, best_loss)
                best_x = torch.where(keep.view(-1, *([1] * (x.ndim - 1))), x.detach(), best_x)
            final_loss = torch.where(ends, current, final_loss)
            if final:  # the final iterate is evaluated, not stepped
                break
            if snapshot is not None:
                snapshot.keep()
            stop.advance(step)
            if stop.check(step):  # a host read every `sync_every` steps
                break
            step_losses.append(current.mean())
            if slice_history is not None:
                slice_history.append(current)
                sliced += 1
            if learning_rate is not None:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(round_steps, step)
            loss = (data + geocross_weight * geocross(z).to(data.dtype)).sum()
            frozen_rows.before()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                hook()
            frozen_rows.after()
            done += 1
            if callback:
                callback(done, total, f"{label} round {k}")
        ran = stop.stopped_at()
        if ran is None:
            ran = step
        elif snapshot is not None:  # ran past the last stop: the generator back to it
            snapshot.restore(ran)
        done -= len(step_losses) - ran
        if slice_history is not None and sliced > ran:
            del slice_history[len(slice_history) - (sliced - ran) :]
        steps_run.append(ran)
        slice_steps_run.append(stop.slice_steps(ran))
        round_losses.append(final_loss.mean())
        round_slice_losses.append(final_loss)
        if ran:
            history.extend(torch.stack(step_losses[:ran]).tolist())
        if last:
            stacked = torch.stack(iterate_losses[: ran + 1], dim=1)  # (B, steps + 1)
            last_round_losses = stacked.tolist()  # one host read
    return RoundsResult(
        best_x,
        best_loss,
        torch.stack(round_losses).tolist() if round_losses else [],
        torch.stack(round_start_losses).tolist() if round_start_losses else [],
        last_round_losses,
        done,
        round_slice_losses,
        round_start_slice_losses,
        steps_run,
        slice_steps_run,
        best_heldout if by_heldout else None,
        best_round if by_heldout else None,
        best_step if by_heldout else None,
    )


def _synthesize_rows(
    synth: Callable[..., torch.Tensor | SynthesisState],
    z: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    noises: list[torch.Tensor],
    k: int,
    h: SynthesisState | None,
    rows: torch.Tensor | None,
    g_last: torch.Tensor | None,
) -> torch.Tensor:
    """The generator's output ``(B, C, R, R)`` for round ``k`` (from ``h_{k−1}``): every row, or
    only ``rows`` (the running slices) with the other rows taken from ``g_last`` (detached)."""
    if rows is None or g_last is None:
        g = synth(gaussianized_to_w(z, mu, sigma), noises, start=k, h=h)
        assert isinstance(g, torch.Tensor)
        return g
    part = None if h is None else SynthesisState(h.features[rows], h.skip[rows])
    sub = synth(gaussianized_to_w(z[rows], mu, sigma), [n[rows] for n in noises], start=k, h=part)
    assert isinstance(sub, torch.Tensor)
    return g_last.index_copy(0, rows, sub)


def heldout_choice(result: RoundsResult) -> HeldoutChoice | None:
    """The kept iterates' held-out losses, rounds and steps per slice of a hold-out run
    (``None`` without a hold-out)."""
    if result.best_heldout is None or result.best_round is None:
        return None
    return HeldoutChoice(
        losses=[float(v) for v in result.best_heldout],
        rounds=[int(v) for v in result.best_round],
        steps=None if result.best_step is None else [int(v) for v in result.best_step],
    )
