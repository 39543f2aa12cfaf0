"""Opt-in ``torch.compile`` of the generator in the latent solvers' inner step.

Every Adam step of CSGM, ILO and SGILO runs the generator forward and backward: a few hundred
small kernels launched from Python, which on a GPU leaves the device waiting on the host
(docs/SPEED.md §5, §6). The ``compile`` field of the solver configs (:class:`CompileConfig`)
wraps ``generator.synthesize`` in ``torch.compile(dynamic=False)`` for the fit:

- ``"off"`` (default): eager, as always;
- ``"default"``: TorchInductor's fused kernels;
- ``"reduce-overhead"``: the same, replayed as CUDA graphs on a GPU (one capture per shape);
- ``"aot_eager"``: graph capture and autograd tracing without code generation (a check that the
  step captures; no speed-up).

Each distinct call (ILO's round ``k`` starts at block ``k``; each batch size) is compiled on its
first use, which costs seconds to minutes; on the CPU it did not pay back over a solve
(docs/SPEED.md §1). The results agree with eager ones up to float rounding of fused kernels
(bit for bit with ``"aot_eager"`` on the CPU in the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

CompileSetting = Literal["off", "default", "reduce-overhead", "aot_eager"]


class CompileConfig(BaseModel):
    """The ``compile`` field of the latent solvers' configs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    compile: CompileSetting = Field(
        "off",
        description="torch.compile the generator of the inner step: 'off', 'default', "
        "'reduce-overhead' (CUDA graphs on a GPU) or 'aot_eager' (capture only; "
        "pipeline/solvers/compiled.py)",
    )


def synthesis(generator: Any, setting: CompileSetting) -> Callable[..., Any]:
    """``generator.synthesize``, compiled as ``setting`` says (module docstring)."""
    if setting == "off":
        return generator.synthesize
    if setting == "aot_eager":
        return torch.compile(generator.synthesize, backend="aot_eager", dynamic=False)
    return torch.compile(generator.synthesize, mode=setting, dynamic=False)
