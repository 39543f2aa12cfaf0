"""What each worker process of a local Dask cluster that sgilo starts runs at its start (a Dask
*preload*: ``preload=[PRELOAD]`` in the worker options; Dask calls :func:`dask_setup`).

A terminal's Ctrl-C sends SIGINT to the whole process group, the cluster's worker processes
included. Left alone, each worker's event loop cancels its running task and closes the worker at
once, racing the ``sgilo`` process's own handler and printing warnings after the one interrupted
line (:mod:`sgilo.pipeline.interrupt`). The workers therefore ignore SIGINT: the ``sgilo``
process alone decides, and it shuts its cluster down (SIGTERM and the nannies' close messages
still end the workers). Workers of a cluster sgilo did not start (``--dask-address``) are left as
their owner configured them. (The workers' allocator is set through their environment, before
they start: :func:`sgilo.pipeline.allocator.worker_environment`.)
"""

from __future__ import annotations

import signal
import threading
from typing import Any

#: the module name given to Dask as the workers' preload
PRELOAD = __name__


def dask_setup(worker: Any) -> None:
    """Called by Dask in the worker process as the worker starts (in its event loop, on the main
    thread): ignore SIGINT there. Does nothing off the main thread (``signal`` would refuse)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
