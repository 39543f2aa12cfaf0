"""Crash safety with real processes: `sgilo batch` killed with SIGKILL at 10 moments, re-run after
each kill, then run to completion, ends as an uninterrupted run does.

21 small inputs (fastMRI HDF5 single- and multi-coil, NIfTI volumes, DICOM series folders; 16x16
to 64x64, 2-3 slices) are reconstructed with zero-filled at R=4 into HDF5, NIfTI and DICOM. Kill
k waits until about (k + 1)/13 of the inputs are done (over all runs so far; a run that starts
past that point is killed while it starts), then lands at the next output event of a kind drawn
from a seeded RNG: a staging folder appearing (mid-write), outputs committed, a done marker
written, or a random delay. So the kills are spread over the batch and several land while an
input's outputs are being written (the test checks both). Afterwards every output is present and
opens (h5py, nibabel, pydicom), the HDF5 reconstructions and NIfTI files equal a clean reference
run's bit for bit (zero-filled is deterministic), OUT holds no staging folder and no hidden file
besides the `.sgilo` marker folder, and run.json lists every input, done or skipped, with its
SHA-256.

The staging folders' locks are also tested directly: a live staging folder (this process's or
another's) is never removed, a dead one is.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from sgilo.flows.cli import main
from sgilo.pipeline.io.staging import STAGING_PREFIX, StagedOutputs, remove_stale_staging
from sgilo.pipeline.provenance import sha256_file, sha256_path

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ["--method", "zero-filled", "--acceleration", "4", "--center-fraction", "0.08"]
OPTIONS += ["--format", "h5,nifti,dicom"]
SIZES = (16, 24, 32, 48, 64)
KILLS = 10

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- inputs


def _image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A disc plus noise, float32 ``shape`` (the last two axes are the image)."""
    rng = np.random.default_rng(seed)
    h, w = shape[-2:]
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2).astype(np.float32)
    return disc * 100 + 10 * rng.random(shape, np.float32)


def _kspace(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Fully sampled k-space of :func:`_image`, complex64 ``shape``."""
    ax = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(_image(shape, seed), axes=ax)), axes=ax)
    return k.astype(np.complex64)


def _dicom_series(folder: Path, n: int, slices: int, seed: int) -> None:
    folder.mkdir()
    series = generate_uid()
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.10"
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.11"
        ds.Modality = "MR"
        ds.PatientName, ds.PatientID = "Kill^Test", "kill-1"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        ds.Rows = ds.Columns = n
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = _image((n, n), seed + k).astype(np.uint16).tobytes()
        ds.save_as(folder / f"im{k}.dcm", enforce_file_format=True)


def build_inputs(folder: Path) -> dict[str, tuple[str, tuple[int, int, int]]]:
    """21 inputs in ``folder``; returns input name → (output stem, reconstruction shape)."""
    folder.mkdir(parents=True)
    expected = {}
    for i in range(6):  # single-coil fastMRI
        n, s = SIZES[i % 5], 2 + i % 2
        with h5py.File(folder / f"single{i}.h5", "w") as f:
            f.create_dataset("kspace", data=_kspace((s, n, n), i))
        expected[f"single{i}.h5"] = (f"single{i}", (s, n, n))
    for i in range(5):  # multi-coil fastMRI (2-4 coils)
        n = SIZES[(i + 2) % 5]
        with h5py.File(folder / f"multi{i}.h5", "w") as f:
            f.create_dataset("kspace", data=_kspace((2, 2 + i % 3, n, n), 10 + i))
        expected[f"multi{i}.h5"] = (f"multi{i}", (2, n, n))
    for i in range(5):  # NIfTI volumes
        n = SIZES[(i + 1) % 5]
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(_image((n, n, 3), 20 + i), affine), folder / f"vol{i}.nii.gz")
        expected[f"vol{i}.nii.gz"] = (f"vol{i}", (3, n, n))
    for i in range(5):  # DICOM series folders
        n = SIZES[(i + 3) % 5]
        _dicom_series(folder / f"series{i}", n, 3, 30 + 3 * i)
        expected[f"series{i}"] = (f"series{i}", (3, n, n))
    return expected


# ----------------------------------------------------------------------------- checks


def _outputs(stem: str, name: str) -> list[str]:
    h5 = name if name.endswith(".h5") else f"{stem}.h5"
    return [h5, f"{stem}.nii.gz", f"{stem}_dicom"]


def _recon_digest(path: Path) -> str:
    import hashlib

    with h5py.File(path, "r") as f:
        data = f["reconstruction"][()]
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def check_outputs(out: Path, expected: dict) -> dict[str, str]:
    """Every output of every input present and valid; returns output name → checksum (the
    HDF5 reconstruction's array, the NIfTI file's bytes)."""
    sums = {}
    for name, (stem, shape) in expected.items():
        h5, nii, dcm = _outputs(stem, name)
        with h5py.File(out / h5, "r") as f:
            recon = f["reconstruction"][()]
        assert recon.shape == shape and recon.dtype == np.float32, (name, recon.shape)
        assert np.isfinite(recon).all() and recon.max() > 0, name
        sums[h5] = _recon_digest(out / h5)
        volume = nib.load(out / nii)
        assert volume.shape == shape[::-1], (name, volume.shape)
        assert np.isfinite(np.asarray(volume.dataobj)).all(), name
        sums[nii] = sha256_file(out / nii)
        files = sorted((out / dcm).iterdir())
        assert len(files) == shape[0], (name, files)
        for path in files:
            assert pydicom.dcmread(path).pixel_array.shape == shape[1:], path
    return sums


def check_no_debris(out: Path, expected: dict) -> None:
    """OUT holds the outputs, run.json, run.log and .sgilo, and no other (hidden) entry."""
    names = {n for name, (stem, _) in expected.items() for n in _outputs(stem, name)}
    assert {p.name for p in out.iterdir()} == names | {"run.json", "run.log", ".sgilo"}
    hidden = [p for p in out.rglob(".*") if p.relative_to(out).parts[0] != ".sgilo"]
    assert not hidden, hidden  # no staging folder, temporary or moved-aside file anywhere


# ----------------------------------------------------------------------------- the kills


class Watch:
    """Output events in OUT since :meth:`rebase` (polled): staging folders and outputs that
    appeared, done markers written."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rebase()

    def rebase(self) -> None:
        self.before, self.markers0, self.new = self._names(), self.markers(), set()

    def _names(self) -> set[str]:
        try:
            return set(os.listdir(self.out))
        except FileNotFoundError:
            return set()

    def markers(self) -> int:
        """Done markers in OUT (written by every run so far)."""
        try:
            return sum(n.endswith(".json") for n in os.listdir(self.out / ".sgilo" / "done"))
        except FileNotFoundError:
            return 0

    def count(self, kind: str) -> int:
        """How many events of ``kind`` ("staging", "output", "marker") since the rebase."""
        if kind == "marker":
            return self.markers() - self.markers0
        self.new |= self._names() - self.before
        if kind == "staging":
            return sum(n.startswith(STAGING_PREFIX) for n in self.new)
        return sum(not n.startswith(".") and not n.startswith("run.") for n in self.new)


def kill_at_random_moment(
    command: list[str], env: dict, out: Path, target: int, rng: random.Random, log
) -> dict:
    """Start ``command`` and SIGKILL it once OUT holds ``target`` done markers, at the next
    event of a kind drawn from ``rng``: a staging folder appearing (the kill lands while an
    input's outputs are written), outputs committed, a done marker, or a random delay. Returns
    what was seen: the kind, whether the batch was still running, the markers at the kill and
    the staging folders it left."""
    kind = rng.choice(["staging", "staging", "output", "marker", "time"])
    watch = Watch(out)
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 180

        def wait(ready) -> None:
            while not ready() and proc.poll() is None:
                assert time.monotonic() < deadline, f"no {kind} event within 180 s"
                time.sleep(0.003)

        wait(lambda: watch.markers() >= target)
        if kind == "time":
            time.sleep(rng.uniform(0.0, 0.25))
        else:
            watch.rebase()
            wait(lambda: watch.count(kind) >= 1)
            time.sleep(rng.uniform(0.0, 0.01))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = sorted(p.name for p in out.glob(f"{STAGING_PREFIX}*"))
    return {"kind": kind, "alive": alive, "markers": watch.markers(), "left": left}


def test_sigkill_at_ten_moments_then_rerun(prefect_api, prefect_api_url, tmp_path):
    expected = build_inputs(tmp_path / "in")
    assert len(expected) >= 20
    ref = tmp_path / "ref"
    assert main(["batch", str(tmp_path / "in"), *OPTIONS, "--out", str(ref)]) == 0
    reference = check_outputs(ref, expected)

    out = tmp_path / "out"
    # one torch thread, as in this process (tests/conftest.py); the shared Prefect test server
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sgilo.flows.cli", "batch", str(tmp_path / "in"), *OPTIONS]
    command += ["--out", str(out)]
    rng = random.Random(20261204)
    kills = []
    with open(tmp_path / "runs.log", "wb") as log:
        targets = [round((k + 1) * len(expected) / (KILLS + 3)) for k in range(KILLS)]
        for target in targets:  # spread: kill k once about (k + 1) / 13 of the inputs are done
            kills.append(kill_at_random_moment(command, env, out, target, rng, log))
        markers_before = len(list((out / ".sgilo" / "done").glob("*.json")))
        final = subprocess.run(command, env=env, stdout=log, stderr=log, timeout=300)
    report = "\n".join(json.dumps(k) for k in kills)
    print(report)
    assert final.returncode == 0, (tmp_path / "runs.log").read_text()[-3000:]
    assert all(k["alive"] for k in kills), report  # each kill hit a running batch
    # spread over the run: progress at the kills differs, and some landed mid-write
    assert len({k["markers"] for k in kills}) >= 4 and kills[-1]["markers"] >= targets[-1], report
    assert markers_before < len(expected), report  # the final run still had work to do
    assert any(k["left"] for k in kills), report  # a kill left a staging folder behind

    assert check_outputs(out, expected) == reference
    check_no_debris(out, expected)
    assert len(list((out / ".sgilo" / "done").glob("*.json"))) == len(expected)

    record = json.loads((out / "run.json").read_text())
    inputs = {str(p) for p in (tmp_path / "in").iterdir()}
    assert {r["path"] for r in record["inputs"]} == inputs
    for r in record["inputs"]:
        assert r["sha256"] == sha256_path(r["path"]), r["path"]
    assert set(record["timings"]) == inputs
    statuses = [t["status"] for t in record["timings"].values()]
    assert set(statuses) <= {"done", "skipped"}
    assert statuses.count("skipped") >= markers_before
    assert record["config"]["out_dir"] == str(out.resolve())
    last = (out / "run.log").read_text().split(" input(s): zero-filled into ")[-1]
    assert last.count(": skipped in ") + last.count(": done in ") == len(expected)


# ----------------------------------------------------------------------------- staging locks

HOLDER = """
import sys, time
from sgilo.pipeline.io.staging import StagedOutputs
stage = StagedOutputs(sys.argv[1], label="held.h5")
stage.path("held.h5").write_bytes(b"partial")
print(stage.folder.name, flush=True)
time.sleep(120)
"""


def test_only_dead_staging_folders_are_removed(tmp_path):
    """A staging folder is removed once its owner is dead (SIGKILL), never while it lives,
    whether the owner is another process or this one; a lock-less one at once."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        theirs = out / holder.stdout.readline().strip()
        assert theirs.name.startswith(f"{STAGING_PREFIX}held_h5.") and theirs.is_dir()
        with StagedOutputs(out, label="mine.h5") as mine:
            assert remove_stale_staging(out) == []
            assert remove_stale_staging(out, "held.h5") == []
            assert theirs.is_dir() and mine.folder.is_dir()
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
            assert remove_stale_staging(out) == [theirs]  # its lock died with it
            assert mine.folder.is_dir()
        assert not mine.folder.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()

    # lock-less (an older sgilo's, or its creator killed before the lock): dead, however young
    old, young = out / f"{STAGING_PREFIX}old.h5.{'a' * 12}", out / f"{STAGING_PREFIX}new.{'b' * 12}"
    old.mkdir()
    young.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_staging(out) == [young, old]  # (in name order)


@pytest.mark.parametrize("moment", ["before the lock file", "before the lock"])
def test_a_cleaner_between_a_creators_mkdir_and_its_lock(tmp_path, monkeypatch, moment):
    """A cleaner that runs while a live creator is between ``mkdir`` and its lock removes the
    young lock-less folder; the creator notices and takes another name, which it keeps."""
    import fcntl

    from sgilo.pipeline.io import staging

    out = tmp_path / "out"
    out.mkdir()
    staging._swept.add(out.resolve())  # no sweep of its own at the first staging
    removed: list[Path] = []
    cleaned = []
    real_open, real_flock = os.open, fcntl.flock

    def cleaner_first(run):
        def wrapped(*args, **kwargs):
            if not cleaned:  # once, before the creator's first call (not the cleaner's own)
                cleaned.append(True)
                removed.extend(remove_stale_staging(out))
            return run(*args, **kwargs)

        return wrapped

    if moment == "before the lock file":
        monkeypatch.setattr(staging.os, "open", cleaner_first(real_open))
    else:
        monkeypatch.setattr(staging.fcntl, "flock", cleaner_first(real_flock))
    with StagedOutputs(out, label="scan.h5") as stage:
        monkeypatch.undo()
        assert len(removed) == 1 and not removed[0].exists()  # the first name, removed
        assert stage.folder != removed[0] and stage.folder.is_dir()
        assert remove_stale_staging(out) == []  # the second is locked: alive
        stage.path("scan.h5").write_bytes(b"data")
        assert [p.name for p in stage.commit()] == ["scan.h5"]
    assert sorted(p.name for p in out.iterdir()) == ["scan.h5"]
