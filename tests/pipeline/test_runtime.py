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
    """This process's CPU time over the window is not "other work": a process that spins
    itself while it measures does not call the machine busy (on one core of a quiet machine)."""
    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("needs two cores: one spins, the other stays idle")
    monkeypatch.setattr(time, "sleep", _spin)
    assert any(not runtime.machine_is_busy() for _ in range(5))


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
