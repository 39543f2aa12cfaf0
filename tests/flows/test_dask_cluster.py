"""`sgilo batch` on Dask beyond a LocalCluster: a real `dask scheduler` with two `dask worker`
processes reached through ``--dask-address``, and the GPU placement of ``--device cuda
--workers N`` (as pure functions: which GPU each worker sees, which cluster is built)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from sgilo.flows.cli import main
from sgilo.flows.dask_cluster import (
    cluster_plan,
    gpu_spec_cluster,
    gpu_worker_specs,
    visible_gpus,
    worker_gpus,
)
from sgilo.pipeline.batch import BatchOptions

BIN = Path(sys.executable).parent
NAMES = ["s0.h5", "s1.h5", "s2.h5", "s3.h5"]


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group we started (nanny and worker), SIGKILL what is left."""
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture
def dask_address(tmp_path, prefect_api_url) -> Iterator[str]:
    """A `dask scheduler` on a free port (its scheduler file gives the address) and two
    single-threaded `dask worker`s named w1 and w2 reporting to the test Prefect server; all torn
    down at the end, failed or not."""
    from distributed import Client

    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "OMP_NUM_THREADS": "1"}
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    scheduler_file = tmp_path / "scheduler.json"
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "dask"), *args],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    try:
        start(
            "scheduler",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert procs[0].poll() is None, (logs / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start in 60 s"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for name in ("w1", "w2"):
            start(
                name,
                "worker",
                address,
                "--name",
                name,
                "--nthreads",
                "1",
                "--no-dashboard",
                "--local-directory",
                str(tmp_path / f"dask-{name}"),
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        _stop(procs)


def _reconstruction(path: Path) -> bytes:
    with h5py.File(path, "r") as f:
        return np.ascontiguousarray(f["reconstruction"][()]).tobytes()


def test_batch_on_a_running_dask_cluster(dask_address, studies, tmp_path):
    """Four inputs through --dask-address: all reconstructed, outputs equal to the sequential
    run's, and run.json names both workers."""
    folder = tmp_path / "studies"
    studies(folder, NAMES)
    out = tmp_path / "out"
    args = ["batch", str(folder), "--method", "zero-filled"]
    assert main([*args, "--out", str(out), "--dask-address", dask_address]) == 0
    run = json.loads((out / "run.json").read_text())
    timings = run["timings"]
    assert sorted(Path(p).name for p in timings) == NAMES
    assert {t["status"] for t in timings.values()} == {"done"}
    assert {t["worker"] for t in timings.values()} == {"w1", "w2"}  # both did work

    sequential = tmp_path / "sequential"
    assert main([*args, "--out", str(sequential)]) == 0
    for name in NAMES:
        assert _reconstruction(out / name) == _reconstruction(sequential / name), name
    assert (
        "worker"
        not in json.loads((sequential / "run.json").read_text())["timings"][str(folder / NAMES[0])]
    )


# ----------------------------------------------------------------------------- GPU placement


def test_the_local_cluster_workers_inherit_the_allocator(prefect_api_url, monkeypatch):
    # task_runner puts the allocator's variables into this process's environment before it
    # plans a local cluster, whose spawned workers inherit them (tests/pipeline/test_allocator.py
    # shows a worker so started keeps its freed memory); a cluster of the user's own
    # (--dask-address) is left as it is
    from sgilo.flows.dask_cluster import task_runner
    from sgilo.pipeline import allocator

    if not allocator.worker_environment():
        pytest.skip(
            "this process kept glibc's defaults (a user setting or SGILO_KEEP_FREED_MEMORY=0)"
        )
    monkeypatch.setenv("PREFECT_API_URL", prefect_api_url)
    for name in ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.setenv(name, "")  # recorded, so that the test's end restores the original
        monkeypatch.delenv(name)
    task_runner(BatchOptions(method="zero-filled", dask_address="tcp://127.0.0.1:1"))
    assert "GLIBC_TUNABLES" not in os.environ  # someone else's cluster: nothing set
    task_runner(BatchOptions(method="zero-filled", workers=2))
    assert os.environ["GLIBC_TUNABLES"] == allocator.TUNABLES
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == str(allocator.TRIM_THRESHOLD)


def test_visible_gpus_from_cuda_visible_devices_or_the_count():
    assert visible_gpus(None, 3) == ["0", "1", "2"]
    assert visible_gpus("2, 5", 8) == ["2", "5"]  # the entries, not the count
    assert visible_gpus("GPU-1a2b,GPU-3c4d", 2) == ["GPU-1a2b", "GPU-3c4d"]
    assert visible_gpus("", 4) == []  # set but empty: no GPU


def test_one_worker_per_gpu_and_round_robin_beyond():
    assert worker_gpus(2, ["2", "5"]) == ["2", "5"]
    assert worker_gpus(1, ["2", "5"]) == ["2"]
    assert worker_gpus(5, ["2", "5"]) == ["2", "5", "2", "5", "2"]
    with pytest.raises(ValueError, match="no GPU"):
        worker_gpus(2, [])
    with pytest.raises(ValueError, match="at least 1"):
        worker_gpus(0, ["0"])


def _plan(device: str, workers: int, *, visible: str | None, count: int, dask_cuda: bool):
    options = BatchOptions(method="zero-filled", device=device, workers=workers)
    return cluster_plan(
        options,
        env={"PREFECT_API_URL": "http://x/api"},
        local_directory="/tmp/d",
        visible=visible,
        device_count=count,
        dask_cuda=dask_cuda,
    )


def test_cluster_plan_cpu_is_a_local_cluster_of_single_threaded_processes():
    cls, kwargs = _plan("cpu", 3, visible="0,1", count=2, dask_cuda=True)
    assert cls == "distributed.LocalCluster"
    assert (kwargs["n_workers"], kwargs["threads_per_worker"], kwargs["processes"]) == (3, 1, True)
    assert kwargs["env"] == {"PREFECT_API_URL": "http://x/api"}


def test_cluster_plan_cuda_uses_dask_cuda_when_installed_and_enough_gpus():
    cls, kwargs = _plan("cuda", 2, visible="3,1,0", count=8, dask_cuda=True)
    assert cls == "dask_cuda.LocalCUDACluster"
    assert kwargs["n_workers"] == 2 and kwargs["CUDA_VISIBLE_DEVICES"] == "3,1"
    assert kwargs["env"]["PREFECT_API_URL"] == "http://x/api"


@pytest.mark.parametrize(
    ("workers", "dask_cuda", "expected"),
    [(2, False, ["0", "1"]), (3, True, ["0", "1", "0"]), (3, False, ["0", "1", "0"])],
)
def test_cluster_plan_cuda_pins_one_nanny_per_gpu_otherwise(workers, dask_cuda, expected):
    cls, kwargs = _plan("cuda", workers, visible=None, count=2, dask_cuda=dask_cuda)
    assert cls is gpu_spec_cluster
    assert kwargs["gpus"] == expected
    specs = gpu_worker_specs(kwargs["gpus"], env=kwargs["env"], local_directory="/tmp/d")
    seen = [spec["options"]["env"]["CUDA_VISIBLE_DEVICES"] for spec in specs.values()]
    assert seen == expected
    options = [spec["options"] for spec in specs.values()]
    assert all(o["nthreads"] == 1 for o in options)
    assert all(o["env"]["PREFECT_API_URL"] == "http://x/api" for o in options)
    assert len(specs) == workers  # distinct names even where two workers share a GPU


def test_cluster_plan_cuda_without_a_gpu_is_an_error():
    with pytest.raises(ValueError, match="no GPU"):
        _plan("cuda", 2, visible="", count=0, dask_cuda=False)


def test_gpu_spec_cluster_starts_workers_that_see_their_gpu(tmp_path):
    """The fallback cluster really starts: each worker process has its own CUDA_VISIBLE_DEVICES
    (no GPU is needed to check the environment it was given)."""
    from distributed import Client

    env = {"OMP_NUM_THREADS": "1"}
    with gpu_spec_cluster(["7", "GPU-x"], env, str(tmp_path)) as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        seen = c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        handlers = c.run(lambda: signal.getsignal(signal.SIGINT))
    assert sorted(seen.values()) == ["7", "GPU-x"]
    assert set(handlers.values()) == {signal.SIG_IGN}


def test_local_cluster_workers_outlive_a_ctrl_c(tmp_path):
    """The CPU cluster of ``sgilo batch --workers 2`` as planned: a SIGINT to its worker
    processes (what a terminal's Ctrl-C sends to the process group) neither cancels their work
    nor closes them; the sgilo process alone ends the cluster (tests/flows/test_signals.py)."""
    from distributed import Client, LocalCluster

    _, kwargs = _plan("cpu", 2, visible=None, count=0, dask_cuda=False)
    kwargs = {**kwargs, "env": {"OMP_NUM_THREADS": "1"}, "local_directory": str(tmp_path)}
    with LocalCluster(**kwargs) as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        pids = c.run(os.getpid)
        work = c.submit(time.sleep, 2.0, pure=False)
        time.sleep(0.5)
        for pid in pids.values():
            os.kill(pid, signal.SIGINT)
        work.result(timeout=30)  # the task running during the signal finished
        time.sleep(0.5)
        assert c.run(os.getpid) == pids  # the same worker processes, still serving
