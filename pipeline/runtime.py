"""Where libraries write their caches: outside $HOME and outside the repository.

``configure_environment()`` points numba, matplotlib, Prefect, torch inductor and Dask scratch at
one cache folder (``$SGILO_CACHE_DIR``, default ``<tmp>/sgilo-cache``) unless the user already set
them, and on a machine that other work keeps busy makes OpenMP's idle threads sleep rather than
spin (``OMP_WAIT_POLICY=PASSIVE``, unless set). It also keeps freed memory in the process
instead of handing it back to the kernel page by page (:mod:`sgilo.pipeline.allocator`). It must
run before those libraries are imported; the CLI and the test-suite call it first.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sgilo.pipeline.allocator import keep_freed_memory


def cache_dir() -> Path:
    """The project's cache root (created on demand)."""
    root = Path(os.environ.get("SGILO_CACHE_DIR") or Path(tempfile.gettempdir()) / "sgilo-cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


def machine_is_busy() -> bool:
    """Whether other work already occupies at least half of this machine's cores (the 1-minute
    load average; ``False`` where it is not available)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return False
    return load >= 0.5 * (os.cpu_count() or 1)


def configure_environment() -> Path:
    """Set cache locations and quiet telemetry; returns the cache root."""
    root = cache_dir()
    defaults = {
        "NUMBA_CACHE_DIR": root / "numba",
        "MPLCONFIGDIR": root / "matplotlib",
        "PREFECT_HOME": root / "prefect",
        "TORCHINDUCTOR_CACHE_DIR": root / "torchinductor",
        "DASK_TEMPORARY_DIRECTORY": root / "dask",
    }
    for key, path in defaults.items():
        if key not in os.environ:
            Path(path).mkdir(parents=True, exist_ok=True)
            os.environ[key] = str(path)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if "OMP_WAIT_POLICY" not in os.environ and machine_is_busy():
        # OpenMP threads that wait by spinning fight other processes' threads for the cores:
        # solver steps 2-9x slower (docs/SPEED.md, "Busy machines"); on a quiet machine spinning
        # is faster, so only then. Read when torch loads: this must run before importing it.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    # the temporary Prefect server needs longer than its default 20 s on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    keep_freed_memory()
    return root
