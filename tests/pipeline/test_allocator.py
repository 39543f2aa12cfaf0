"""Freed memory kept in the process (sgilo.pipeline.allocator): fewer page faults, opt-outs, and
the same allocator in the Dask workers sgilo starts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from sgilo.pipeline import allocator
from sgilo.pipeline.allocator import OPT_OUT, keep_freed_memory, user_tuned_allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")


def round_faults() -> tuple[int, int, int, int]:
    """Blocks allocated (malloc), filled and freed, round after round, as a solver step does with
    its tensors (torch's CPU allocator takes them from malloc too): 20 of 4 MiB (below glibc's
    largest mmap threshold), then 2 of 40 MiB (above it, as SGILO's batches of chains × slices
    are), then 2 of 80 MiB on a new thread (above the 64 MiB heaps of a per-thread arena). Returns
    the page faults of the last five rounds of each and the pages per MiB. Transparent huge pages
    are turned off for the process first (with ``always``, the kernel would back the blocks with
    2 MiB pages and count far fewer faults)."""
    import ctypes
    import resource
    import threading

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE

    def rounds(n: int, count: int, mib: int) -> None:
        for _ in range(n):
            blocks = [libc.malloc(mib << 20) for _ in range(count)]
            for b in blocks:
                ctypes.memset(b, 1, mib << 20)
            for b in blocks:
                libc.free(b)

    faults = []

    def measure(count: int, mib: int) -> None:
        rounds(2, count, mib)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rounds(5, count, mib)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    measure(20, 4)
    measure(2, 40)
    thread = threading.Thread(target=measure, args=(2, 80))
    thread.start()
    thread.join()
    return faults[0], faults[1], faults[2], (1 << 20) // resource.getpagesize()


START = {
    "keep": "from sgilo.pipeline.allocator import keep_freed_memory\nassert keep_freed_memory()",
    # what the sgilo command runs first
    "cli": "from sgilo.pipeline.runtime import configure_environment\nconfigure_environment()",
    "default": "",
}


def _faults(start: str, extra_env: dict[str, str] | None = None) -> tuple[int, int, int, int]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIBC_TUNABLES", OPT_OUT, *allocator.MALLOC_VARIABLES)
    }
    env.update(extra_env or {})
    import inspect

    script = f"{START[start]}\n{inspect.getsource(round_faults)}\nprint(*round_faults())"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    small, large, threaded, per_mib = (int(v) for v in done.stdout.split()[-4:])
    return small, large, threaded, per_mib


def _refaulted(small: int, large: int, threaded: int, per_mib: int) -> bool:
    # glibc's defaults hand the 80 MiB back to the kernel after each round and fault it in again
    # (102 240 of the 5 rounds' 102 400 pages of 4 KiB, measured), and map and unmap every
    # 40 MiB block (5 × 2 × 40 MiB) and every 80 MiB block of the thread (5 × 2 × 80 MiB)
    rounds = 5 * 80 * per_mib // 2
    return small > rounds and large > rounds and threaded > 2 * rounds


def _kept(small: int, large: int, threaded: int, per_mib: int) -> bool:
    return max(small, large, threaded) < 5 * 80 * per_mib // 40  # 0 measured


@needs_glibc
def test_freed_memory_is_reused_without_page_faults() -> None:
    assert _refaulted(*_faults("default"))
    assert _kept(*_faults("keep"))
    assert _kept(*_faults("cli"))


@needs_glibc
def test_the_same_from_the_environment() -> None:
    """The variables given to worker processes set the same allocator from the start."""
    if not allocator._kept:
        pytest.skip("this environment sets the allocator itself (configure_environment kept out)")
    variables = allocator.worker_environment()
    assert _kept(*_faults("default", variables))
    # glibc takes the tunable over the 65536 that Dask's nanny would give a worker
    assert _kept(*_faults("default", {**variables, "MALLOC_TRIM_THRESHOLD_": "65536"}))
    assert not allocator.user_tuned_allocator(variables)  # sgilo's own, in a child


def test_user_settings_win() -> None:
    assert not user_tuned_allocator({})
    assert not user_tuned_allocator({"GLIBC_TUNABLES": allocator.TUNABLES})  # sgilo's own
    assert not user_tuned_allocator({OPT_OUT: "1", "GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    for environ in (
        {OPT_OUT: "0"},
        {OPT_OUT: "off"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
        {"GLIBC_TUNABLES": allocator.TUNABLES, "MALLOC_TRIM_THRESHOLD_": "65536"},
        {"MALLOC_ARENA_MAX": "2"},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    ):
        assert user_tuned_allocator(environ)


def test_worker_environment_keeps_other_tunables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_kept", True)
    variables = allocator.worker_environment({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert variables["GLIBC_TUNABLES"] == f"glibc.pthread.rseq=0:{allocator.TUNABLES}"
    monkeypatch.setattr(allocator, "_kept", False)
    assert allocator.worker_environment({}) == {}


@needs_glibc
def test_opt_out_leaves_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPT_OUT, "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv(OPT_OUT)
    for key in [k for k in os.environ if k in allocator.MALLOC_VARIABLES or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(key)
    assert keep_freed_memory() is True


@needs_glibc
def test_dask_workers_that_sgilo_starts_keep_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real local cluster started after :func:`allocator_variables`: its worker runs the rounds
    on its task thread (not the main one) without page faults."""
    import builtins
    import types

    from distributed import Client, LocalCluster

    from sgilo.flows.dask_cluster import allocator_variables

    if not allocator._kept:
        pytest.skip("this environment sets the allocator itself (configure_environment kept out)")
    for key in ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_"):  # restored after the test
        monkeypatch.setenv(key, os.environ.get(key, ""))
        monkeypatch.delenv(key)
    # a copy that no module holds travels by value: the worker need not import the tests
    work = types.FunctionType(round_faults.__code__, {"__builtins__": builtins}, "round_faults")
    assert allocator_variables()
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        faults = client.submit(work, pure=False).result(timeout=120)
    assert _kept(*faults)
