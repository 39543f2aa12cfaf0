"""Ending a command cleanly on SIGTERM or SIGINT (Ctrl-C): one line, a conventional exit code,
and nothing half-written left behind.

:func:`run_interruptibly` runs a command with handlers for SIGTERM and SIGINT that raise
:class:`Interrupted` in the main thread. It derives from ``KeyboardInterrupt`` (a
``BaseException``), so ``except Exception`` blocks let it pass while every ``with`` and
``finally`` on the way up runs: staging folders are removed (:mod:`sgilo.pipeline.io.staging`),
locks released, worker clusters shut down, and a workflow engine marks its run as crashed. From the
first signal on, the process's stderr goes to ``/dev/null`` (shutdown logs and tracebacks of
libraries are not shown); the command then ends with one line on the original stderr::

    sgilo: interrupted by SIGTERM; 3 of 20 input(s) finished; re-run the same command to finish

and exit code 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal, or a
clean-up that takes longer than :data:`GRACE_S` (:data:`STOP_GRACE_S` for a loop stopping between
steps), ends the process at once, like SIGKILL: the next
run into the same output folder removes what it left. So does an exit that takes longer than
:data:`EXIT_GRACE_S` after the one line (a library's exit handler flushing to a server that does
not answer): what the command wrote is complete by then. When the environment variable
``SGILO_HANG_DUMP`` names a file, a clean-up or an exit past its limit first writes the stacks of
all threads there (where it hung: the tests set it).

Short critical sections (``with deferred():``, e.g. committing an output set by renames) hold a
signal until they end, so that an output set is never half committed by SIGTERM or Ctrl-C.
Long loops whose state is worth keeping (training) run inside ``with stop_between_steps() as
stop:`` instead: the first signal only sets ``stop``, the loop ends after its current step and
writes its checkpoint, and the block then raises :class:`Interrupted` (the watchdog allows
:data:`STOP_GRACE_S` for that; a second signal still ends the process at once).
Signals reach Python's main thread only: work that must stop promptly runs there (or in worker
processes that their cluster shuts down).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: the signals handled, in the order their handlers are installed
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

#: seconds the clean-up may take after the first signal before the process ends at once
GRACE_S = 30.0

#: seconds the process may take to exit after the one line (libraries' exit handlers: a workflow
#: engine flushing its logs and events to its server) before it ends at once, within
#: :data:`GRACE_S` or :data:`STOP_GRACE_S` from the signal
EXIT_GRACE_S = 10.0

#: seconds a loop inside :func:`stop_between_steps` may take to end its step and write its
#: checkpoint after the first signal
STOP_GRACE_S = 120.0

#: inside :func:`stop_between_steps`, a signal this many seconds or less after the first is the
#: same event, not a second signal: a launcher that forwards a terminal's Ctrl-C to its workers
#: (torchrun sends SIGTERM to processes that got the SIGINT already), a scheduler that signals
#: every process of a job
REPEAT_S = 1.0

#: the end of the one line, after the signal and the progress
RESUME_HINT = "re-run the same command to finish"


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM or SIGINT.

    A ``KeyboardInterrupt`` (so a ``BaseException``): ``except Exception`` does not catch it,
    and libraries that shut down gracefully on Ctrl-C treat SIGTERM the same way."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal_name(self.signum)}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, and so on."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _State:
    """What the handlers of the running command know (one command at a time per process)."""

    def __init__(self) -> None:
        self.armed = False
        self.signum: int | None = None
        self.depth = 0  # nesting of deferred() sections in the main thread
        self.pending = False  # a signal arrived inside a deferred() section
        self.progress: tuple[int, int, int] | None = None  # finished, failed, total
        self.stderr_fd: int | None = None  # a duplicate of the original stderr
        self.reported = False
        self.resume_hint = RESUME_HINT  # the end of the one line (set_resume_hint)
        self.grace = GRACE_S  # seconds the clean-up may take after the first signal
        self.exit_by: float | None = None  # time.monotonic() by which the process must be gone
        self.signalled = threading.Event()  # set by the first signal: the watchdog starts timing
        self.ended = threading.Event()  # set when the command has returned or raised


_state = _State()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def received() -> int | None:
    """The signal number this process received while a command ran, or ``None``."""
    return _state.signum


def raise_if_received() -> None:
    """Raise :class:`Interrupted` when this command received a signal that nothing raised
    (a library caught the ``KeyboardInterrupt`` and went on, or turned it into an ordinary
    error). Loops over inputs call it between inputs and before counting an input as failed:
    an input that a signal interrupted is unfinished, not failed, and no further input starts.
    Outside the main thread, inside a :func:`deferred` section or with no signal: nothing."""
    if _state.signum is not None and _state.armed and _in_main_thread() and not _state.depth:
        raise Interrupted(_state.signum)


def set_progress(finished: int, total: int, *, failed: int = 0) -> None:
    """Record how far the command is (inputs ``finished`` of ``total``; ``failed`` of them
    were bad), for the line printed when it is interrupted."""
    _state.progress = (int(finished), int(failed), int(total))


def set_resume_hint(hint: str) -> None:
    """Replace the end of the one line (:data:`RESUME_HINT`), e.g. with how to continue a
    training run from the checkpoint it wrote."""
    _state.resume_hint = hint


def message(signum: int) -> str:
    """The one line printed for an interrupted command."""
    parts = [f"sgilo: interrupted by {signal_name(signum)}"]
    if _state.progress is not None:
        finished, failed, total = _state.progress
        parts.append(
            f"{finished} of {total} input(s) finished" + (f", {failed} failed" if failed else "")
        )
    parts.append(_state.resume_hint)
    return "; ".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _report(signum: int) -> None:
    """Write :func:`message` to the original stderr, once."""
    if _state.reported:
        return
    _state.reported = True
    fd = _state.stderr_fd if _state.stderr_fd is not None else 2
    try:
        _write_all(fd, (message(signum) + "\n").encode())
    except OSError:
        pass


def _silence_stderr() -> None:
    """Point file descriptor 2 at ``/dev/null`` (the original stays open as
    ``_state.stderr_fd`` for the final line): whatever libraries print while they shut down is
    not shown."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
    except OSError:
        pass


def _force_exit() -> None:
    """End the process now (a second signal, or a clean-up past its grace period)."""
    signum = _state.signum or signal.SIGTERM
    _report(signum)
    os._exit(128 + signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state.signum is not None:  # a second signal: stop waiting for the clean-up
        _force_exit()
    _state.signum = signum
    _silence_stderr()
    _state.signalled.set()
    if _state.depth:
        _state.pending = True  # raised when the critical section ends
        return
    raise Interrupted(signum)


def _watch(state: _State) -> None:
    """The watchdog thread: after the first signal, give the clean-up ``state.grace`` seconds
    (:data:`GRACE_S`, or :data:`STOP_GRACE_S` for a loop that stops between steps), and the exit
    after the one line until ``state.exit_by``, whichever ends first."""
    state.signalled.wait()
    start = time.monotonic()
    while not state.ended.wait(0.1):
        if state is not _state:  # a later command's watchdog has taken over
            return
        limit = start + state.grace
        if state.exit_by is not None:
            limit = min(limit, state.exit_by)
        if time.monotonic() >= limit:
            _dump_stacks(os.environ.get("SGILO_HANG_DUMP"))
            _force_exit()


def _dump_stacks(path: str | None) -> None:
    """Write every thread's stack to ``path`` (nothing when ``None`` or unwritable)."""
    if not path:
        return
    import faulthandler

    try:
        with open(path, "w") as f:
            faulthandler.dump_traceback(f, all_threads=True)
    except OSError:
        pass


def signal_of(exc: BaseException) -> int | None:
    """The signal behind an exception that ends a command: :class:`Interrupted`'s, SIGINT for a
    plain ``KeyboardInterrupt``, a workflow engine's termination exception's (an exception
    with an integer ``signal`` attribute, such as Prefect's ``TerminationSignal``); else
    ``None``."""
    if isinstance(exc, Interrupted):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    signum = getattr(exc, "signal", None)
    if type(exc).__name__ == "TerminationSignal" and isinstance(signum, int):
        return signum
    return None


def run_interruptibly(command: Callable[[], int]) -> int:
    """Run ``command`` (returning an exit code) with the SIGTERM/SIGINT handlers of this
    module; return its exit code, or, when a signal ended it, print the one line and return
    128 + the signal number. Outside the main thread the command just runs."""
    if not _in_main_thread():
        return command()
    global _state
    _state = state = _State()
    try:
        state.stderr_fd = os.dup(2)  # the real stderr, for the one line (fd 2 may be redirected)
    except OSError:  # no stderr at all
        state.stderr_fd = None
    # started before the handlers: a signal handler must not start threads
    threading.Thread(target=_watch, args=(state,), name="sgilo-interrupt", daemon=True).start()
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    state.armed = True
    try:
        code = command()
    except BaseException as exc:
        signum = state.signum or signal_of(exc)
        if signum is None:
            _end(state, previous)
            raise
        if state.signum is None:  # a library's handler saw the signal, not this module's
            state.signum = signum
            _silence_stderr()
            state.signalled.set()  # the watchdog bounds the exit too
        _report(signum)
        state.exit_by = time.monotonic() + EXIT_GRACE_S
        return 128 + signum
    if state.signum is not None:  # held in a deferred section, or swallowed by a library
        _report(state.signum)
        state.exit_by = time.monotonic() + EXIT_GRACE_S
        return 128 + state.signum
    _end(state, previous)
    return code


def _end(state: _State, previous: dict[signal.Signals, Any]) -> None:
    """After a command that no signal ended: the previous handlers back, the watchdog thread
    ended. (After a signal, this module's handlers and the watchdog stay: the process is about
    to exit, and a further signal or a hang at exit ends it at once.)"""
    state.armed = False
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    state.ended.set()
    state.signalled.set()
    if state.stderr_fd is not None:
        os.close(state.stderr_fd)
        state.stderr_fd = None


@contextmanager
def deferred() -> Iterator[None]:
    """A critical section: a SIGTERM/SIGINT arriving inside it is raised (as
    :class:`Interrupted`) when it ends. Keep it short; outside the main thread it does
    nothing."""
    if not _in_main_thread():
        yield
        return
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0 and _state.pending:  # (it also wins over an error of the section)
            _state.pending = False
            raise Interrupted(_state.signum or signal.SIGTERM)


class StopFlag:
    """Set by the first SIGTERM/SIGINT inside :func:`stop_between_steps`; calling it says
    whether it is set (what a training loop polls between steps). ``signum``: the signal."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at = 0.0  # time.monotonic() of the signal

    def __call__(self) -> bool:
        return self.signum is not None


@contextmanager
def stop_between_steps(what: str = "the current step") -> Iterator[StopFlag]:
    """Inside :func:`run_interruptibly`: for the block, the first SIGTERM/SIGINT does not raise
    but sets the yielded :class:`StopFlag` and prints one line (``sgilo: SIGTERM: stopping
    after {what} ...``); the loop in the block polls the flag, ends after its step and writes
    what it keeps. When the block then ends, :class:`Interrupted` is raised, so the command
    ends with the usual one line (see :func:`set_resume_hint`) and exit code. The watchdog
    allows :data:`STOP_GRACE_S` from the signal; a second signal more than :data:`REPEAT_S`
    after the first ends the process at once (earlier ones are the same event, ignored). An
    error raised in the block after the signal is shown in one line before the command ends
    as interrupted. Elsewhere (no command running, another thread) the flag is never set."""
    flag = StopFlag()
    if not (_state.armed and _in_main_thread()):
        yield flag
        return
    state = _state

    def say(line: str) -> None:
        try:
            _write_all(state.stderr_fd if state.stderr_fd is not None else 2, line.encode())
        except OSError:
            pass

    def on_signal(signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if state.signum is not None:
            if flag.signum is not None and now - flag.at <= REPEAT_S:
                return  # the same event, delivered again
            _force_exit()  # a second signal
        state.signum = flag.signum = signum
        flag.at = now
        state.grace = STOP_GRACE_S
        state.signalled.set()
        say(
            f"sgilo: {signal_name(signum)}: stopping after {what} "
            "(a second signal ends at once, losing it)\n"
        )

    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        yield flag
    except Exception as exc:
        if flag.signum is not None:  # not hidden behind the interrupted line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            say(f"sgilo: error while stopping: {type(exc).__name__}: {first}\n")
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if flag.signum is not None:
        _silence_stderr()
        raise Interrupted(flag.signum)


@contextmanager
def handlers_in_place() -> Iterator[None]:
    """Inside :func:`run_interruptibly`, put this module's handlers back for the duration of
    the block: a workflow engine (Prefect's flow runs) installs its own SIGTERM handler while
    it runs a flow. Elsewhere it does nothing."""
    if not (_state.armed and _in_main_thread()):
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        if _state.signum is None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@contextmanager
def quiet_children() -> Iterator[None]:
    """Inside :func:`run_interruptibly`: child processes started in this block (a Dask
    LocalCluster's workers) write their stderr through a relay that forwards it until the first
    signal and drops it after, so that what they print while their cluster is shut down does not
    follow the one line. Within the block this process's own stderr takes the same way.
    When the block ends it waits until the relay has forwarded what is in the pipe (the pipe
    empty for :data:`RELAY_IDLE_S`, at most :data:`RELAY_JOIN_S`), not until every child has
    closed it: one that outlives the block (multiprocessing's resource tracker lives until this
    process exits) is still relayed. Elsewhere it does nothing."""
    if not (_state.armed and _in_main_thread() and _state.stderr_fd is not None):
        yield
        return
    state = _state
    read_end, write_end = os.pipe()
    outside = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    closing, drained = threading.Event(), threading.Event()
    relay = threading.Thread(
        target=_relay,
        args=(state, read_end, os.dup(state.stderr_fd), closing, drained),
        name="sgilo-stderr",
        daemon=True,
    )
    relay.start()
    try:
        yield
    finally:
        if state.signum is None:
            os.dup2(outside, 2)  # (after a signal fd 2 stays on /dev/null)
        os.close(outside)
        closing.set()
        drained.wait(timeout=RELAY_JOIN_S)


#: seconds the end of :func:`quiet_children` waits at most for its relay to forward what is in
#: the pipe
RELAY_JOIN_S = 5.0

#: once the block has ended, what is in the pipe has been forwarded when it stayed empty this long
RELAY_IDLE_S = 0.2


def _relay(
    state: _State,
    read_end: int,
    target: int,
    closing: threading.Event,
    drained: threading.Event,
) -> None:
    """Copy the pipe to ``target`` until end of file, dropping everything once a signal came.
    Once ``closing`` is set (before a wait), a wait of :data:`RELAY_IDLE_S` with nothing to read
    sets ``drained``; the relay goes on until every writer has closed the pipe."""
    import select

    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    try:
        while True:
            was_closing = closing.is_set()
            if not poller.poll(None if drained.is_set() else RELAY_IDLE_S * 1000):
                if was_closing:
                    drained.set()
                continue
            data = os.read(read_end, 1 << 16)
            if not data:
                break
            if state.signum is None:
                try:
                    _write_all(target, data)
                except OSError:
                    pass
    finally:
        drained.set()
        os.close(read_end)
        os.close(target)
