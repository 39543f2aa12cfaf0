"""The rules of :mod:`sgilo.pipeline.interrupt` on small scripts under ``run_interruptibly``: a
signal held during a critical section, ``except Exception`` not catching it, a second signal, a
hung clean-up or a hung exit ending the process at once, the stderr relay of ``quiet_children``,
and loops that stop between steps. (The commands themselves: tests/flows/test_signals.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import os, signal, sys, time
from sgilo.pipeline import interrupt
"""


def _script(body: str, *, expect: int, stdout: str) -> None:
    """Run ``body`` (defining ``command()``) under ``run_interruptibly``; check the exit code,
    the one line on stderr and what it printed on stdout."""
    code = PRELUDE + textwrap.dedent(body) + "\nsys.exit(interrupt.run_interruptibly(command))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    name = signal.Signals(expect - 128).name
    assert proc.returncode == expect, proc.stderr
    assert proc.stderr == f"sgilo: interrupted by {name}; re-run the same command to finish\n"
    assert proc.stdout == stdout


def test_signal_in_a_critical_section_waits_for_its_end():
    _script(
        """
        def command():
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                print("section finished", flush=True)
            print("after the section", flush=True)
            return 0
        """,
        expect=143,
        stdout="section finished\n",
    )


def test_except_exception_does_not_catch_it_and_cleanup_runs():
    _script(
        """
        def command():
            try:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)
                except Exception:
                    print("swallowed", flush=True)
            finally:
                print("cleaned up", flush=True)
            return 0
        """,
        expect=130,
        stdout="cleaned up\n",
    )


def test_a_second_signal_ends_the_cleanup_at_once():
    _script(
        """
        def command():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                print("cleaning up", flush=True)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
                print("not reached", flush=True)
        """,
        expect=143,
        stdout="cleaning up\n",
    )


def test_a_hung_cleanup_ends_after_the_grace_period(tmp_path, monkeypatch):
    dump = tmp_path / "hang.txt"
    monkeypatch.setenv("SGILO_HANG_DUMP", str(dump))
    start = time.monotonic()
    _script(
        """
        interrupt.GRACE_S = 0.5
        def hung_cleanup():
            time.sleep(30)
        def command():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                hung_cleanup()
        """,
        expect=143,
        stdout="",
    )
    assert time.monotonic() - start < 20
    assert "in hung_cleanup" in dump.read_text()  # where it hung, for the one who debugs it


def test_a_hung_exit_ends_after_the_exit_grace(tmp_path, monkeypatch):
    """An exit handler that hangs after the one line (a workflow engine flushing to a server
    that does not answer) gets EXIT_GRACE_S, not the whole GRACE_S; it still runs."""
    monkeypatch.setenv("SGILO_HANG_DUMP", str(tmp_path / "hang.txt"))
    start = time.monotonic()
    _script(
        """
        import atexit
        interrupt.EXIT_GRACE_S = 0.5
        def hung_flush():
            print("flushing", flush=True)
            time.sleep(30)
        def command():
            atexit.register(hung_flush)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        """,
        expect=143,
        stdout="flushing\n",
    )
    assert time.monotonic() - start < 20  # GRACE_S (30 s) did not end it
    assert "in hung_flush" in (tmp_path / "hang.txt").read_text()


def test_a_library_handler_s_signal_gets_the_exit_grace_too(tmp_path, monkeypatch):
    """A signal that a library's own handler turned into its exception (Prefect's
    ``TerminationSignal``, while it runs a flow) ends the command as ours do, and a hung exit
    after it is bounded the same way (it waited forever before)."""
    monkeypatch.setenv("SGILO_HANG_DUMP", str(tmp_path / "hang.txt"))
    _script(
        """
        import atexit
        interrupt.EXIT_GRACE_S = 0.5
        class TerminationSignal(Exception):
            def __init__(self, signal):
                self.signal = signal
        def library_handler(signum, frame):
            raise TerminationSignal(signum)
        def command():
            atexit.register(time.sleep, 30)
            signal.signal(signal.SIGTERM, library_handler)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        """,
        expect=143,
        stdout="",
    )
    assert (tmp_path / "hang.txt").exists()


def test_quiet_children_forwards_and_lets_a_long_lived_child_be():
    """What a child writes in the block reaches stderr; a child that outlives the block (such
    as multiprocessing's resource tracker) does not hold up the block's end (it waited
    RELAY_JOIN_S = 5 s for such a child before), and what it writes later is still relayed."""
    code = PRELUDE + textwrap.dedent(
        """
        import subprocess
        def command():
            with interrupt.quiet_children():
                child = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                    "print('child says', file=sys.stderr, flush=True); time.sleep(1.5); "
                    "print('and later', file=sys.stderr, flush=True); time.sleep(30)"])
                time.sleep(0.5)
                start = time.monotonic()
            print(f"{time.monotonic() - start:.1f}", flush=True)
            time.sleep(2.0)
            child.kill()
            child.wait()
            return 0
        sys.exit(interrupt.run_interruptibly(command))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 2.5  # measured 0.2–0.3 (the relay's idle wait); 5.0 before
    assert proc.stderr == "child says\nand later\n"


def _stop_script(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` (defining ``command()``) under ``run_interruptibly``; returns the process."""
    code = PRELUDE + textwrap.dedent(body) + "\nsys.exit(interrupt.run_interruptibly(command))\n"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


STOPPING = "sgilo: SIGTERM: stopping after the step (a second signal ends at once, losing it)"
INTERRUPTED = "sgilo: interrupted by SIGTERM; re-run the same command to finish"


def test_a_loop_that_stops_between_steps_sees_the_flag_and_a_repeat_is_the_same_event():
    proc = _stop_script(
        """
        def command():
            with interrupt.stop_between_steps("the step") as stop:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)  # forwarded by a launcher: the same event
                time.sleep(0.1)
                grace = interrupt._state.grace == interrupt.STOP_GRACE_S
                print("step ended", stop(), stop.signum == signal.SIGTERM, grace, flush=True)
            print("not reached", flush=True)
            return 0
        """
    )
    assert proc.returncode == 143, proc.stderr
    assert proc.stdout == "step ended True True True\n"
    assert proc.stderr.splitlines() == [STOPPING, INTERRUPTED]


def test_a_later_second_signal_ends_the_stop_at_once():
    proc = _stop_script(
        """
        interrupt.REPEAT_S = 0.1
        def command():
            with interrupt.stop_between_steps("the step") as stop:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)
                print("still stopping", flush=True)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
                print("not reached", flush=True)
        """
    )
    assert proc.returncode == 143, proc.stderr
    assert proc.stdout == "still stopping\n"
    assert proc.stderr.splitlines() == [STOPPING, INTERRUPTED]


def test_an_error_while_stopping_is_shown_before_the_interrupted_line():
    proc = _stop_script(
        """
        def command():
            with interrupt.stop_between_steps("the step"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
                raise OSError("disk full\\nand more")
        """
    )
    assert proc.returncode == 143, proc.stderr
    error = "sgilo: error while stopping: OSError: disk full"
    assert proc.stderr.splitlines() == [STOPPING, error, INTERRUPTED]
