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
again. On the benchmark's 16-slice batches SGILO ran 1.7–2.1× faster, with the same images and
a peak memory within ±16 % (docs/SPEED.md, "Freed memory kept"). The process keeps up to 1 GiB
of free memory at the top of its heap, and memory freed below the top, until it ends. Where
``brk`` cannot grow the heap, glibc still maps the block.

It only acts on Linux with glibc, through ``mallopt(3)``, and not when the user already tuned the
allocator (``GLIBC_TUNABLES`` or ``MALLOC_*`` variables set) or turned this off with
``SGILO_KEEP_FREED_MEMORY=0``. :func:`sgilo.pipeline.runtime.configure_environment` calls it (the
CLI, the test suite) and so do the Dask workers that sgilo starts (:mod:`sgilo.flows.dask_worker`).
"""

from __future__ import annotations

import ctypes
import os
import platform

#: ``mallopt`` parameter numbers (glibc's ``malloc.h``)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

#: free memory at the heap's top kept before any goes back to the kernel
TRIM_THRESHOLD = 1024 * 1024 * 1024

#: set to ``0`` to leave glibc's defaults alone
OPT_OUT = "SGILO_KEEP_FREED_MEMORY"


def user_tuned_allocator(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the environment already sets glibc's allocator (``GLIBC_TUNABLES`` or a
    ``MALLOC_*`` variable) or opts out through :data:`OPT_OUT`."""
    if environ.get(OPT_OUT, "").strip().lower() in ("0", "false", "no", "off"):
        return True
    return "GLIBC_TUNABLES" in environ or any(key.startswith("MALLOC_") for key in environ)


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (module docstring) in this process; returns whether
    both were set (``False`` off Linux/glibc, when the user tuned the allocator, or if ``mallopt``
    refused)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if user_tuned_allocator():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok)
