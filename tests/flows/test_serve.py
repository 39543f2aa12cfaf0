"""`sgilo serve --once`: one watch pass over a folder, on the session's Prefect test server.

A study is picked up once it has settled (not modified for --settle seconds), reconstructed
once, and skipped on later passes; a bad file is reported once, not on every pass.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import sgilo.flows.cli.batch
from sgilo.flows.cli import main


def _serve_once(watch: Path, out: Path, settle: float) -> list[str]:
    args = ["serve", "--watch", str(watch), "--out", str(out), "--method", "zero-filled"]
    return [*args, "--settle", str(settle), "--once"]


def _age(path: Path, seconds: float) -> None:
    """Pretend ``path`` was last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_watch_pass_picks_up_settled_studies_once(prefect_api, studies, tmp_path, capsys):
    watch, out = tmp_path / "incoming", tmp_path / "recon"
    old, fresh = studies(watch, ["old.h5", "fresh.h5"], seed=3)
    _age(old, 60)
    (watch / "broken.h5").write_text("not HDF5")
    _age(watch / "broken.h5", 60)

    # pass 1: old.h5 and broken.h5 have settled; fresh.h5 may still be being written
    assert main(_serve_once(watch, out, settle=30)) == 1
    captured = capsys.readouterr()
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("sgilo: error:")]
    assert len(errors) == 1 and errors[0].startswith("sgilo: error: broken.h5: ")
    assert "1 reconstructed" in captured.out
    assert (out / "old.h5").is_file() and not (out / "fresh.h5").exists()
    first = (out / "old.h5").stat().st_mtime_ns

    # pass 2: fresh.h5 has settled; old.h5 is done and broken.h5 known bad: neither is redone
    _age(fresh, 60)
    assert main(_serve_once(watch, out, settle=30)) == 0
    captured = capsys.readouterr()
    assert "1 reconstructed, 0 skipped" in captured.out and "sgilo: error" not in captured.err
    assert (out / "fresh.h5").is_file()
    assert (out / "old.h5").stat().st_mtime_ns == first

    # pass 3: nothing new
    assert main(_serve_once(watch, out, settle=30)) == 0
    assert "nothing new" in capsys.readouterr().out
    assert (out / "old.h5").stat().st_mtime_ns == first


def test_serve_without_a_server_says_how_to_start_one(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sgilo.flows.cli.batch, "prefect_api_url", lambda: None)
    (tmp_path / "watch").mkdir()
    args = ["serve", "--watch", str(tmp_path / "watch"), "--out", str(tmp_path / "out")]
    assert main([*args, "--method", "zero-filled"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "prefect server start --host 127.0.0.1" in lines[0]
    assert "PREFECT_API_URL" in lines[0]


@pytest.mark.parametrize("flag", [["--cron", "*/5 * * * *", "--interval", "60"]])
def test_cron_and_interval_exclude_each_other(flag, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--watch", str(tmp_path), "--out", str(tmp_path), "--method", "tv", *flag])
    assert exc.value.code == 2
