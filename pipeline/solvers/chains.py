"""SGILO's ``K`` chains as one batch of ``K·B`` for the rounds (docs/SPEED.md §2).

:func:`sgilo.pipeline.solvers.sgilo.sgilo` runs its chains through
:func:`sgilo.pipeline.solvers.rounds.run_rounds` as one batch: the generator, the backward pass,
Adam and the prior steps see ``K·B`` rows; the image and the loss are the problem's, chain by
chain.
"""

from __future__ import annotations

import torch

from sgilo.pipeline.solvers.problem import Problem


class ChainBatch:
    """``K`` copies of a solver problem as one batch of ``K·B`` (chain-major: row ``c·B + b`` is
    chain ``c``, slice ``b``), for :func:`sgilo.pipeline.solvers.rounds.run_rounds`. The image and
    the loss are computed chain by chain with the problem's own per-slice tensors (scale, phase
    carrier, gain, the operator's per-slice mask/maps), so no operator needs to know about chains;
    the generator, the backward pass, Adam and the prior steps see one batch."""

    def __init__(self, problem: Problem, chains: int) -> None:
        self.problem, self.chains = problem, chains
        self.op, self.y = problem.op, problem.y

    @property
    def batch(self) -> int:
        return self.chains * self.problem.batch

    def image(self, g: torch.Tensor) -> torch.Tensor:
        """Generator output ``(K·B, C, R, R)`` → the problem's image, ``(K·B, H, W)``."""
        if self.chains == 1:
            return self.problem.image(g)
        return torch.cat([self.problem.image(part) for part in g.split(self.problem.batch)])

    def measurement_loss(self, x: torch.Tensor) -> torch.Tensor:
        """``(K·B,)``: the problem's per-slice measurement loss, chain by chain."""
        if self.chains == 1:
            return self.problem.measurement_loss(x)
        parts = x.split(self.problem.batch)
        return torch.cat([self.problem.measurement_loss(part) for part in parts])

    def image_and_loss(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The problem's :meth:`~Problem.image_and_loss`, chain by chain."""
        if self.chains == 1:
            return self.problem.image_and_loss(g)
        pairs = [self.problem.image_and_loss(part) for part in g.split(self.problem.batch)]
        return torch.cat([x for x, _ in pairs]), torch.cat([loss for _, loss in pairs])

    def image_and_losses(
        self, g: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The problem's :meth:`~Problem.image_and_losses`, chain by chain."""
        if self.chains == 1:
            return self.problem.image_and_losses(g)
        parts = [self.problem.image_and_losses(part) for part in g.split(self.problem.batch)]
        held = [h for _, _, h in parts]
        return (
            torch.cat([x for x, _, _ in parts]),
            torch.cat([loss for _, loss, _ in parts]),
            None if held[0] is None else torch.cat(held),  # type: ignore[arg-type]
        )
