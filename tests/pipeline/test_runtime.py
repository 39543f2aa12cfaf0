"""``machine_is_busy`` (pipeline/runtime.py) reads what the cores do now, not the load average,
which still reads "busy" a minute after the work ended (and then slows a quiet machine's solvers
by ``OMP_WAIT_POLICY=PASSIVE``, docs/SPEED.md §18)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import sgilo.pipeline.runtime as runtime


@pytest.mark.skipif(runtime._cpu_times() is None, reason="needs Linux's /proc/stat")
def test_busy_while_other_processes_spin_and_quiet_as_soon_as_they_stop():
    cores = os.cpu_count() or 1
    if not any(not runtime.machine_is_busy() for _ in range(5)):
        pytest.skip("other work occupies the cores: the quiet state after the spinners can't show")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)  # the interpreters start
        assert runtime.machine_is_busy()
    finally:
        for proc in spinners:
            proc.kill()
        for proc in spinners:
            proc.wait()
    # the load average still counts the spinners for a minute; the cores are idle at once (one
    # quiet window of a few suffices: the test suite's own servers may wake now and then)
    assert any(not runtime.machine_is_busy() for _ in range(5))


def test_without_proc_stat_the_load_average_decides(monkeypatch):
    cores = os.cpu_count() or 1
    monkeypatch.setattr(runtime, "_cpu_times", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5 * cores, 0.0, 0.0))
    assert runtime.machine_is_busy()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4 * cores, 9.0, 9.0))
    assert not runtime.machine_is_busy()


def test_own_work_does_not_count(monkeypatch):
    """The cores' busy time over the window less this process's own CPU time is "other work":
    half of 2 cores busy is busy, unless this process did that half itself."""
    ticks = iter([(0, 0), (20, 40), (0, 0), (20, 40)])  # (busy, total): 1 of 2 cores busy
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(ticks))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    own = iter([0.0, 0.0, 5.0, 5.2])  # process CPU seconds before and after each window
    monkeypatch.setattr(time, "process_time", lambda: next(own))
    assert runtime.machine_is_busy(0.2)  # another process kept a core busy
    assert not runtime.machine_is_busy(0.2)  # this process did
