"""Test-suite set-up: caches outside $HOME, and one torch thread.

The tests use tiny tensors; on a 2-core machine two intra-op threads make such convolutions and
FFTs much slower (measured up to 30× when the machine is busy), so the whole suite runs
single-threaded.
"""

from sgilo.pipeline.runtime import configure_environment

configure_environment()

import torch  # noqa: E402

torch.set_num_threads(1)
