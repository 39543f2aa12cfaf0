"""SIGTERM and Ctrl-C (SIGINT) end `sgilo reconstruct`, `sgilo batch` and `sgilo serve --once`
promptly with one line on stderr, exit code 143 or 130, no traceback and nothing half-written.

Real subprocesses: the signal is sent once stderr shows that the run is under way (the third
input started, or two inputs finished). SIGINT goes to the process group, as a Ctrl-C in a
terminal does; SIGTERM to the process. Afterwards OUT holds no staging folder and no hidden file
(besides `.sgilo`), and each input has all of its outputs or none. An interrupted batch, run
again, finishes the rest.

`sgilo train-gan` and `sgilo train-score` instead stop after the current step with a checkpoint
of that step (nothing trained is lost): toy sizes, checkpoint intervals far beyond the steps they
run (the only checkpoint is the signal's), the state equal to a run told to stop there, the log
ending at that step, the one line naming the step and ``--resume``, and ``--resume`` going on.

The rules of :mod:`sgilo.pipeline.interrupt` itself (a signal held during a critical section,
``except Exception`` not catching it, a second signal or a hung clean-up ending the process at
once): tests/flows/test_interrupt_rules.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import pytest
import torch

from sgilo.flows.cli import main
from sgilo.models.stylegan2.checkpoint import load_generator

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f"s{i:02d}.h5" for i in range(16)]

pytestmark = pytest.mark.slow


class Lines:
    """The lines a pipe delivers, collected by a thread, with the moment a mark was set."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self.mark = 0
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, proc: subprocess.Popen, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.lines):
            assert proc.poll() is None, "ended before the signal:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, "no progress:\n" + "\n".join(self.lines[-20:])
            time.sleep(0.01)

    def after_mark(self) -> list[str]:
        self.thread.join(timeout=30)
        return self.lines[self.mark :]


def interrupt(command: list[str], signum: int, ready, env: dict | None = None):
    """Run ``command``, send ``signum`` once ``ready(stderr lines)``; returns (exit code, all
    stderr lines, the lines after the signal, seconds from the signal to the exit). Where the
    clean-up hangs past the grace period, the stacks the process dumped are printed (pytest
    shows them with the failure)."""
    dump = Path(tempfile.mkdtemp()) / "hang.txt"
    proc = subprocess.Popen(
        command,
        env={**os.environ, "OMP_NUM_THREADS": "1", "SGILO_HANG_DUMP": str(dump), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job in a terminal
    )
    err = Lines(proc.stderr)
    try:
        err.wait_for(ready, proc)
        err.mark = len(err.lines)
        sent = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # Ctrl-C: the whole foreground process group
        else:
            proc.send_signal(signum)
        code = proc.wait(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if dump.exists():
        print(f"the clean-up hung; the stacks at the end of the grace period:\n{dump.read_text()}")
    return code, err.lines, err.after_mark(), seconds


def check_one_line(code: int, lines: list[str], rest: list[str], signum: int, progress: str):
    """Exit code 128 + signum; the last line is the one interrupted line; nothing after the
    signal looks like an error or a traceback."""
    name = signal.Signals(signum).name
    assert code == 128 + signum, "\n".join(lines)
    assert rest and re.fullmatch(
        rf"sgilo: interrupted by {name}; {progress}re-run the same command to finish", rest[-1]
    ), "\n".join(rest)
    assert sum(line.startswith("sgilo") for line in rest) == 1, "\n".join(rest)
    assert not any("Traceback" in line or 'File "' in line for line in lines), "\n".join(lines)
    noisy = [line for line in rest if re.search(r"rror|xception|Crash|Abort|KeyboardInt", line)]
    assert not noisy, "\n".join(rest)


def check_out(out: Path, outputs_of: dict[str, list[str]]) -> list[str]:
    """No staging folder or hidden file outside ``.sgilo``; each input's outputs all present
    and readable, or none. Returns the inputs whose outputs are present."""
    hidden = [p for p in out.rglob(".*") if p.relative_to(out).parts[0] != ".sgilo"]
    assert not hidden, hidden
    present = []
    for name, outputs in outputs_of.items():
        there = [(out / o).exists() for o in outputs]
        assert all(there) or not any(there), (name, there)
        if all(there):
            present.append(name)
            with h5py.File(out / outputs[0], "r") as f:
                assert f["reconstruction"].shape == (4, 32, 32)
    known = {o for outputs in outputs_of.values() for o in outputs}
    assert {p.name for p in out.iterdir()} <= known | {"run.json", "run.log", ".sgilo"}
    return present


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, studies) -> Path:
    """16 tiny 4-coil studies (4 slices of 32x32; tests/flows/conftest.py)."""
    folder = tmp_path_factory.mktemp("signals") / "in"
    studies(folder, NAMES, coils=4, seed=40)
    return folder


OUTPUTS = {n: [n, n.replace(".h5", ".nii.gz")] for n in NAMES}
# about 0.4 s per input, so that the signal lands while inputs remain (TV's default 200
# iterations take 0.1 s on these tiny studies). A rare failure of the batch tests until
# 2026-12-07 ("15 of 16 input(s) finished, 1 failed", or 16 of 16) was a signal that something
# inside an input's task run caught and went on from, or turned into an ordinary error: the loop
# then counted that input failed and ran the rest (test_a_signal_turned_into_an_error_is_no_failure)
RECON = ["--method", "tv", "--set", "iterations=600", "--format", "h5,nifti"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_reconstruct(inputs, tmp_path, signum):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "sgilo.flows.cli", "reconstruct"]
    command += [str(inputs / n) for n in NAMES] + RECON + ["--out", str(out)]
    code, lines, rest, seconds = interrupt(
        command, signum, lambda ls: any(line.startswith("[3/16]") for line in ls)
    )
    check_one_line(code, lines, rest, signum, r"(\d+) of 16 input\(s\) finished; ")
    assert seconds < 20
    present = check_out(out, OUTPUTS)
    assert 2 <= len(present) < len(NAMES)


def _batch_command(kind: str, inputs: Path, out: Path) -> list[str]:
    command = [sys.executable, "-m", "sgilo.flows.cli"]
    if kind == "serve":
        command += ["serve", "--watch", str(inputs), "--once", "--settle", "0"]
    else:
        command += ["batch", str(inputs)]
    return command + RECON + ["--out", str(out)]


def _two_finished(lines: list[str]) -> bool:
    return sum(bool(re.search(r"s\d\d\.h5: done in ", line)) for line in lines) >= 2


@pytest.mark.parametrize(
    ("kind", "signum"),
    [("batch", signal.SIGTERM), ("batch", signal.SIGINT), ("serve", signal.SIGTERM)],
    ids=["batch-SIGTERM", "batch-SIGINT", "serve-once-SIGTERM"],
)
def test_batch(prefect_api_url, inputs, tmp_path, kind, signum, capsys):
    out = tmp_path / "out"
    code, lines, rest, seconds = interrupt(
        _batch_command(kind, inputs, out),
        signum,
        _two_finished,
        env={"PREFECT_API_URL": prefect_api_url},
    )
    check_one_line(code, lines, rest, signum, r"(\d+) of 16 input\(s\) finished; ")
    finished = int(re.search(r"; (\d+) of 16", rest[-1]).group(1))
    assert 2 <= finished < len(NAMES)
    assert seconds < 30
    present = check_out(out, OUTPUTS)
    markers = list((out / ".sgilo" / "done").glob("*.json"))
    # a marker is written just before the flow counts its input: the signal may land between
    assert finished <= len(markers) <= finished + 1 and len(present) >= len(markers)
    name = signal.Signals(signum).name
    assert f"ERROR interrupted by {name}; {finished} of 16" in (out / "run.log").read_text()
    if kind == "batch" and signum == signal.SIGINT:  # re-run: the rest is done
        assert main(["batch", str(inputs), *RECON, "--out", str(out)]) == 0
        summary = capsys.readouterr().out.strip().splitlines()[-1]
        assert f"{len(NAMES) - len(markers)} reconstructed, {len(markers)} skipped" in summary
        assert check_out(out, OUTPUTS) == NAMES


# a library that catches the KeyboardInterrupt of a signal and raises an ordinary error in its
# place, while the second input is reconstructed; every call is listed in CALLS
SWALLOWING = """
import os, signal, sys, time
import {module} as target

CALLS, original = sys.argv.pop(1), target.{name}

def swallowing(path, *args, **kwargs):
    with open(CALLS, "a") as f:
        f.write(os.path.basename(str(path)) + "\\n")
    if os.path.basename(str(path)) == "s01.h5":
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        except KeyboardInterrupt as exc:
            raise RuntimeError("a library's error in place of the interrupt") from exc
    return original(path, *args, **kwargs)

target.{name} = swallowing
from sgilo.flows.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("kind", ["reconstruct", "batch"])
def test_a_signal_turned_into_an_error_is_no_failure(prefect_api_url, inputs, tmp_path, kind):
    """A signal that a library catches and turns into an ordinary error still ends the command
    at once: the input it interrupted is unfinished, not failed, and no further input starts."""
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    target = ("sgilo.pipeline.reconstruct", "reconstruct_file")
    command = [kind, *(str(inputs / n) for n in NAMES[:4])]
    if kind == "batch":
        target = ("sgilo.flows.batch", "process_input")
        command = ["batch", str(inputs)]
    script = SWALLOWING.format(module=target[0], name=target[1])
    proc = subprocess.run(
        [sys.executable, "-c", script, str(calls), *command, *RECON, "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_API_URL": prefect_api_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 143, proc.stderr
    total = 4 if kind == "reconstruct" else 16
    expected = f"sgilo: interrupted by SIGTERM; 1 of {total} input(s) finished; "
    assert proc.stderr.splitlines()[-1] == expected + "re-run the same command to finish"
    assert calls.read_text().split() == ["s00.h5", "s01.h5"]
    assert check_out(out, OUTPUTS) == ["s00.h5"]


def _tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment holds ``SGILO_TEST_TAG=<tag>``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"SGILO_TEST_TAG={tag}".encode() in (
                entry / "environ"
            ).read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_ctrl_c_with_workers_and_no_server(inputs, tmp_path):
    """The default set-up with workers: no PREFECT_API_URL (Prefect's temporary server) and a
    Dask LocalCluster of 2 workers; Ctrl-C (SIGINT to the process group, workers included)
    ends it in one line, the cluster and the temporary server go too, and OUT is clean."""
    out, tag = tmp_path / "out", f"{os.getpid()}-{time.time_ns()}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    command = [sys.executable, "-m", "sgilo.flows.cli", "batch", str(inputs), *RECON]
    command += ["--out", str(out)]
    code, lines, rest, seconds = interrupt(
        command + ["--workers", "2"],
        signal.SIGINT,
        _two_finished,
        env={**env, "SGILO_TEST_TAG": tag},
    )
    check_one_line(code, lines, rest, signal.SIGINT, r"(\d+) of 16 input\(s\) finished; ")
    assert seconds < 30
    check_out(out, OUTPUTS)
    deadline = time.monotonic() + 10
    while _tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _tagged_processes(tag)  # no worker, nanny or temporary server left running


# ---- training: stop after the step, with a checkpoint

GAN = [
    *("--data", "mni-train", "--resolution", "16", "--style-dim", "16", "--channel-max", "16"),
    *("--batch", "2", "--checkpoint-every", "100000", "--seed", "3"),
]
SCORE = ["--space", "1", "--batch", "4", "--hidden", "16", "--depth", "1", "--seed", "5"]
CLI = [sys.executable, "-m", "sgilo.flows.cli"]


def _progress_step(line: str) -> int | None:
    """The step of a progress line (``step 20/100000 ...``, ``step 50 loss ...``)."""
    m = re.match(r"step (\d+)[/ ]", line)
    return int(m.group(1)) if m else None


def _reached(step: int):
    return lambda lines: any((_progress_step(line) or 0) >= step for line in lines)


def _state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_train_gan_stops_after_the_step_with_a_checkpoint(tmp_path: Path, signum) -> None:
    out = tmp_path / "run"
    command = [*CLI, "train-gan", "--out", str(out), "--steps", "100000", *GAN]
    code, lines, rest, _ = interrupt(command, signum, _reached(20))
    name = signal.Signals(signum).name
    assert code == 128 + signum, "\n".join(lines)
    assert any(f"sgilo: {name}: stopping after this step" in line for line in rest), rest
    m = re.fullmatch(
        rf"sgilo: interrupted by {name}; checkpoint written at step (\d+) \((\d+) images "
        r"seen\); the same command with --resume continues it",
        rest[-1],
    )
    assert m, "\n".join(rest)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    step = int(m.group(1))
    assert step >= 20 and int(m.group(2)) == 2 * step

    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert int(ckpt["step"]) == step
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == step
    assert (out / "samples" / f"step_{step:06d}.png").exists()
    _, info = load_generator(out / "generator.pt")  # finished, as at the end of a run
    assert info.extra["step"] == step and info.latent_stats is not None

    # the state of step `step` exactly: a run told to end there has the same networks
    ref = tmp_path / "ref"
    assert main(["train-gan", "--out", str(ref), "--steps", str(step), *GAN]) == 0
    ref_ckpt = torch.load(ref / "checkpoint.pt", weights_only=True)
    for key in ("g", "d", "g_ema"):
        assert _state_dicts_equal(ckpt[key], ref_ckpt[key]), key

    # and --resume goes on from it (a time budget ends this one)
    resumed = ["train-gan", "--out", str(out), "--steps", "100000", "--resume", *GAN]
    assert main([*resumed, "--max-minutes", "0.002"]) == 0
    assert int(torch.load(out / "checkpoint.pt", weights_only=True)["step"]) > step


def test_train_score_stops_after_the_step_with_its_state(tmp_path: Path) -> None:
    gan = tmp_path / "gan"
    assert main(["train-gan", "--out", str(gan), "--steps", "2", *GAN]) == 0
    generator = ["--generator", str(gan / "generator.pt")]
    out = tmp_path / "score"
    command = [*CLI, "train-score", *generator, "--out", str(out), "--steps", "1000000", *SCORE]
    code, lines, rest, _ = interrupt(command, signal.SIGTERM, _reached(50))
    assert code == 143, "\n".join(lines)
    assert re.fullmatch(
        r"sgilo: interrupted by SIGTERM; training state written to .*; the same command with "
        r"--resume continues it",
        rest[-1],
    ), "\n".join(rest)
    stopping = "sgilo: SIGTERM: stopping after this step, writing the training state"
    assert any(line.startswith(stopping) for line in rest), rest
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    state = torch.load(out / "train_state.pt", weights_only=True)
    step = int(state["step"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert step >= 50 and log[-1]["step"] == step

    ref = tmp_path / "ref"
    assert main(["train-score", *generator, "--out", str(ref), "--steps", str(step), *SCORE]) == 0
    ref_state = torch.load(ref / "train_state.pt", weights_only=True)
    for key in ("network", "ema"):
        assert _state_dicts_equal(state[key], ref_state[key]), key
    # --resume goes on from it
    args = ["train-score", *generator, "--out", str(out), "--resume", *SCORE]
    assert main([*args, "--steps", str(step + 3)]) == 0
    assert int(torch.load(out / "train_state.pt", weights_only=True)["step"]) == step + 3
