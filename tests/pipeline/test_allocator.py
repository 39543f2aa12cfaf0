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


def round_faults() -> tuple[int, int, int]:
    """Blocks allocated (malloc), filled and freed, round after round, as a solver step does with
    its tensors (torch's CPU allocator takes them from malloc too): 20 of 4 MiB (below glibc's
    largest mmap threshold), then 2 of 40 MiB (above it, as SGILO's batches of chains × slices
    are). Returns the page faults of the last five rounds of each and the pages per MiB.
    Transparent huge pages are turned off for the process first (with ``always``, the kernel
    would back the blocks with 2 MiB pages and count far fewer faults)."""
    import ctypes
    import resource

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
    for count, mib in ((20, 4), (2, 40)):
        rounds(2, count, mib)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rounds(5, count, mib)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults[0], faults[1], (1 << 20) // resource.getpagesize()


START = {
    "keep": "from sgilo.pipeline.allocator import keep_freed_memory\nassert keep_freed_memory()",
    # what the sgilo command runs first
    "cli": "from sgilo.pipeline.runtime import configure_environment\nconfigure_environment()",
    "default": "",
}


def _faults(start: str, extra_env: dict[str, str] | None = None) -> tuple[int, int, int]:
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
    small, large, per_mib = (int(v) for v in done.stdout.split()[-3:])
    return small, large, per_mib


def _refaulted(small: int, large: int, per_mib: int) -> bool:
    # glibc's defaults hand the 80 MiB back to the kernel after each round and fault it in again
    # (102 240 of the 5 rounds' 102 400 pages of 4 KiB, measured), and map and unmap every
    # 40 MiB block (5 × 2 × 40 MiB)
    return small > 5 * 80 * per_mib // 2 and large > 5 * 80 * per_mib // 2


def _kept(small: int, large: int, per_mib: int) -> bool:
    return max(small, large) < 5 * 80 * per_mib // 40  # 0 measured


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
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_ for its workers; ours wins
    assert variables["MALLOC_TRIM_THRESHOLD_"] == str(allocator.TRIM_THRESHOLD)


def test_user_settings_win() -> None:
    assert not user_tuned_allocator({})
    assert not user_tuned_allocator({OPT_OUT: "1", "GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    for environ in (
        {OPT_OUT: "0"},
        {OPT_OUT: "off"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
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
def test_dask_workers_that_sgilo_starts_keep_freed_memory() -> None:
    """A real local cluster started after :func:`allocator_variables`: its worker runs the rounds
    on its task thread (not the main one) without page faults."""
    import cloudpickle
    from distributed import Client, LocalCluster

    from sgilo.flows.dask_cluster import allocator_variables

    if not allocator._kept:
        pytest.skip("this environment sets the allocator itself (configure_environment kept out)")
    assert allocator_variables()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with (
            LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            faults = client.submit(round_faults, pure=False).result(timeout=120)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert _kept(*faults)
