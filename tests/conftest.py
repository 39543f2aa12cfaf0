"""Test-suite set-up: caches outside $HOME, deterministic torch, double precision helpers."""

from pipeline.runtime import configure_environment

configure_environment()

import torch  # noqa: E402

torch.set_num_threads(2)
