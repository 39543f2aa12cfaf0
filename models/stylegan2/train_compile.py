"""The speed settings of a StyleGAN-2 training run on a GPU: cuDNN autotuning (always on while
``train_gan`` trains on CUDA, :func:`autotuned`) and the opt-in ``torch.compile`` of the networks a
step calls (``train_gan(compile_mode=...)``, ``sgilo train-gan --compile``, :func:`compiled_nets`).

The mapping network, the synthesis network and the discriminator's forward are compiled
separately (:class:`~sgilo.models.stylegan2.train_state.Nets`); the lazy R1 step keeps the plain
discriminator, because its double backward (``create_graph=True``) is not supported through a
compiled graph. The step's arithmetic is the same, fused into fewer kernels: results equal the
uncompiled ones up to float rounding (different fusion and summation order), so a compiled run
is not bit-identical to an uncompiled one, and resumes exactly only under the same mode, device
and torch version. Compilation happens at the first step(s) (tens of seconds) and again when a
shape or ``requires_grad`` changes (D runs with and without parameter gradients: two graphs).

Modes are ``torch.compile``'s: ``"default"``; ``"reduce-overhead"`` adds CUDA graphs (one launch
for a whole graph: the lever for a launch-bound GPU step, measured by
:mod:`sgilo.pipeline.research.train_speed`); ``"max-autotune"`` also searches kernel configs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from sgilo.models.stylegan2.discriminator import Discriminator
from sgilo.models.stylegan2.generator import Generator
from sgilo.models.stylegan2.train_state import Nets

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compiled_nets(g: Generator, d: Discriminator, mode: str = "default") -> Nets:
    """Compiled versions of ``g.mapping``, ``g.synthesize`` and ``d`` (static shapes);
    ValueError for a mode not in :data:`COMPILE_MODES`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r}: choose from {', '.join(COMPILE_MODES)}")

    def build(fn):  # noqa: ANN001, ANN202 - a callable in, its compiled callable out
        return torch.compile(fn, mode=mode, dynamic=False)

    return Nets(build(g.mapping), build(g.synthesize), build(d), compiled=True)


@contextmanager
def autotuned(device: torch.device) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` on while training on CUDA (cuDNN times its convolution
    algorithms once per input shape and keeps the fastest: 2.3× the step rate at batch 128 on an
    H200, ../shared/gpu/README.md), restored afterwards. No effect on the CPU."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or torch.device(device).type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
