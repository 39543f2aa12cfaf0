"""atomic_path: the destination is the old file or the whole new one, never a part."""

from __future__ import annotations

import pytest

from sgilo.pipeline.io.atomic import atomic_path


def test_the_new_file_replaces_the_old_only_when_complete(tmp_path):
    path = tmp_path / "sub" / "out.nii.gz"
    with atomic_path(path, ".nii.gz") as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".out.nii.gz.")
        assert tmp.name.endswith(".tmp.nii.gz") and not path.exists()
        tmp.write_bytes(b"first")
    assert path.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.nii.gz"]  # no temporary left


def test_a_writer_that_never_made_the_file_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x.json"):
        pass
    assert not list(tmp_path.iterdir())


def test_a_failed_rename_removes_the_temporary(tmp_path):
    (tmp_path / "out").mkdir()  # a folder where the file should go: os.replace fails
    with pytest.raises(OSError), atomic_path(tmp_path / "out") as tmp:
        tmp.write_bytes(b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (tmp_path / "out").is_dir()
