"""Keep freed memory in the process: glibc's ``malloc`` set for tensor work.

glibc serves a request above its *mmap threshold* (128 KiB at first, raised dynamically up to
32 MiB as large blocks are freed) with fresh pages from the kernel, and gives the free memory at
the top of its heap back to the kernel whenever more than the *trim threshold* (128 KiB, also
adapting) lies there. A solver step allocates and frees the same few-MiB tensors hundreds of
times, so each new tensor faults its pages in again and the kernel zeroes every one. A forward
and backward pass of the shipped 128² generator took 17 000–49 000 page faults at batch 16
(97–125 ms; 84 ms without them) and 780 000 at batch 64, SGILO's 4 chains × 16 slices (1.1 s;
0.36 s without) (docs/SPEED.md, "Freed memory kept").

:func:`keep_freed_memory` turns the mapped blocks off (``M_MMAP_MAX`` 0: every block comes
from the heap, also those above 32 MiB, the largest mmap threshold glibc accepts, which SGILO's
4 chains × 16 slices exceed) and raises the trim threshold to 1 GiB (``M_TRIM_THRESHOLD``, which
also stops its adaptation), so that freed memory is reused instead of returned and faulted in
again. On the benchmark's 16-slice batches SGILO ran 1.6–2.1× faster (CSGM up to 1.15×), with
the same images and a peak memory −9 % to +16 % (docs/SPEED.md, "Freed memory kept"). The
process keeps up to 1 GiB of free memory at the top of its heap, and memory freed below the top,
until it ends: its resident memory stays near its peak. Where
``brk`` cannot grow the heap, glibc still maps the block.

The process's threads share one heap (``M_ARENA_MAX`` 1): glibc's per-thread arenas are made
of 64 MiB heaps and map any block larger than that whatever ``M_MMAP_MAX`` says, and a Prefect or
Dask task may run on a thread other than the main one. This holds for threads that first
allocate after the call: call it before the process starts threads (the CLI does, first thing).

It only acts on Linux with glibc, through ``mallopt(3)``, and not when the user already set
glibc's allocator (a ``glibc.malloc.*`` entry in ``GLIBC_TUNABLES`` other than these settings,
one of glibc's ``MALLOC_*`` variables, or another allocator in ``LD_PRELOAD``) or turned this
off with ``SGILO_KEEP_FREED_MEMORY=0``. :func:`sgilo.pipeline.runtime.configure_environment`
calls it (the CLI, the test suite), as do the benchmark's per-method processes, ``device_timing``
and the research scripts. Worker processes of a Dask cluster that sgilo starts get the same
settings from their environment (:func:`worker_environment`, set before they start, as
per-thread arenas must be ruled out before any thread allocates).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

#: ``mallopt`` parameter numbers (glibc's ``malloc.h``)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

#: free memory at the heap's top kept before any goes back to the kernel
TRIM_THRESHOLD = 1024 * 1024 * 1024

#: set to ``0`` to leave glibc's defaults alone
OPT_OUT = "SGILO_KEEP_FREED_MEMORY"

#: the environment variables through which glibc's allocator is set (``man 3 mallopt``)
MALLOC_VARIABLES = (
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
    "MALLOC_CHECK_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_PERTURB_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
)
#: the same settings as :func:`keep_freed_memory`, as glibc tunables (read at process start)
TUNABLES = (
    f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={TRIM_THRESHOLD}:glibc.malloc.arena_max=1"
)

_kept = False


def _malloc_tunables(environ: Mapping[str, str]) -> list[str]:
    tunables = environ.get("GLIBC_TUNABLES", "").split(":")
    return [t for t in tunables if t.startswith("glibc.malloc.")]


def user_tuned_allocator(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``environ`` already sets the allocator otherwise than :func:`worker_environment`
    does (a ``glibc.malloc.*`` tunable, one of :data:`MALLOC_VARIABLES`, or
    jemalloc/tcmalloc/mimalloc in ``LD_PRELOAD``), or opts out through :data:`OPT_OUT`."""
    if environ.get(OPT_OUT, "").strip().lower() in ("0", "false", "no", "off"):
        return True
    ours = _malloc_tunables(environ) == TUNABLES.split(":")  # a process sgilo started
    if _malloc_tunables(environ) and not ours:
        return True
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return True
    own = {"MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)} if ours else {}
    return any(key in environ and environ[key] != own.get(key) for key in MALLOC_VARIABLES)


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Set glibc's allocator as the module docstring says, in this process; returns whether every
    setting took (``False`` off Linux/glibc, when the user set the allocator, or if ``mallopt``
    refused)."""
    global _kept
    if not _glibc() or user_tuned_allocator():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1))
    done = [libc.mallopt(parameter, value) == 1 for parameter, value in settings]
    _kept = _kept or all(done)
    return all(done)


def worker_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables that give a new process the allocator of this one: ``GLIBC_TUNABLES`` with
    :data:`TUNABLES` (after the non-allocator tunables ``environ`` already holds; glibc takes a
    tunable over its ``MALLOC_*`` alias), and ``MALLOC_TRIM_THRESHOLD_`` with the same value in
    place of the 65536 that Dask's nanny gives its workers; empty unless
    :func:`keep_freed_memory` acted in this process."""
    if not _kept:
        return {}
    current = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
    others = [t for t in current if not t.startswith("glibc.malloc.")]
    return {
        "GLIBC_TUNABLES": ":".join([*others, TUNABLES]),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    }
