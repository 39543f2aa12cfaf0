"""Freed memory kept in the process (sgilo.pipeline.allocator): fewer page faults, opt-outs."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from sgilo.pipeline.allocator import OPT_OUT, keep_freed_memory, user_tuned_allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# blocks allocated (malloc), filled and freed, round after round, as a solver step does with its
# tensors (torch's CPU allocator takes them from malloc too):
# 20 of 4 MiB (below glibc's largest mmap threshold) and 2 of 40 MiB (above it, as SGILO's
# batches of chains × slices are); prints the page faults of the last five rounds of each
ROUNDS = """
import ctypes, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "keep":
    from sgilo.pipeline.allocator import keep_freed_memory
    assert keep_freed_memory()
elif sys.argv[1] == "cli":  # what the sgilo command runs first
    from sgilo.pipeline.runtime import configure_environment
    configure_environment()
elif sys.argv[1] == "dask":  # what a Dask worker that sgilo starts runs first
    from sgilo.flows.dask_worker import dask_setup
    dask_setup(None)
def rounds(n, count, mib):
    for _ in range(n):
        blocks = [libc.malloc(mib << 20) for _ in range(count)]
        for b in blocks:
            ctypes.memset(b, 1, mib << 20)
        for b in blocks:
            libc.free(b)
for count, mib in ((20, 4), (2, 40)):
    rounds(2, count, mib)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(5, count, mib)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> list[int]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_") and k != OPT_OUT
    }
    done = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], env=env, capture_output=True, text=True, check=True
    )
    return [int(v) for v in done.stdout.split()[-2:]]


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_page_faults() -> None:
    (small, large), (small_kept, large_kept) = _faults("default"), _faults("keep")
    # glibc's defaults hand the 80 MiB back to the kernel after each round and fault it in again
    # (102 240 of the 5 rounds' 102 400 pages, measured), and map and unmap every 40 MiB block
    # (5 × 2 × 10 240 pages); kept, the heap serves them all (0 faults, measured)
    assert small > 5 * 20 * 1024 // 2 and large > 5 * 2 * 10240 // 2
    assert small_kept < small // 20 and large_kept < large // 20


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
@pytest.mark.parametrize("start", ["cli", "dask"])
def test_the_cli_and_dask_workers_keep_freed_memory(start: str) -> None:
    assert max(_faults(start)) < 5 * 2 * 10240 // 20


def test_user_settings_win() -> None:
    assert not user_tuned_allocator({})
    assert not user_tuned_allocator({OPT_OUT: "1"})
    for environ in (
        {OPT_OUT: "0"},
        {OPT_OUT: "off"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
        {"MALLOC_ARENA_MAX": "2"},
    ):
        assert user_tuned_allocator(environ)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_opt_out_leaves_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPT_OUT, "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv(OPT_OUT)
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(key)
    assert keep_freed_memory() is True
