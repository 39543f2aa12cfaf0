"""Data-parallel training over torchrun's processes: every process computes its share of the
global batch and the gradients are averaged, so that a run on W processes follows the
single-process run with the same global batch (up to the order of float sums).

How the trainers use it (:mod:`sgilo.models.stylegan2.train`, :mod:`sgilo.models.score.train`):

- Every process holds the same networks, optimizers and random generators (seeded alike, or
  restored from the same checkpoint) and draws the random numbers of the *whole* global batch
  of B rows, so the generators stay in step with the single-process run and with each other.
- Process r keeps its B/W rows of each per-sample tensor (:meth:`DataParallel.shard`) and runs
  the networks on them. Losses are means over its rows; since the shares are equal, the mean
  over processes of the per-process means is the global mean, and so is the mean of their
  gradients: :meth:`DataParallel.average` all-reduces the gradients, and the loss values to log,
  in one flat collective before each optimizer step. Every process then takes the same step.
- Only rank 0 writes checkpoints, logs and samples (:attr:`DataParallel.writes`); a resume reads
  the checkpoint in every process.

Rows that a network mixes (the discriminator's minibatch standard deviation groups samples b and
b' ≡ b mod B/g) are kept together: with ``group`` g the batch is viewed as (g, B/g, …) and
process r takes the columns [r·n, (r+1)·n) with n = B/(g·W), which keeps every group whole and
in the same order in the process's own (g, n) grouping.

The processes are torchrun's (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous
variables in the environment): :func:`joined` initializes the process group, NCCL on GPUs
(process r on ``cuda:LOCAL_RANK``) and gloo on the CPU. Without torchrun it is one process and
nothing changes: :data:`SINGLE` shards and averages nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DataParallel:
    """This process's place among ``world_size`` data-parallel processes (rank 0 writes)."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} of {self.world_size} processes")

    @property
    def active(self) -> bool:
        """Whether there is more than one process (else every method is the identity)."""
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def check_batch(self, batch: int, group: int = 1, what: str = "batch") -> int:
        """The rows of a global ``batch`` that each process computes, B/W; ValueError unless W
        divides B and ``group`` divides B/W (see the module docstring)."""
        w = self.world_size
        if batch % w or (batch // w) % group:
            need = f"a multiple of {w * group} ({w} processes × groups of {group})"
            if group == 1:
                need = f"a multiple of the number of processes, {w}"
            raise ValueError(f"the global {what} {batch} must be {need}")
        return batch // w

    def shard(self, x: Tensor, group: int = 1) -> Tensor:
        """This process's rows of a global batch: x (B, …) → (B/W, …), the same dtype and
        device; ``x`` itself for one process. ``group``: rows b and b' ≡ b (mod B/group) stay in
        one process, in the same order (see the module docstring)."""
        if not self.active:
            return x
        n = self.check_batch(x.shape[0], group) // group
        grouped = x.reshape(group, x.shape[0] // group, *x.shape[1:])
        return grouped[:, self.rank * n : (self.rank + 1) * n].reshape(n * group, *x.shape[1:])

    def average(self, params: Iterable[Tensor], scalars: dict[str, Tensor]) -> dict[str, float]:
        """Average over the processes, in one all-reduce: the gradients of ``params`` (in place;
        parameters without a gradient are skipped, the same ones in every process) and the
        0-dim ``scalars``, returned as floats. One process: the scalars' values."""
        if not self.active:
            return {k: v.item() for k, v in scalars.items()}
        averaged = self.average_tensors(params, scalars)
        values = torch.stack(list(averaged.values())).tolist() if averaged else []
        return dict(zip(averaged, values, strict=True))

    def average_tensors(
        self, params: Iterable[Tensor], scalars: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """:meth:`average` without reading the scalars back to the host: they come back as 0-dim
        float32 tensors on the gradients' device (one process: the scalars, detached)."""
        if not self.active:
            return {k: v.detach() for k, v in scalars.items()}
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        values = [v.detach().reshape(1).to(torch.float32) for v in scalars.values()]
        device = grads[0].device if grads else values[0].device
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads] + values).to(device)
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return dict(zip(scalars, flat[offset:].unbind(), strict=True))

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """Whether ``flag`` is true in any process (a collective: every process must call it)."""
        if not self.active:
            return flag
        import torch.distributed as dist

        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def any_of(self, flags: list[bool], device: torch.device | str = "cpu") -> list[bool]:
        """Per entry of ``flags``, whether it is true in any process: one collective (every
        process must call it with as many flags)."""
        if not self.active:
            return list(flags)
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v > 0) for v in t.tolist()]


#: one process: no sharding, no collectives
SINGLE = DataParallel()


def torchrun_world() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment; ``(0, 0, 1)`` without."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


@contextmanager
def joined(device: str) -> Iterator[tuple[DataParallel, str]]:
    """Join torchrun's process group for the duration: yields ``(parallel, device)``, the device
    being ``cuda:LOCAL_RANK`` for "cuda" under torchrun (NCCL), else ``device`` (gloo on the
    CPU). Without torchrun (``WORLD_SIZE`` unset or 1): ``(SINGLE, device)`` and no process
    group. On a normal exit the processes meet at a barrier before the group is destroyed, so
    that one that finishes first (rank 1, while rank 0 writes its checkpoint) does not tear the
    group down under the others; after an error there is no barrier (torchrun stops the rest)."""
    rank, local_rank, world = torchrun_world()
    if world <= 1:
        yield SINGLE, device
        return
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        yield DataParallel(rank, world), device
        dist.barrier()  # not in `finally`: after an error the others may never arrive
    finally:
        dist.destroy_process_group()
