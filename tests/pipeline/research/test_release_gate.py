"""The release gate compares a candidate prior's benchmark files with the released one's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgilo.pipeline.research import release_gate

DOCS = Path(__file__).resolve().parents[3] / "docs"
REFERENCE = (DOCS / "benchmarks.json", DOCS / "benchmarks_ood.json")


def _shifted(tmp_path: Path, mri: float, ood: float, **config) -> tuple[Path, Path]:
    """Copies of the reference files with SGILO's PSNR moved by ``mri`` / ``ood`` dB."""
    out = []
    for src, shift in zip(REFERENCE, (mri, ood), strict=True):
        data = json.loads(src.read_text())
        data["config"] |= config
        for row in data["rows"]:
            if row["method"] == "sgilo" and "psnr" in row:
                p = row["psnr"]
                row["psnr"] = [v + shift for v in p] if isinstance(p, list) else p + shift
        path = tmp_path / f"{src.stem}_cand.json"
        path.write_text(json.dumps(data))
        out.append(path)
    return tuple(out)


def test_gate_passes_only_when_both_suites_gain(tmp_path):
    args = ["--reference", *map(str, REFERENCE)]
    both = _shifted(tmp_path, 0.5, 0.25)
    assert release_gate.main([*args, "--candidate", *map(str, both)]) == 0
    table = release_gate.compare(REFERENCE, both)
    verdict = release_gate.gate(table, "sgilo")
    assert verdict["mean_delta"]["in-domain"] == pytest.approx(0.5)
    assert verdict["mean_delta"]["ood"] == pytest.approx(0.25)
    assert all(k[1] in release_gate.GENERATIVE for rows in table.values() for k in rows)
    # ILO is unchanged in these copies: its own gate does not pass
    assert not release_gate.gate(table, "ilo")["passes"]
    one = _shifted(tmp_path, 0.5, -0.1)
    md = tmp_path / "g.md"
    assert release_gate.main([*args, "--candidate", *map(str, one), "--out", str(md)]) == 1
    assert "does not pass" in md.read_text()
    assert release_gate.main([*args, "--candidate", *map(str, REFERENCE)]) == 1  # Δ = 0


def test_files_of_other_conditions_are_refused(tmp_path, capsys):
    other = _shifted(tmp_path, 1.0, 1.0, seed=7)
    args = ["--reference", *map(str, REFERENCE), "--candidate", *map(str, other)]
    assert release_gate.main(args) == 2
    assert "seed differs" in capsys.readouterr().out
