"""Run a sigpy linear operator inside torch autograd.

``SigpyLinopFunction.apply(x, linop)`` evaluates ``linop`` on the numpy copy of a complex torch
tensor and differentiates through it: torch's backward of a linear map ``y = A x`` with incoming
gradient ``g`` is ``A^H g`` (torch's conjugate-Wirtinger convention for complex tensors), which is
``linop.H`` in sigpy. Unlike ``sigpy.to_pytorch_function`` it keeps torch's native complex dtypes
(no trailing size-2 axis) and returns the input's dtype and device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu").resolve_conj().numpy()


class SigpyLinopFunction(torch.autograd.Function):
    """Autograd wrapper: forward ``linop(x)``, backward ``linop.H(g)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, linop: Any) -> torch.Tensor:  # type: ignore[override]
        ctx.linop = linop
        ctx.dtype, ctx.device = x.dtype, x.device
        out = linop(_to_numpy(x))
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        out = ctx.linop.H(_to_numpy(grad))
        g = torch.from_numpy(np.ascontiguousarray(out)).to(device=ctx.device, dtype=ctx.dtype)
        return g, None


def apply_sigpy_linop(linop: Any, x: torch.Tensor) -> torch.Tensor:
    """Differentiable ``linop(x)`` for a complex torch tensor ``x`` of shape ``linop.ishape``."""
    return SigpyLinopFunction.apply(x, linop)
