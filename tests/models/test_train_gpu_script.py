"""models/runs/train_gpu.sh, the prepared GPU training script, run on the CPU as the bare CUDA
machine would run it: a python3 without nilearn, the MNI152 arrays from an archive, a fresh run,
then the run continued from a run folder at a new batch (FROM, NEW_BATCH) on synth-brain mixed
with the mni-train slices (DATA=synth-mix)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sgilo.pipeline.data.mni_sources import export_archive

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "models" / "runs" / "train_gpu.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"),
]


def _bare_python(tmp_path: Path) -> Path:
    """A ``python3`` on PATH that is this interpreter with ``import nilearn`` failing."""
    fake = tmp_path / "no-nilearn" / "nilearn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no nilearn on this machine')\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python3"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH={fake.parent}:$PYTHONPATH exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return bin_dir


def _run(tmp_path: Path, bin_dir: Path, out: str, **env: str) -> str:
    full = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PKG": str(tmp_path / "pkg"),
        "SKIP_WHEELS": "1",
        "DEVICE": "cpu",
        "SCORE_STEPS": "0",
        "GAN_MINUTES": "0.0001",  # one step
        "OMP_NUM_THREADS": "1",
        "OUT": str(tmp_path / out),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def test_fresh_run_then_continued_at_a_new_batch_without_nilearn(tmp_path):
    archive = export_archive(tmp_path / "mni.npz")
    bin_dir = _bare_python(tmp_path)
    first = tmp_path / "first"
    _run(tmp_path, bin_dir, "out1", RUN=str(first), SGILO_MNI_ARCHIVE=str(archive))
    out1 = tmp_path / "out1"
    assert {p.name for p in out1.iterdir()} >= {"generator.pt", "log.jsonl", "last_samples.png"}
    parts = sorted(out1.glob("checkpoint.pt.part-*"))
    joined = b"".join(p.read_bytes() for p in parts)
    assert parts and joined == (first / "checkpoint.pt").read_bytes()

    # a run folder as committed in the repository: its checkpoint goes on at batch 16, with the
    # mni-train slices (as the .npy file gpu_prepare.sh writes) mixed in
    import numpy as np

    from sgilo.pipeline.data.mni import mni_slices

    npy = tmp_path / "mni_train_128.npy"
    np.save(npy, mni_slices("train", 128).astype(np.float32))
    committed = tmp_path / "committed"
    committed.mkdir()
    shutil.copy(first / "checkpoint.pt", committed / "checkpoint.pt")
    second = tmp_path / "second"
    err = _run(
        tmp_path,
        bin_dir,
        "out2",
        RUN=str(second),
        FROM=str(committed),
        BATCH="16",
        NEW_BATCH="1",
        DATA="synth-mix",
        MNI_TRAIN_NPY=str(npy),
        REAL_FRACTION="0.5",
        SGILO_MNI_ARCHIVE=str(archive),
    )
    assert "synth-brain: on the fly, 50% of each batch" in err
    assert "mni_train_128.npy: 101 images, 50% of each batch" in err
    before = torch.load(committed / "checkpoint.pt", map_location="cpu", weights_only=True)
    after = torch.load(second / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert after["step"] == before["step"] + 1
    assert after["images_seen"] == before["images_seen"] + 16
    assert after["train_config"]["batch_size"] == 16
    log = [json.loads(line) for line in (tmp_path / "out2" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == after["step"]
