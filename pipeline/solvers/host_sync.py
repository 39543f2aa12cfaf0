"""Per-slice early stopping decided on the device, read by the host only every ``N`` steps.

ILO's and SGILO's rounds stop each slice on its own: slice ``b`` ends once its measurement loss
has not improved on its lowest value by a relative ``tol`` for ``patience`` steps, and the round
ends once every slice has. A slice that ended keeps
the iterate it ended at: the solvers no longer run the generator on it (the host's list of
running slices, :attr:`DeviceEarlyStop.rows`, selects the batch rows to synthesize) and put its
variables back after each optimizer step, so it costs nothing and changes nothing from then on.
CSGM's restarts (CSGM and the ILO/SGILO start) keep the batch-wide rule (``per_slice=False``:
every slice ends at the first step where all have stalled): their learning rate ramps down at
the end, and a slice ended on its own plateau would miss that descent. (Until 2026-12-05 the
rounds had the batch-wide rule too; ending each slice at its own stop took 30 % fewer
slice-steps in a default SGILO run on 16 training slices, docs/SPEED.md §10.)

Deciding that on the host needs a device-to-host read every step, which on a GPU stops the host
from queueing the next step's kernels while the current ones run. :class:`DeviceEarlyStop` keeps
the decision on the device:

- per slice ``b`` (``(B,)`` tensors): ``lowest_b``, ``stalled_b`` (steps since the last relative
  improvement), ``running_b`` (not ended yet) and ``stop_step_b`` (the step it ended at, ``−1``
  before);
- step ``s`` with losses ``ℓ`` ``(B,)``: on running slices ``improved = ℓ < lowest·(1 − tol)``,
  ``stalled ← 0 if improved else stalled + 1``, ``lowest ← min(lowest, ℓ)``;
  ``now_b = running_b ∧ (stalled_b ≥ patience ∨ force_b)`` (``force``: a replayed stop; with
  ``per_slice=False`` the condition is ``∀b′ stalled_b′ ≥ patience`` over the running slices of
  ``b``'s group, :class:`DeviceEarlyStop`); after it,
  ``running ← running ∧ ¬now``;
- the host reads ``running`` after steps ``N − 1, 2N − 1, …`` (:meth:`DeviceEarlyStop.check`):
  the loop ends when no slice runs, and the running rows are what the generator computes next.

With ``N = 1`` the host reads every step: the loop ends right at the last slice's stop, and an
ended slice is dropped from the generator's batch at the next step. With ``N > 1`` the loop runs
up to ``N − 1`` steps past the last stop and ended slices stay in the batch until the next read;
the solvers mask everything those steps would change with :attr:`DeviceEarlyStop.active` and put
the random generator back to the last stop step, so every ``N`` gives the same result up to the
float rounding of the generator on batches of other sizes. ``N`` is the ``host_sync_every`` field
of the solver configs (:class:`HostSyncConfig`): ``"auto"`` is 1 on the CPU (where a host read
costs nothing and extra steps cost time) and :data:`AUTO_SYNC_EVERY` on other devices.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

#: host_sync_every="auto" on devices other than the CPU
AUTO_SYNC_EVERY = 16

SyncSetting = int | Literal["auto"]


class HostSyncConfig(BaseModel):
    """The ``host_sync_every`` field of the latent solvers' configs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_sync_every: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto",
        description="steps between the host's reads of the early-stop state; the results are "
        "the same for every value (up to float rounding of the l1 projection's threshold, "
        "found without host reads when > 1); 'auto': 1 on the CPU, 16 on a GPU "
        "(pipeline/solvers/host_sync.py)",
    )


def resolve_sync_every(setting: SyncSetting, device: torch.device | str) -> int:
    """``N``: ``setting`` itself, or for ``"auto"`` 1 on the CPU and :data:`AUTO_SYNC_EVERY`
    elsewhere."""
    if setting != "auto":
        return int(setting)
    return 1 if torch.device(device).type == "cpu" else AUTO_SYNC_EVERY


class DeviceEarlyStop:
    """The per-slice early-stop state of one restart or round (module docstring), on ``device``.

    ``patience=None``: no slice stops on its own (only ``force`` in :meth:`observe` ends one).
    ``compact=False``: :attr:`rows` stays ``None`` (every row is synthesized, the ended ones
    masked: for a compiled generator, which would recompile for every batch size).
    ``per_slice=False``: the batch-wide rule, every slice ends at the first step where all of
    them have stalled for ``patience`` steps (CSGM's fits, whose learning rate ramps down at the
    end: a slice ended on its own plateau misses that descent, docs/SPEED.md §10); with
    ``groups = G`` the rows are ``G`` equal consecutive groups (restarts side by side,
    :mod:`sgilo.pipeline.solvers.raced_restarts`) and the rule holds within each group. Rows
    that no longer run (ended, or set so by the caller) count as stalled for it."""

    def __init__(
        self,
        batch: int,
        device: torch.device,
        patience: int | None,
        *,
        every: int = 1,
        tol: float = 1e-3,
        compact: bool = True,
        per_slice: bool = True,
        groups: int = 1,
    ) -> None:
        if groups < 1 or batch % groups:
            raise ValueError(f"{batch} rows do not split into {groups} equal groups")
        self.patience, self.every, self.tol, self.compact = patience, every, tol, compact
        self.per_slice, self.groups = per_slice, groups
        self.lowest = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
        self.stalled = torch.zeros(batch, dtype=torch.long, device=device)
        self.running = torch.ones(batch, dtype=torch.bool, device=device)
        self.stop_step = torch.full((batch,), -1, dtype=torch.long, device=device)
        self.now: torch.Tensor | None = None
        self.forced = False  # a forced stop was observed: check() must read
        #: the rows running at the host's last read (``None``: all, or no read yet)
        self.rows: torch.Tensor | None = None

    @property
    def active(self) -> torch.Tensor:
        """``(B,)`` bool: the slice had not ended before the current step (its updates count)."""
        return self.running

    def observe(self, current: torch.Tensor, force: torch.Tensor | None = None) -> torch.Tensor:
        """Update with the step's losses ``current`` ``(B,)`` (float64); ``force`` ``(B,)`` bool
        ends those slices at this step whatever their losses. Returns :attr:`now` (``(B,)``:
        the slices that end at this step). Call :meth:`advance` after the step's other masked
        updates."""
        improved = current < self.lowest * (1 - self.tol)
        stalled = torch.where(improved, 0, self.stalled + 1)
        self.stalled = torch.where(self.running, stalled, self.stalled)
        self.lowest = torch.where(self.running, torch.minimum(current, self.lowest), self.lowest)
        ends = (
            torch.zeros_like(self.running)
            if self.patience is None
            else self.stalled >= self.patience
        )
        if not self.per_slice:  # within each group, over the rows still running
            grouped = (ends | ~self.running).view(self.groups, -1)
            ends = grouped.all(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
        if force is not None:
            ends = ends | force
            self.forced = True
        self.now = self.running & ends
        return self.now

    def advance(self, step: int) -> None:
        """After step ``step``: record the stops there; those slices stop counting."""
        if self.now is None:
            return
        self.stop_step = torch.where(self.now, step, self.stop_step)
        self.running = self.running & ~self.now
        self.now = None

    def check(self, step: int) -> bool:
        """``True`` when the loop must end after ``step`` (no slice runs). The host reads
        ``running`` after every ``every``-th step (never without patience or forced stops) and
        keeps the running rows in :attr:`rows`."""
        if (self.patience is None and not self.forced) or (step + 1) % self.every:
            return False
        running = self.running.tolist()  # the one host read
        if all(running) or not self.compact:
            self.rows = None
        else:
            rows = [i for i, r in enumerate(running) if r]
            self.rows = torch.tensor(rows, dtype=torch.long, device=self.running.device)
        return not any(running)

    def stopped_at(self) -> int | None:
        """The step the loop stopped at (its last slice's stop), or ``None`` when some slice
        ran to the end of the schedule (one host read)."""
        steps = self.stop_step.tolist()
        return None if min(steps) < 0 else max(steps)

    def slice_steps(self, ran: int) -> list[int]:
        """Per slice the steps it ran: its stop step, or ``ran`` (the loop's) where it did not
        stop early (one host read)."""
        return [ran if s < 0 else s for s in self.stop_step.tolist()]


class StopSnapshot:
    """The random generator's state before each step of a loop that may run past its stop
    (``every > 1``): :meth:`keep` each step before the hook draws, :meth:`restore` after the loop.
    (The variables need no snapshot: :class:`FrozenRows` keeps every ended slice at its stop.)"""

    def __init__(self, rng: torch.Generator | None) -> None:
        self.rng = rng
        self.rng_states: list[torch.Tensor] = []

    def keep(self) -> None:
        """Record the generator's state of this step (before the step draws)."""
        if self.rng is not None:
            self.rng_states.append(self.rng.get_state())

    def restore(self, step: int) -> None:
        """The generator back to its state before step ``step`` (the loop's stop step) drew."""
        if self.rng is not None and step < len(self.rng_states):
            self.rng.set_state(self.rng_states[step])


class FrozenRows:
    """Keeps the ended slices of a loop at their stop: :meth:`before` saves the variables (rows
    along dim 0) before an optimizer step and the hook, :meth:`after` puts the rows that are not
    running back. Nothing is copied while the host knows every slice runs (``every = 1`` and no
    slice ended)."""

    def __init__(self, variables: list[torch.Tensor], stop: DeviceEarlyStop) -> None:
        self.variables, self.stop = variables, stop
        self.saved: list[torch.Tensor] | None = None

    def before(self) -> None:
        """Save the variables, unless every slice is known to run."""
        stop = self.stop
        never = stop.patience is None and not stop.forced  # no slice can end
        if never or (stop.every == 1 and stop.compact and stop.rows is None):  # all run
            self.saved = None
            return
        self.saved = [v.detach().clone() for v in self.variables]

    @torch.no_grad()
    def after(self) -> None:
        """Put back the rows of ended slices (``running`` is False)."""
        if self.saved is None:
            return
        running = self.stop.running
        for v, kept in zip(self.variables, self.saved, strict=True):
            keep = running.view(-1, *([1] * (v.ndim - 1)))
            v.copy_(torch.where(keep, v, kept))
        self.saved = None
