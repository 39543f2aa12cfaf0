"""The release gate of a new prior: does it beat the released one where it matters?

A candidate prior (a run of models/runs/, or any generator) replaces the released one only if
the generative methods do better with it on **both** benchmark suites (models/weights/
PROVENANCE.md; issue 22): the in-domain MNI validation benchmark (``sgilo bench``,
``benchmarks.json``) and the out-of-distribution suite (``sgilo bench --suite ood``,
``benchmarks_ood.json``). Run both for the candidate (``--model DIR``; the classical rows do not
depend on the prior, ``--methods csgm,ilo,sgilo,auto`` is enough) with the reference's conditions,
then::

    python -m sgilo.pipeline.research.release_gate \\
        --reference docs/benchmarks.json docs/benchmarks_ood.json \\
        --candidate cand/benchmarks.json cand-ood/benchmarks_ood.json

For each generative method in both files and each setting it gives Δ = candidate − reference
PSNR (dB): the in-domain row's volume PSNR; for the OOD suite the mean over its cases (one per
group) and over its brain groups (coronal, sagittal, T2-/PD-like). The **gate** (on ``--method``,
SGILO by default): the mean Δ over the settings is positive on both suites. Exit status 0 when it
passes, 1 when it does not, 2 when the files cannot be compared (other settings, slices,
groups, SNR or seed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["BRAIN_GROUPS", "GENERATIVE", "compare", "gate", "main", "markdown"]

#: the methods whose figures depend on the prior
GENERATIVE: tuple[str, ...] = ("csgm", "ilo", "sgilo", "auto")
#: the OOD suite's brain groups the prior should generalize to (issue 22's targets)
BRAIN_GROUPS: tuple[str, ...] = ("mni-coronal", "mni-sagittal", "synthetic-t2", "synthetic-pd")
#: config fields that must agree between reference and candidate (when both record them)
_SAME = ("num_slices", "size", "settings", "groups", "snr_db", "seed")


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "rows" not in data or "config" not in data:
        raise ValueError(f"{path}: not a benchmark JSON of sgilo bench")
    return data


def _check_same(ref: dict[str, Any], cand: dict[str, Any], name: str) -> None:
    for key in _SAME:
        a, b = ref["config"].get(key), cand["config"].get(key)
        if a is not None and b is not None and a != b:
            raise ValueError(f"{name}: {key} differs (reference {a!r}, candidate {b!r})")


def _mri_psnr(data: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {(r["setting"], r["method"]): float(r["psnr"]) for r in data["rows"] if "psnr" in r}


def _ood_psnr(data: dict[str, Any], groups: tuple[str, ...] | None) -> dict[tuple[str, str], float]:
    out = {}
    for r in data["rows"]:
        if r.get("kind", "method") != "method" or "psnr" not in r:
            continue
        pairs = zip(r["groups"], r["psnr"], strict=True)
        values = [float(p) for g, p in pairs if not groups or g in groups]
        if values:
            out[(r["setting"], r["method"])] = sum(values) / len(values)
    return out


def compare(
    reference: tuple[Path, Path], candidate: tuple[Path, Path]
) -> dict[str, dict[tuple[str, str], tuple[float, float]]]:
    """Per suite (``"in-domain"``, ``"ood"``, ``"ood brain groups"``): {(setting, method):
    (reference PSNR, candidate PSNR)} for the generative methods both files hold."""
    ref_mri, cand_mri = _load(reference[0]), _load(candidate[0])
    ref_ood, cand_ood = _load(reference[1]), _load(candidate[1])
    _check_same(ref_mri, cand_mri, "in-domain")
    _check_same(ref_ood, cand_ood, "ood")
    tables = {
        "in-domain": (_mri_psnr(ref_mri), _mri_psnr(cand_mri)),
        "ood": (_ood_psnr(ref_ood, None), _ood_psnr(cand_ood, None)),
        "ood brain groups": (_ood_psnr(ref_ood, BRAIN_GROUPS), _ood_psnr(cand_ood, BRAIN_GROUPS)),
    }
    out = {}
    for suite, (ref, cand) in tables.items():
        keys = sorted(k for k in ref.keys() & cand.keys() if k[1] in GENERATIVE)
        out[suite] = {k: (ref[k], cand[k]) for k in keys}
    return out


def gate(table: dict[str, dict[tuple[str, str], tuple[float, float]]], method: str) -> dict:
    """Mean Δ of ``method`` per suite and whether the gate passes (module docstring)."""
    means = {}
    for suite in ("in-domain", "ood"):
        deltas = [c - r for (_, m), (r, c) in table[suite].items() if m == method]
        if not deltas:
            raise ValueError(f"{suite}: no {method} rows in both files")
        means[suite] = sum(deltas) / len(deltas)
    return {"method": method, "mean_delta": means, "passes": all(d > 0 for d in means.values())}


def markdown(table: dict[str, dict[tuple[str, str], tuple[float, float]]], verdict: dict) -> str:
    """The comparison and the verdict as Markdown."""
    lines = []
    for suite, rows in table.items():
        lines += [f"### {suite}", "", "| setting | method | reference | candidate | Δ |"]
        lines.append("|---|---|---:|---:|---:|")
        for (setting, method), (r, c) in rows.items():
            lines.append(f"| {setting} | {method} | {r:.2f} | {c:.2f} | {c - r:+.2f} |")
        lines.append("")
    means = ", ".join(f"{s} {d:+.2f} dB" for s, d in verdict["mean_delta"].items())
    word = "passes" if verdict["passes"] else "does not pass"
    lines.append(f"**Gate ({verdict['method']}, mean Δ over settings): {means}: {word}.**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", nargs=2, type=Path, required=True, metavar=("MRI", "OOD"))
    parser.add_argument("--candidate", nargs=2, type=Path, required=True, metavar=("MRI", "OOD"))
    parser.add_argument("--method", default="sgilo", choices=GENERATIVE)
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    try:
        table = compare(tuple(args.reference), tuple(args.candidate))
        verdict = gate(table, args.method)
    except (OSError, ValueError, KeyError) as exc:
        print(f"release_gate: error: {exc}")
        return 2
    text = markdown(table, verdict)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if verdict["passes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
