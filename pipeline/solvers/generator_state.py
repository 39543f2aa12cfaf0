"""The generator's state during a latent-space solve: its parameters frozen (``requires_grad``
off, restored afterwards) and the dtype/device the latents take from them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def latent_dtype_device(generator: object, y: torch.Tensor) -> tuple[torch.dtype, torch.device]:
    if isinstance(generator, torch.nn.Module):
        for p in generator.parameters():
            return p.dtype, p.device
    return y.real.dtype, y.device


def freeze(generator: object) -> list[tuple[torch.nn.Parameter, bool]]:
    if not isinstance(generator, torch.nn.Module):
        return []
    flags = [(p, p.requires_grad) for p in generator.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    return flags


def unfreeze(generator: object, flags: list[tuple[torch.nn.Parameter, bool]]) -> None:
    for p, flag in flags:
        p.requires_grad_(flag)


@contextmanager
def frozen(generator: object) -> Iterator[None]:
    """The generator's parameters frozen (``requires_grad`` off) inside, restored on exit."""
    flags = freeze(generator)
    try:
        yield
    finally:
        unfreeze(generator, flags)
