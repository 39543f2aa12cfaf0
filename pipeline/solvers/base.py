"""The result every solver returns, and the solver call contract.

A solver is a callable ``reconstruct(y, op, *, rng=None, callback=None) -> ReconResult``:
``y`` the measurements, ``op`` the forward model (an :class:`sgilo.operators.base.LinearOperator` of
:mod:`sgilo.operators.mri`), batched over slices; ``rng`` the source of any randomness. The
latent-space solvers (CSGM, ILO) take the generative model as a further keyword, ``generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers.diagnostics import Diagnostics, diagnostics_record

#: progress callback: (step done, total steps, message)
Progress = Callable[[int, int, str], None]


@dataclass
class ReconResult:
    """A reconstruction of ``B`` slices.

    - ``image``: complex ``(B, H, W)`` (``magnitude`` gives ``|image|`` as float32 numpy);
    - ``history``: per-iteration objective or measurement loss (may be empty);
    - ``seconds``: wall time of the solve;
    - ``diagnostics``: what the solver ran with and what it did, typed per solver family
      (:mod:`sgilo.pipeline.solvers.diagnostics`; λ, iterations, the resolved config, per-slice
      losses, …); ``None`` when a solver reports nothing.
    """

    image: torch.Tensor
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diagnostics: Diagnostics | None = None

    def diagnostics_dict(self) -> dict[str, Any]:
        """``diagnostics`` as a flat JSON-able dict (real lists, no JSON text): the one
        serialization of a result's diagnostics, for run records and file attributes
        (:func:`sgilo.pipeline.solvers.diagnostics.diagnostics_record`)."""
        return diagnostics_record(self.diagnostics)

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
