"""Where the latent solvers' random numbers are drawn: on the problem's device.

:func:`solver_rng` is the generator :func:`sgilo.pipeline.methods.run_method` hands the solvers
for a seed: on the device the problem lives on, so that the per-step draws (SGILO's Langevin
noise) and the start latents need no host-to-device copy, which on a GPU waits for the queue.
The CPU and a GPU then draw different numbers for the same seed (each device's generator is
reproducible on its own). ``SGILO_RNG_DEVICE=cpu`` in the environment draws on the CPU for every
device instead, so that a GPU run replays a CPU run's random numbers exactly (the CPU/GPU
agreement check of :mod:`sgilo.pipeline.research.gpu_recon_probe`).
:func:`randn_from` draws with a generator on the generator's own device and moves the draw to the
problem's, so a CPU generator keeps working for a GPU problem.
"""

from __future__ import annotations

import os

import torch

#: environment variable: "cpu" draws the solvers' random numbers on the CPU for every device
RNG_DEVICE_ENV = "SGILO_RNG_DEVICE"


def solver_rng(seed: int, device: torch.device | str) -> torch.Generator:
    """A generator seeded with ``seed`` on ``device`` (the CPU when ``$SGILO_RNG_DEVICE`` is
    ``cpu``)."""
    where = "cpu" if os.environ.get(RNG_DEVICE_ENV, "").lower() == "cpu" else device
    return torch.Generator(device=where).manual_seed(seed)


def randn_from(
    shape: tuple[int, ...],
    rng: torch.Generator | None,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``N(0, I)`` of ``shape`` drawn with ``rng`` on its own device (on ``device`` from the
    default generator without one), returned on ``device``."""
    where = rng.device if rng is not None else device
    return torch.randn(*shape, generator=rng, dtype=dtype, device=where).to(device)
