"""Provenance records (pipeline/provenance.py) and the done markers and input discovery of
batches (pipeline/markers.py, pipeline/batch.py), without Prefect. Hashes are checked against
hashlib on the same bytes."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest

from sgilo.pipeline import provenance
from sgilo.pipeline.batch import BatchOptions, cache_key, expand_inputs, pending_inputs
from sgilo.pipeline.markers import read_done, write_done
from sgilo.pipeline.provenance import (
    git_revision,
    run_record,
    sha256_path,
    write_run_json,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_file_and_folder_hashes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    assert sha256_path(tmp_path / "a.bin") == _sha(b"abc")
    series = tmp_path / "series"
    series.mkdir()
    (series / "2.dcm").write_bytes(b"two")
    (series / "1.dcm").write_bytes(b"one")
    digest = sha256_path(series)
    expected = _sha(f"1.dcm\0{_sha(b'one')}\n2.dcm\0{_sha(b'two')}\n".encode())
    assert digest == expected
    (series / ".DS_Store").write_bytes(b"hidden files do not count")
    assert sha256_path(series) == digest
    (series / "2.dcm").write_bytes(b"TWO")
    assert sha256_path(series) != digest


def test_run_record_fields_and_atomic_write(tmp_path):
    inp = tmp_path / "scan.h5"
    inp.write_bytes(b"k-space")
    model = tmp_path / "generator.pt"
    model.write_bytes(b"weights")
    started = provenance.now_iso()
    record = run_record(
        {"method": "tv", "out": tmp_path},
        [inp],
        [model],
        started=started,
        timings={str(inp): {"status": "done", "seconds": 1.5}},
    )
    assert record["config"] == {"method": "tv", "out": str(tmp_path)}
    assert record["inputs"] == [{"path": str(inp), "sha256": _sha(b"k-space")}]
    assert record["models"] == [{"path": str(model), "sha256": _sha(b"weights")}]
    assert record["timings"][str(inp)]["seconds"] == 1.5
    versions = record["versions"]
    assert versions["numpy"] == np.__version__ and versions["torch"] and versions["h5py"]
    assert {"pydicom", "nibabel", "sigpy", "prefect"} <= set(versions)
    assert record["python"].count(".") == 2
    assert record["git_revision"] == git_revision()
    assert started <= record["finished"]
    path = write_run_json(tmp_path / "out", record)
    assert path == tmp_path / "out" / "run.json"
    assert json.loads(path.read_text()) == record
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary left


def test_git_revision_reads_refs_without_git(tmp_path):
    assert git_revision(tmp_path) == "unknown"
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs\n" + "a" * 40 + " refs/heads/main\n")
    assert git_revision(tmp_path) == "a" * 40
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert git_revision(tmp_path) == "b" * 40
    (git / "HEAD").write_text("c" * 40 + "\n")  # detached
    assert git_revision(tmp_path) == "c" * 40


def test_expand_inputs_sorted_hidden_skipped_series_kept(tmp_path):
    for name in ("b.h5", "a.nii.gz", "c.nii", "d.dcm", ".hidden.h5", "notes.txt", "x.H5"):
        (tmp_path / name).write_bytes(b"x")
    series, other = tmp_path / "series1", tmp_path / "misc"
    series.mkdir()
    other.mkdir()
    (series / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"rest")  # DICOM without suffix
    (other / "readme.md").write_text("not a series")
    found = expand_inputs([tmp_path, tmp_path / "b.h5"])
    assert [p.name for p in found] == ["a.nii.gz", "b.h5", "c.nii", "d.dcm", "series1", "x.H5"]


def test_cache_key_depends_on_content_name_config_and_code():
    opts = BatchOptions(method="tv", recon={"acceleration": 4.0, "center_fraction": 0.08})
    base = cache_key("a.h5", "0" * 64, opts, {}, "code1")
    assert base == cache_key("a.h5", "0" * 64, opts, {}, "code1")
    other = BatchOptions(method="tv", recon={"acceleration": 8.0, "center_fraction": 0.08})
    assert base != cache_key("a.h5", "1" * 64, opts, {}, "code1")
    assert base != cache_key("b.h5", "0" * 64, opts, {}, "code1")
    assert base != cache_key("a.h5", "0" * 64, other, {}, "code1")
    assert base != cache_key("a.h5", "0" * 64, opts, {"g.pt": "f" * 64}, "code1")
    assert base != cache_key("a.h5", "0" * 64, opts, {}, "code2")
    # where the tasks run does not change the outputs
    assert base == cache_key("a.h5", "0" * 64, opts.model_copy(update={"workers": 2}), {}, "code1")


def test_batch_options_are_strict():
    with pytest.raises(ValueError):
        BatchOptions(method="tv", unknown=1)
    with pytest.raises(ValueError):
        BatchOptions(method="magic")
    with pytest.raises(ValueError):
        BatchOptions(method="tv", recon={"prior": "x"})
    with pytest.raises(ValueError):
        BatchOptions(method="tv", workers=2, dask_address="tcp://127.0.0.1:8786")


def test_done_marker_is_trusted_only_while_outputs_are_intact(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.h5").write_bytes(b"reconstruction")
    series = out / "a_dicom"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"slice")
    write_done(out, "k1", {"name": "a.h5"}, [out / "a.h5", series])
    marker = read_done(out, "k1")
    assert marker["outputs"] == [str((out / "a.h5").resolve()), str(series.resolve())]
    assert read_done(out, "other") is None
    (series / "1.dcm").write_bytes(b"SLICE")  # same size, other content
    assert read_done(out, "k1") is None
    (series / "1.dcm").write_bytes(b"slice")
    assert read_done(out, "k1") is not None
    (out / "a.h5").unlink()
    assert read_done(out, "k1") is None


def test_pending_inputs_wait_for_files_to_settle(tmp_path):
    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "new.h5").write_bytes(b"being copied")
    opts = BatchOptions(method="zero-filled")
    pending, held = pending_inputs(watch, tmp_path / "out", opts, {}, settle_s=30)
    assert pending == [] and held == {"new.h5": "settling"}
    later = time.time() + 60
    pending, held = pending_inputs(watch, tmp_path / "out", opts, {}, settle_s=30, now=later)
    assert pending == [watch / "new.h5"] and held == {}
