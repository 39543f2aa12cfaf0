"""Where libraries write their caches: outside $HOME and outside the repository.

``configure_environment()`` points numba, matplotlib, Prefect, torch inductor and Dask scratch at
one cache folder (``$SGILO_CACHE_DIR``, default ``<tmp>/sgilo-cache``) unless the user already set
them, and on a machine that other work keeps busy right now (:func:`machine_is_busy`) makes
OpenMP's idle threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``, unless set). It also
keeps freed memory in the process instead of handing it back to the kernel page by page
(:mod:`sgilo.pipeline.allocator`). It must run before those libraries are imported; the CLI and
the test-suite call it first.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from sgilo.pipeline.allocator import keep_freed_memory


def cache_dir() -> Path:
    """The project's cache root (created on demand)."""
    root = Path(os.environ.get("SGILO_CACHE_DIR") or Path(tempfile.gettempdir()) / "sgilo-cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


#: how long :func:`machine_is_busy` watches the cores
BUSY_SAMPLE_SECONDS = 0.2


def machine_is_busy(sample_seconds: float = BUSY_SAMPLE_SECONDS) -> bool:
    """Whether other work occupies at least half of this machine's cores *now*: on Linux the
    cores' busy time over ``sample_seconds`` (``/proc/stat``) less this process's own; elsewhere
    the 1-minute load average (``False`` where neither is available).

    Not the load average on Linux: it decays over minutes, so it still reads "busy" a minute
    after a job ended, and ``OMP_WAIT_POLICY=PASSIVE`` then costs a quiet machine 40-50 % per
    step (docs/SPEED.md §4a, §18)."""
    cores = os.cpu_count() or 1
    before = _cpu_times()
    if before is None:
        try:
            return os.getloadavg()[0] >= 0.5 * cores
        except (AttributeError, OSError):
            return False
    own = time.process_time()
    time.sleep(sample_seconds)
    after = _cpu_times()
    if after is None:
        return False
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return False
    others = cores * busy / total - (time.process_time() - own) / sample_seconds
    return others >= 0.5 * cores


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all cores since boot from ``/proc/stat`` (idle and iowait
    count as not busy; guest time is already part of user time); ``None`` off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    total = sum(ticks)
    return total - idle, total


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
