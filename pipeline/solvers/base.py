"""The result every solver returns, and the solver call contract.

A solver is a callable ``reconstruct(y, op, *, rng=None, callback=None) -> ReconResult``:
``y`` the measurements, ``op`` the forward model (an :class:`sgilo.operators.base.LinearOperator` of
:mod:`sgilo.operators.mri`), batched over slices; ``rng`` the source of any randomness. The
latent-space solvers (CSGM, ILO) take the generative model as a further keyword, ``generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from sgilo.operators.base import LinearOperator

#: progress callback: (step done, total steps, message)
Progress = Callable[[int, int, str], None]


@dataclass
class ReconResult:
    """A reconstruction of ``B`` slices.

    - ``image``: complex ``(B, H, W)`` (``magnitude`` gives ``|image|`` as float32 numpy);
    - ``history``: per-iteration objective or measurement loss (may be empty);
    - ``seconds``: wall time of the solve;
    - ``params``: the resolved parameters actually used (absolute λ, iterations, …).
    """

    image: torch.Tensor
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    params: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def magnitude(self):  # -> np.ndarray float32 (B, H, W)
        return self.image.detach().abs().to(torch.float32).cpu().numpy()


class Solver(Protocol):
    def __call__(
        self,
        y: torch.Tensor,
        op: LinearOperator,
        *,
        rng: torch.Generator | None = None,
        callback: Progress | None = None,
    ) -> ReconResult: ...
