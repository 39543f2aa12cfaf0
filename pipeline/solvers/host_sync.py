"""Early stopping decided on the device, read by the host only every ``N`` steps.

The latent solvers' loops (CSGM's restarts, ILO's and SGILO's rounds) end a restart or round once
no slice's measurement loss has improved on its lowest value by a relative ``tol`` for
``patience`` steps. Deciding that on the host needs a device-to-host read every step, which on a
GPU stops the host from queueing the next step's kernels while the current ones run.
:class:`DeviceEarlyStop` keeps the decision on the device:

- per slice ``b`` (``(B,)`` tensors): ``lowest_b`` and ``stalled_b`` (steps since the last
  relative improvement); per loop: ``running`` (a 0-d bool, no stop yet) and ``stop_step`` (the
  step it stopped at, ``−1`` before);
- step ``s`` with losses ``ℓ`` ``(B,)``: while ``running``, ``improved = ℓ < lowest·(1 − tol)``,
  ``stalled ← 0 if improved else stalled + 1``, ``lowest ← min(lowest, ℓ)``;
  ``now = running ∧ ∀b stalled_b ≥ patience``; after it, ``running ← running ∧ ¬now`` (nothing
  changes once it stopped);
- the host reads ``running`` after steps ``N − 1, 2N − 1, …`` (:meth:`DeviceEarlyStop.check`).

With ``N = 1`` the host reads every step and the loop ends right at the stop step, exactly as a
host-side check does. With ``N > 1`` the loop runs up to ``N − 1`` steps past it; the solvers mask
everything those steps would change with :attr:`DeviceEarlyStop.active` (kept iterate, losses,
history) and put the variables and the random generator back to the stop step, so the result is
the same for every ``N``. ``N`` is the ``host_sync_every`` field of the solver configs
(:class:`HostSyncConfig`): ``"auto"`` is 1 on the CPU (where a host read costs nothing and extra
steps cost time) and :data:`AUTO_SYNC_EVERY` on other devices.
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
    """The early-stop state of one restart or round (module docstring), on ``device``.

    ``patience=None``: never stops (:attr:`now` stays ``None``, :meth:`check` reads nothing)."""

    def __init__(
        self,
        batch: int,
        device: torch.device,
        patience: int | None,
        *,
        every: int = 1,
        tol: float = 1e-3,
    ) -> None:
        self.patience, self.every, self.tol = patience, every, tol
        self.lowest = torch.full((batch,), math.inf, dtype=torch.float64, device=device)
        self.stalled = torch.zeros(batch, dtype=torch.long, device=device)
        self.running = torch.ones((), dtype=torch.bool, device=device)
        self.stop_step = torch.full((), -1, dtype=torch.long, device=device)
        self.now: torch.Tensor | None = None

    @property
    def active(self) -> torch.Tensor:
        """0-d bool: no stop before the current step (the step's updates count)."""
        return self.running

    def observe(self, current: torch.Tensor) -> torch.Tensor | None:
        """Update with the step's losses ``current`` ``(B,)`` (float64); returns :attr:`now`
        (0-d bool: the loop stops at this step) or ``None`` without patience. Call
        :meth:`advance` after the step's other masked updates."""
        improved = current < self.lowest * (1 - self.tol)
        stalled = torch.where(improved, 0, self.stalled + 1)
        self.stalled = torch.where(self.running, stalled, self.stalled)
        self.lowest = torch.where(self.running, torch.minimum(current, self.lowest), self.lowest)
        if self.patience is None:
            self.now = None
        else:
            self.now = self.running & (self.stalled >= self.patience).all()
        return self.now

    def advance(self, step: int) -> None:
        """After step ``step``: record a stop there and stop counting later steps."""
        if self.now is None:
            return
        self.stop_step = torch.where(self.now, step, self.stop_step)
        self.running = self.running & ~self.now
        self.now = None

    def check(self, step: int) -> bool:
        """``True`` when the loop must end after ``step``: the host reads ``running`` after every
        ``every``-th step (none without patience)."""
        if self.patience is None or (step + 1) % self.every:
            return False
        return not bool(self.running)

    def stopped_at(self) -> int | None:
        """The step the loop stopped at, or ``None`` (one host read)."""
        if self.patience is None:
            return None
        step = int(self.stop_step)
        return None if step < 0 else step


class StopSnapshot:
    """The loop's variables (and a random generator's state) at the stop step, for loops run
    past it (``every > 1``): :meth:`keep` each step before the variables change,
    :meth:`restore` after the loop."""

    def __init__(self, variables: list[torch.Tensor], rng: torch.Generator | None) -> None:
        self.variables = variables
        self.values = [v.detach().clone() for v in variables]
        self.rng = rng
        self.rng_states: list[torch.Tensor] = []

    def keep(self, now: torch.Tensor | None) -> None:
        """Record the variables where ``now`` (0-d bool) and the generator's state of this step
        (before the step draws)."""
        if now is not None:
            self.values = [
                torch.where(now, v.detach(), kept)
                for v, kept in zip(self.variables, self.values, strict=True)
            ]
        if self.rng is not None:
            self.rng_states.append(self.rng.get_state())

    @torch.no_grad()
    def restore(self, step: int) -> None:
        """Variables back to their values at ``step`` (the loop's stop step), and the generator
        to its state before that step drew."""
        for v, kept in zip(self.variables, self.values, strict=True):
            v.copy_(kept)
        if self.rng is not None and step < len(self.rng_states):
            self.rng.set_state(self.rng_states[step])
