"""The MNI152 arrays from an exported archive equal nilearn's, and need no nilearn."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sgilo.pipeline.data import mni, mni_sources


@pytest.fixture
def fresh_cache():
    mni_sources.mni_arrays.cache_clear()
    yield
    mni_sources.mni_arrays.cache_clear()


def test_archive_round_trip_is_exact_and_needs_no_nilearn(tmp_path, monkeypatch, fresh_cache):
    reference = mni_sources.mni_arrays()
    path = mni_sources.export_archive(tmp_path / "mni.npz")
    assert path.stat().st_size < 20e6

    mni_sources.mni_arrays.cache_clear()
    monkeypatch.setenv(mni_sources.ARCHIVE_ENV, str(path))
    monkeypatch.setitem(sys.modules, "nilearn", None)  # any import of nilearn now fails
    loaded = mni_sources.mni_arrays()
    for name in ("t1", "affine", "gm", "wm", "mask"):
        a, b = getattr(reference, name), getattr(loaded, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b), name
        assert not b.flags.writeable, name
    volume, affine = mni.mni_volume()  # the slices' reader goes through the archive too
    assert np.array_equal(volume, reference.t1) and np.array_equal(affine, reference.affine)


def test_archive_without_the_arrays_is_refused(tmp_path, monkeypatch, fresh_cache):
    bad = tmp_path / "bad.npz"
    np.savez(bad, t1=np.zeros(3))
    monkeypatch.setenv(mni_sources.ARCHIVE_ENV, str(bad))
    with pytest.raises(ValueError, match="not an MNI archive"):
        mni_sources.mni_arrays()


def test_export_command_writes_the_archive(tmp_path, capsys):
    assert mni_sources.main([str(tmp_path / "out.npz")]) == 0
    assert (tmp_path / "out.npz").is_file()
    assert "SGILO_MNI_ARCHIVE=" in capsys.readouterr().out
