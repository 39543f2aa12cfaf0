"""The report of ``sgilo bench --suite ood``: BENCHMARKS_OOD.md and benchmarks_ood.json (under
``--out``, default ``docs``) from the cells :func:`sgilo.pipeline.research.ood_bench.run_ood_bench`
measured. Every table and summary is computed from those cells only; a summary whose rows were not
measured (``auto`` absent, no auto-λ rows) is left out, not filled in.

Definitions used by the summaries (a *file* is one slice of one group; a *case* is a file at one
setting):

- best single method of a case: the highest PSNR among the rows that are methods at their
  defaults (``METHODS``), ``auto`` excluded (the auto-λ and oracle rows are not methods);
- best classical: the same among zero-filled, CG-SENSE, ℓ1-wavelet and TV at their defaults;
- ``auto − best single`` and ``auto − best classical``: PSNR differences per case (dB);
- time ratio ``auto / sgilo``: the sum over settings of auto's seconds per slice over SGILO's.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sgilo.pipeline.data.ood import IN_DOMAIN
from sgilo.pipeline.research.ood_bench import ORACLE_SUFFIX, SNRS, OODBenchConfig, OODRow

CLASSICAL = ("zero-filled", "cg-sense", "l1-wavelet", "tv")
AUTO = "auto"


def _cases(rows: list[OODRow]) -> dict[tuple[str, str, str], dict[str, float]]:
    """PSNR per case ``(setting, group, label)`` and row name."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in rows:
        for g, lab, p in zip(r.groups, r.labels, r.psnr, strict=True):
            out.setdefault((r.setting, g, lab), {})[r.variant] = p
    return out


def _group_mean(rows: list[OODRow], attr: str) -> dict[tuple[str, str, str], float]:
    """Mean of ``attr`` ("psnr"/"ssim") per (setting, group, row) over the group's slices."""
    acc: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        for g, v in zip(r.groups, getattr(r, attr), strict=True):
            acc.setdefault((r.setting, g, r.variant), []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _order(rows: list[OODRow]) -> tuple[list[str], list[str], list[str]]:
    """Settings, groups and row names in the order they were measured (row names in the order
    of the setting with the most rows: single-coil settings have no CG-SENSE)."""
    settings = list(dict.fromkeys(r.setting for r in rows))
    groups = list(dict.fromkeys(g for r in rows for g in r.groups))
    per = [[r.variant for r in rows if r.setting == s] for s in settings]
    names = list(dict.fromkeys([*max(per, key=len, default=[]), *(r.variant for r in rows)]))
    return settings, groups, names


def setting_tables(rows: list[OODRow]) -> list[str]:
    """One PSNR and one SSIM table per setting: a row per method, a column per group."""
    settings, groups, names = _order(rows)
    psnr, ssim = _group_mean(rows, "psnr"), _group_mean(rows, "ssim")
    lines: list[str] = []
    for st in settings:
        here = [r for r in rows if r.setting == st]
        snr = {g: s for r in here for g, s in zip(r.groups, r.snr_db, strict=True)}
        head = " | ".join(f"{g} ({snr[g]:g} dB)" for g in groups if g in snr)
        cols = [g for g in groups if g in snr]
        for label, table in (("PSNR (dB)", psnr), ("SSIM", ssim)):
            fmt = "{:.2f}" if label.startswith("PSNR") else "{:.3f}"
            lines += [f"### {st}: {label}", "", f"| row | {head} | s/slice |"]
            lines.append("|---|" + "---:|" * (len(cols) + 1))
            for r in here:
                cells = [
                    fmt.format(table[(st, g, r.variant)]) if (st, g, r.variant) in table else "—"
                    for g in cols
                ]
                lines.append(
                    f"| {r.variant} | " + " | ".join(cells) + f" | {r.seconds_per_slice:.2f} |"
                )
            lines.append("")
    return lines


def group_means(rows: list[OODRow]) -> list[str]:
    """Mean PSNR per group over its settings and slices, a row per method."""
    _, groups, names = _order(rows)
    acc: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        for g, p in zip(r.groups, r.psnr, strict=True):
            acc.setdefault((g, r.variant), []).append(p)
    lines = [
        "## Summary: mean PSNR per group (dB, over its settings and slices)",
        "",
        "| row | " + " | ".join(groups) + " |",
        "|---|" + "---:|" * len(groups),
    ]
    for n in names:
        cells = [f"{np.mean(acc[(g, n)]):.2f}" if (g, n) in acc else "—" for g in groups]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _best(psnrs: dict[str, float], pool: tuple[str, ...]) -> tuple[float, str] | None:
    """The highest PSNR among the rows of ``pool`` (auto excluded) and its row name."""
    items = [(v, m) for m, v in psnrs.items() if m in pool and m != AUTO]
    return max(items) if items else None


def auto_summary(rows: list[OODRow], methods: list[str]) -> list[str]:
    """``auto − best single method`` and ``auto − best classical`` per case, file and overall,
    and auto's choices; empty when no ``auto`` row was measured."""
    if not any(r.variant == AUTO for r in rows):
        return []
    single_pool = tuple(m for m in methods if m != AUTO)
    cases = _cases(rows)
    choice: dict[tuple[str, str, str], str] = {}
    tests: dict[tuple[str, str, str], str] = {}
    for r in rows:
        if r.variant == AUTO and "auto_choice" in r.extra:
            for g, lab, c in zip(r.groups, r.labels, r.extra["auto_choice"], strict=True):
                choice[(r.setting, g, lab)] = c
            for k, text in enumerate(_statistics(r.extra)):
                tests[(r.setting, r.groups[k], r.labels[k])] = text
    per_file: dict[tuple[str, str], list[tuple[str, float, float, str]]] = {}
    for (st, g, lab), ps in cases.items():
        single, classical = _best(ps, single_pool), _best(ps, CLASSICAL)
        if AUTO not in ps or single is None or classical is None:
            continue
        kept = choice.get((st, g, lab), "?")
        kept += f" ({tests[(st, g, lab)]})" if (st, g, lab) in tests else ""
        per_file.setdefault((g, lab), []).append(
            (st, ps[AUTO] - single[0], ps[AUTO] - classical[0], kept)
        )
    if not per_file:
        return []
    all_single = [d for v in per_file.values() for _, d, _, _ in v]
    all_classical = [(d, g, lab, st) for (g, lab), v in per_file.items() for st, _, d, _ in v]
    ood = [d for (g, _), v in per_file.items() if g != IN_DOMAIN for _, d, _, _ in v]
    ind = [d for (g, _), v in per_file.items() if g == IN_DOMAIN for _, d, _, _ in v]
    worst = min(all_classical)
    lines = [
        "## Summary: `auto` against the single methods",
        "",
        f"- `auto − best single method`, mean over every case: **{np.mean(all_single):+.2f} dB**"
        f" ({len(all_single)} cases)"
        + (f"; OOD groups {np.mean(ood):+.2f} dB" if ood else "")
        + (f"; in-domain {np.mean(ind):+.2f} dB" if ind else "")
        + ".",
        f"- `auto − best classical`, worst case: **{worst[0]:+.2f} dB** ({worst[1]}, "
        f"{worst[2]}, {worst[3]}).",
        "",
        *(
            [
                "auto's choice per case, with the generative method's prior-fit ratio `r` "
                "(held-out error of the first split over the best classical one's; with a second "
                "fit, `second_fit_below`, over both held-out sets) and unexplained fraction `u` "
                "where recorded (docs/GENERATIVE.md):",
                "",
            ]
            if tests
            else []
        ),
        "| group | file | setting | auto − best single | auto − best classical | auto's choice |",
        "|---|---|---|---:|---:|---|",
    ]
    for (g, lab), v in per_file.items():
        for st, d1, d2, c in v:
            lines.append(f"| {g} | {lab} | {st} | {d1:+.2f} | {d2:+.2f} | {c} |")
        if len(v) > 1:
            m1, w2 = np.mean([x[1] for x in v]), min(x[2] for x in v)
            lines.append(f"| {g} | {lab} | mean / worst | {m1:+.2f} | {w2:+.2f} | |")
    counts: dict[str, Counter] = {}
    for (_, g, _), c in choice.items():
        counts.setdefault(g, Counter())[c] += 1
    if counts:
        lines += ["", "auto's choices per group (slices × settings):", ""]
        for g, cnt in counts.items():
            lines.append(f"- {g}: " + ", ".join(f"{m} {n}" for m, n in cnt.most_common()))
    return [*lines, ""]


def _statistics(extra: dict) -> list[str]:
    """Per slice ``"r 1.52, u 0.082"`` from an auto row's record: the prior-fit ratio from the
    held-out errors (the generative method's over the lowest classical one's) and the
    unexplained fraction, where recorded (empty without held-out errors)."""
    errors = extra.get("prior_fit_heldout_errors") or {}
    generative = [m for m in errors if m not in CLASSICAL]
    if len(generative) != 1 or len(errors) < 2:
        return []
    own = errors[generative[0]]
    lowest = np.min([errors[m] for m in errors if m in CLASSICAL], axis=0)
    ratios = [f"r {a / max(b, 1e-300):.2f}" for a, b in zip(own, lowest, strict=True)]
    u = extra.get("prior_fit_unexplained")
    if u is None:
        return ratios
    return [f"{r}, u {v:.3f}" for r, v in zip(ratios, u, strict=True)]


def lambda_summary(rows: list[OODRow]) -> list[str]:
    """ℓ1-wavelet and TV: default λ and auto λ against the oracle λ (an upper bound), per
    setting; empty without oracle rows."""
    cases = _cases(rows)
    lines: list[str] = []
    for m in ("l1-wavelet", "tv"):
        oracle, auto = m + ORACLE_SUFFIX, m + " (auto λ)"
        gaps: dict[str, list[tuple[float, float | None, str]]] = {}
        for (st, g, lab), ps in cases.items():
            if oracle in ps and m in ps:
                a = ps[auto] - ps[oracle] if auto in ps else None
                gaps.setdefault(st, []).append((ps[m] - ps[oracle], a, f"{g}: {lab}"))
        if not gaps:
            continue
        if not lines:
            lines = [
                "## Summary: λ against the oracle λ (an upper bound: λ picked on the target)",
                "",
                "| method | setting | default − oracle (mean, worst) | auto λ − oracle (mean) | "
                "auto λ − oracle (worst, file) |",
                "|---|---|---:|---:|---|",
            ]
        for st, v in gaps.items():
            d = [x[0] for x in v]
            a = [(x[1], x[2]) for x in v if x[1] is not None]
            amean = f"{np.mean([x[0] for x in a]):+.2f}" if a else "—"
            aworst = f"{min(a)[0]:+.2f} ({min(a)[1]})" if a else "—"
            lines.append(f"| {m} | {st} | {np.mean(d):+.2f}, {min(d):+.2f} | {amean} | {aworst} |")
    return [*lines, ""] if lines else []


def time_summary(rows: list[OODRow]) -> list[str]:
    """Seconds per slice of auto against SGILO, per setting and overall; empty unless both ran."""
    sec = {(r.setting, r.variant): r.seconds_per_slice for r in rows}
    settings = [s for s in dict.fromkeys(r.setting for r in rows) if (s, AUTO) in sec]
    settings = [s for s in settings if (s, "sgilo") in sec]
    if not settings:
        return []
    lines = [
        "## Summary: time of `auto` against SGILO",
        "",
        "| setting | auto (s/slice) | sgilo (s/slice) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for s in settings:
        a, b = sec[(s, AUTO)], sec[(s, "sgilo")]
        lines.append(f"| {s} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    ta, tb = (sum(sec[(s, k)] for s in settings) for k in (AUTO, "sgilo"))
    lines.append(f"| all | {ta:.2f} | {tb:.2f} | **{ta / tb:.2f}** |")
    return [*lines, ""]


def markdown_report(
    rows: list[OODRow], config: OODBenchConfig, command: str, total: int | None = None
) -> str:
    """The whole Markdown report (marked partial while fewer than ``total`` cells are done)."""
    from sgilo.pipeline.data.ood import ood_groups
    from sgilo.pipeline.provenance import git_revision
    from sgilo.pipeline.research.bench_report import machine_description
    from sgilo.pipeline.research.ood_bench import plan

    partial = total is not None and len(rows) < total
    groups = ood_groups(config.size, config.groups)
    design = plan(config)
    settings = [s.label for s in config.setting_objects()]
    lines = ["# Out-of-distribution benchmark", ""]
    if partial:
        lines += [
            f"**Partial: {len(rows)} of {total} cells measured so far.** Re-running the command "
            "below measures the rest (finished cells are reused).",
            "",
        ]
    lines += [
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')} "
        f"({machine_description(config.threads)}; code `{git_revision()[:12]}`).",
        "",
        f"Images at {config.size}² from `sgilo.pipeline.data.ood` (sources in its docstring); "
        "the prior was trained on axial slices of the MNI152 T1 template only, "
        f"`{IN_DOMAIN}` is its held-out in-domain reference. Simulated with a smooth random "
        "phase, birdcage coils (8-coil), complex noise and fastMRI random column masks (seed "
        f"{config.seed}); 8-coil methods use ESPIRiT maps from the calibration region. SNR per "
        f"(group, setting) cycles through {', '.join(f'{s:g}' for s in SNRS)} dB (table below). "
        "PSNR and SSIM per slice against the simulation's magnitude (data range = the slice "
        "maximum); s/slice: the solve of the setting's batch divided by its slices. Every method "
        "runs at its defaults"
        + (" (smoke run: a few iterations and steps only)" if config.smoke else "")
        + f"; the generative ones with the prior `{config.model or 'brain-t1-128'}`. "
        f"**Rows marked `{ORACLE_SUFFIX.strip(' ()')}` choose λ per slice by PSNR against the "
        "target: an upper bound, not a method.**",
        "",
        "| group | file | source | " + " | ".join(settings) + " |",
        "|---|---|---|" + "---|" * len(settings),
    ]
    for name, group in groups.items():
        for k, lab in enumerate(group.labels):
            snr = {s: f"{d:g} dB" for s, g, kk, d in design if g == name and kk == k}
            cells = [snr.get(i, "—") for i in range(len(settings))]
            lines.append(f"| {name} | {lab} | {group.source} | " + " | ".join(cells) + " |")
    lines += ["", *setting_tables(rows), *group_means(rows)]
    lines += auto_summary(rows, config.methods)
    lines += lambda_summary(rows)
    lines += time_summary(rows)
    return "\n".join(lines)


def write_ood_outputs(
    rows: list[OODRow],
    config: OODBenchConfig,
    out_dir: Path,
    command: str,
    total: int | None = None,
) -> Path:
    """``BENCHMARKS_OOD.md`` and ``benchmarks_ood.json`` under ``out_dir``; returns the first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "BENCHMARKS_OOD.md"
    md.write_text(markdown_report(rows, config, command, total) + "\n")
    report = {
        "command": command,
        "config": config.model_dump(),
        "complete": total is None or len(rows) >= total,
        "rows": [asdict(r) for r in rows],
    }
    (out_dir / "benchmarks_ood.json").write_text(json.dumps(report, indent=2) + "\n")
    return md
