"""`sgilo batch` on the session's Prefect test server: bad inputs reported while the rest
completes, provenance, skipping finished work, a SIGKILL in the middle, and a Dask LocalCluster.

Inputs: 4-coil k-space files of 4 slices of 32x32 (tests/flows/conftest.py ``write_studies``),
reconstructed with CG-SENSE on ESPIRiT maps (the slowest part is the Prefect bookkeeping).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from sgilo.flows.batch import batch_flow
from sgilo.flows.cli import main

GOOD = ["s0.h5", "s1.h5", "s2.h5"]
BAD = ["bad_text.h5", "empty.h5"]


def _reconstruction(path: Path) -> bytes:
    with h5py.File(path, "r") as f:
        return np.ascontiguousarray(f["reconstruction"][()]).tobytes()


def _mtimes(folder: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob(pattern))}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, studies) -> Path:
    """3 good studies, 2 bad files, and things a folder expansion must skip."""
    root = tmp_path_factory.mktemp("batch") / "studies"
    studies(root, GOOD)
    (root / "bad_text.h5").write_text("not HDF5 at all\n")
    (root / "empty.h5").write_bytes(b"")
    (root / ".partial.h5").write_bytes(b"hidden: still being copied")
    (root / "notes.txt").write_text("not an input")
    return root


@pytest.fixture(scope="module")
def first_run(prefect_api, tmp_path_factory) -> Path:
    """The output folder of the first test's run (the later tests compare with it)."""
    return tmp_path_factory.mktemp("out") / "recon"


def test_batch_reports_bad_inputs_and_completes(first_run, folder, capsys):
    out = first_run
    code = main(["batch", str(folder), "--method", "cg-sense", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("sgilo: error:")]
    assert len(errors) == 2
    assert "bad_text.h5" in errors[0] and "empty.h5" in errors[1]
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith("sgilo batch: 3 reconstructed, 0 skipped")
    assert "2 failed, of 5 input(s)" in summary
    assert sorted(p.name for p in out.glob("*.h5")) == GOOD
    for name in GOOD:
        with h5py.File(out / name, "r") as f:
            assert f["reconstruction"].shape == (4, 32, 32)
            assert f["reconstruction"].dtype == np.float32
    assert not list(out.glob(".sgilo-staging-*"))

    record = json.loads((out / "run.json").read_text())
    assert record["config"]["options"]["method"] == "cg-sense"
    assert record["config"]["out_dir"] == str(out.resolve())
    expected = {  # a failed input is never opened again for run.json (it may be a pipe)
        **{str(folder.absolute() / n): None for n in BAD},
        **{
            str(folder.absolute() / n): hashlib.sha256((folder / n).read_bytes()).hexdigest()
            for n in GOOD
        },
    }
    assert {r["path"]: r["sha256"] for r in record["inputs"]} == expected
    assert record["models"] == []
    timings = record["timings"]
    assert {Path(k).name: v["status"] for k, v in timings.items()} == {
        **dict.fromkeys(GOOD, "done"),
        **dict.fromkeys(BAD, "failed"),
    }
    assert all(v["seconds"] > 0 for k, v in timings.items() if Path(k).name in GOOD)
    assert record["versions"]["numpy"] == np.__version__
    assert record["versions"]["torch"] and record["python"].startswith("3.")
    assert record["git_revision"] and len(record["code_version"]) == 16
    assert record["started"] <= record["finished"]
    log = (out / "run.log").read_text()
    assert "ERROR bad_text.h5:" in log and "s0.h5: done" in log


def test_rerun_skips_finished_inputs(first_run, folder, capsys):
    out = first_run
    before = _mtimes(out, "*.h5")
    markers = _mtimes(out / ".sgilo" / "done", "*.json")
    assert len(before) == 3 and len(markers) == 3
    code = main(["batch", str(folder), "--method", "cg-sense", "--out", str(out)])
    assert code == 1
    assert "3 skipped (finished earlier)" in capsys.readouterr().out
    assert _mtimes(out, "*.h5") == before
    assert _mtimes(out / ".sgilo" / "done", "*.json") == markers
    last_run = (out / "run.log").read_text().split("batch of 5 input(s)")[-1]
    assert all(f"{n}: skipped" in last_run for n in GOOD)


def test_sigkill_then_rerun_completes_identically(prefect_api, prefect_api_url, studies, tmp_path):
    """Kill `sgilo batch` (SIGKILL) once its first output exists; the re-run finishes the rest
    and leaves every output as an uninterrupted run writes it."""
    names = [f"k{i}.h5" for i in range(6)]
    inputs = tmp_path / "in"
    studies(inputs, names, coils=8, seed=10)
    reference = batch_flow(
        [str(p) for p in sorted(inputs.iterdir())], str(tmp_path / "ref"), {"method": "cg-sense"}
    )
    assert not reference["failed"]

    out = tmp_path / "killed"
    done = out / ".sgilo" / "done"
    # one torch thread, as in this process (tests/conftest.py): bit-identical float sums
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sgilo.flows.cli", "batch", str(inputs)]
    command += ["--method", "cg-sense"]
    proc = subprocess.Popen(
        [*command, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (done.is_dir() and any(done.glob("*.json"))):
            assert proc.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline, "no output within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = _mtimes(done, "*.json")
    assert 1 <= len(finished) < len(names), "the kill did not land in the middle of the batch"

    assert main(["batch", str(inputs), "--method", "cg-sense", "--out", str(out)]) == 0
    assert _mtimes(done, "*.json").items() >= finished.items()  # not recomputed
    rerun_log = (out / "run.log").read_text().split("batch of 6 input(s)")[-1]
    assert rerun_log.count(": skipped") == len(finished)
    assert rerun_log.count(": done") == len(names) - len(finished)
    for name in names:
        assert _reconstruction(out / name) == _reconstruction(tmp_path / "ref" / name), name
    assert not list(out.glob(".sgilo-staging-*")) and not list(out.glob(".*.tmp"))


def test_workers_on_a_local_cluster_match_sequential(first_run, folder, tmp_path):
    """Two single-threaded Dask worker processes write the same outputs as the sequential run
    of the first test."""
    result = batch_flow(
        [str(folder / n) for n in GOOD + BAD],
        str(tmp_path),
        {"method": "cg-sense", "workers": 2},
    )
    assert [r["status"] for r in result["records"]] == ["done"] * 3 + ["failed"] * 2
    assert len(result["failed"]) == 2
    for name in GOOD:
        assert _reconstruction(tmp_path / name) == _reconstruction(first_run / name), name


def test_transient_errors_are_retried_bad_inputs_are_not(
    prefect_api, folder, tmp_path, monkeypatch
):
    """An OSError (say, a full disk) is retried and then succeeds; a bad input fails at once."""
    import sgilo.pipeline.reconstruct

    real, calls = sgilo.pipeline.reconstruct.reconstruct_file, []

    def flaky(path, *args, **kwargs):
        calls.append(Path(path).name)
        if calls.count(Path(path).name) == 1 and Path(path).name == "s0.h5":
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sgilo.pipeline.reconstruct, "reconstruct_file", flaky)
    inputs = [str(folder / "s0.h5"), str(folder / "bad_text.h5")]
    result = batch_flow(inputs, str(tmp_path), {"method": "zero-filled", "retry_delay_s": 0})
    assert [r["status"] for r in result["records"]] == ["done", "failed"]
    assert sorted(calls) == ["bad_text.h5", "s0.h5", "s0.h5"]  # s0 twice, the bad file once
    assert result["failed"][0].startswith("bad_text.h5: ")
