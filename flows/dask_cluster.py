"""Where the tasks of ``sgilo batch`` and ``sgilo serve`` run on Dask: a new local cluster of
``workers`` single-threaded processes, one per GPU with ``device="cuda"``, or an existing cluster.

GPU placement: the GPUs of this machine are the entries of ``CUDA_VISIBLE_DEVICES`` when it is set
(indices or UUIDs, as CUDA takes them), else ``0 … torch.cuda.device_count() − 1``. Worker ``i``
sees GPU ``devices[i mod len(devices)]`` alone (its ``CUDA_VISIBLE_DEVICES`` is that one entry, so
``cuda`` in the worker is that GPU): one worker per GPU when ``workers`` equals the number of GPUs,
and more workers than GPUs share them round-robin (a reconstruction leaves a GPU mostly idle, so
two workers on one GPU can still gain). With dask-cuda installed and no more workers than GPUs
the cluster is its ``LocalCUDACluster`` (the same placement, plus its CPU-affinity and memory
settings); else a :class:`distributed.SpecCluster` of nannies, each started with its own
``CUDA_VISIBLE_DEVICES``.

Every worker process of a cluster started here ignores SIGINT (a terminal's Ctrl-C reaches the
whole process group; the ``sgilo`` process ends the cluster itself): :mod:`sgilo.flows.dask_worker`.
And each starts with the allocator settings of the ``sgilo`` process
(:func:`sgilo.pipeline.allocator.worker_environment`): as environment variables the worker
process inherits when it is spawned (glibc reads them at start).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.task_runners import TaskRunner

from sgilo.flows.dask_worker import PRELOAD
from sgilo.pipeline.allocator import worker_environment
from sgilo.pipeline.batch import BatchOptions
from sgilo.pipeline.runtime import cache_dir


def visible_gpus(visible: str | None, device_count: int) -> list[str]:
    """The GPUs a process may use: the comma-separated entries of ``visible`` (the value of
    ``CUDA_VISIBLE_DEVICES``; ``None``: unset) or, when unset, ``"0" … str(device_count − 1)``.
    An empty ``visible`` means no GPU."""
    if visible is None:
        return [str(i) for i in range(device_count)]
    return [entry.strip() for entry in visible.split(",") if entry.strip()]


def worker_gpus(workers: int, gpus: list[str]) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each of ``workers`` workers: worker ``i`` gets
    ``gpus[i mod len(gpus)]``. Raises ValueError without a GPU or with ``workers`` < 1."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if not gpus:
        raise ValueError("--device cuda with --workers: no GPU visible (CUDA_VISIBLE_DEVICES)")
    return [gpus[i % len(gpus)] for i in range(workers)]


def gpu_worker_specs(
    gpus: list[str], *, env: dict[str, str], local_directory: str, host: str = "127.0.0.1"
) -> dict[str, dict[str, Any]]:
    """:class:`distributed.SpecCluster` worker specs: one single-threaded nanny per entry of
    ``gpus`` (:func:`worker_gpus`), named ``gpu<i>-<entry>``, its process started with
    ``CUDA_VISIBLE_DEVICES`` set to that entry (and ``env``) and the preload of
    :mod:`sgilo.flows.dask_worker`."""
    from distributed import Nanny

    specs = {}
    for i, gpu in enumerate(gpus):
        name = f"gpu{i}-{gpu}"
        specs[name] = {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "name": name,
                "host": host,
                "dashboard_address": ":0",
                "local_directory": local_directory,
                "env": {**env, "CUDA_VISIBLE_DEVICES": gpu},
                "preload": [PRELOAD],
            },
        }
    return specs


def gpu_spec_cluster(
    gpus: list[str], env: dict[str, str], local_directory: str, host: str = "127.0.0.1"
) -> Any:
    """A local :class:`distributed.SpecCluster` of one worker per entry of ``gpus`` (see
    :func:`gpu_worker_specs`); called by the Dask task runner."""
    from distributed import Scheduler, SpecCluster

    workers = gpu_worker_specs(gpus, env=env, local_directory=local_directory, host=host)
    scheduler = {"cls": Scheduler, "options": {"host": host, "dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, name="sgilo-gpu")


def cluster_plan(
    options: BatchOptions,
    *,
    env: dict[str, str],
    local_directory: str,
    visible: str | None,
    device_count: int,
    dask_cuda: bool,
) -> tuple[str | Any, dict[str, Any]]:
    """``(cluster_class, cluster_kwargs)`` of the new local cluster for ``options.workers``
    workers (``options.device`` "cpu": a LocalCluster of single-threaded processes; "cuda": one
    worker per GPU, see the module docstring). ``visible`` and ``device_count`` describe the
    GPUs, ``dask_cuda`` whether dask-cuda is importable: a pure function of its arguments."""
    n = options.workers
    if n is None:
        raise ValueError("a local cluster needs options.workers")
    common = {
        "host": "127.0.0.1",
        "dashboard_address": ":0",
        "local_directory": local_directory,
        "preload": [PRELOAD],  # workers ignore a terminal's Ctrl-C: see sgilo.flows.dask_worker
    }
    if options.device != "cuda":
        kwargs = {"n_workers": n, "threads_per_worker": 1, "processes": True, "env": env}
        return "distributed.LocalCluster", {**kwargs, **common}
    gpus = visible_gpus(visible, device_count)
    placement = worker_gpus(n, gpus)
    if dask_cuda and n <= len(gpus):
        kwargs = {"n_workers": n, "threads_per_worker": 1, "env": env}
        return "dask_cuda.LocalCUDACluster", {
            **kwargs,
            **common,
            "CUDA_VISIBLE_DEVICES": ",".join(placement),
        }
    return gpu_spec_cluster, {"gpus": placement, "env": env, "local_directory": local_directory}


def allocator_variables() -> dict[str, str]:
    """Give the workers of a local cluster started from now on the allocator of this process
    (:func:`sgilo.pipeline.allocator.worker_environment`; nothing if it kept glibc's defaults),
    through this process's environment, which a spawned worker inherits: Dask's nanny takes its
    ``pre-spawn-environ`` variable ``MALLOC_TRIM_THRESHOLD_`` from there before its config.
    Returns the variables set."""
    variables = worker_environment()
    os.environ.update(variables)
    return variables


def task_runner(options: BatchOptions) -> TaskRunner:
    """The Dask task runner for ``options``: the cluster at ``options.dask_address``, or a new
    local cluster (:func:`cluster_plan`) whose workers report to this flow's Prefect API."""
    from prefect_dask import DaskTaskRunner

    if options.dask_address is not None:
        return DaskTaskRunner(address=options.dask_address)
    scratch = cache_dir() / "dask"
    scratch.mkdir(parents=True, exist_ok=True)
    # workers report to this flow's Prefect API (on a temporary server they would start their own)
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    allocator_variables()  # after the Prefect server (if one starts) and before the workers
    device_count = 0
    if options.device == "cuda":
        import torch

        device_count = torch.cuda.device_count()
    cluster_class, cluster_kwargs = cluster_plan(
        options,
        env={"PREFECT_API_URL": api_url},
        local_directory=str(Path(scratch)),
        visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
        device_count=device_count,
        dask_cuda=importlib.util.find_spec("dask_cuda") is not None,
    )
    return DaskTaskRunner(cluster_class=cluster_class, cluster_kwargs=cluster_kwargs)
