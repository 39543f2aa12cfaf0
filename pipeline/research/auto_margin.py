"""Choosing the prior margin of ``auto`` and of the prior-fit warning on a tuning set.

``auto`` keeps the generative method on a slice unless its held-out k-space error exceeds
``τ`` times the best classical one (:mod:`sgilo.pipeline.method_choice`). ``τ`` is chosen here, on
a *tuning set* that no benchmark scores:

- two MNI **training** axial slices (the prior's own domain);
- coronal slices y = 100, 135 and sagittal slices x = 80, 115 of the template (the OOD suite,
  :mod:`sgilo.pipeline.data.ood`, uses other positions);
- a synthetic T2-like slice from the tissue maps at a **training** z;
- the abdomen-like phantom with texture seed 7 (the suite uses seed 0);
- four **unseen in-domain** axial T1 slices: the template's own contrast at training-split
  planes, each smoothly deformed (a new "subject"), zoomed and shifted by
  :func:`sgilo.pipeline.data.synth_brain.synth_brain_batch` (:data:`UNSEEN_AXIAL`, seed 11; no
  head, tilt, bias, blur or noise). The prior never saw them, unlike the two training slices,
  whose held-out ratios are flattered by memorization.

A second set of 12 (``--images extra``, :func:`extra_tuning_images`; simulated as its own batch,
so its rows are measured and kept apart): further unseen synthetic slices of the same generator
(3 axial, 2 coronal, 2 sagittal, 2 axial with a synthetic head: scalp, skull and CSF, one T2-like
and one PD-like axial slice, seeds 12–17) and the abdomen-like phantom at its kidney level with
texture seed 9. ``--images`` (default both) says which sets' rows are kept, measured and
tabulated; both together resolve about twice as finely as one.

A third set, opt-in (``--images base extra heads``, :func:`head_tuning_images`): 8 axial slices of
new subjects with a synthetic scalp, skull and CSF (the unseen axial slices' generator with
``head_prob`` 1, training planes, seed :data:`HEADS_SEED`), the kind of scan that is not
skull-stripped; its rows are docs/auto_margin_heads.json (docs/GENERATIVE.md, "New subjects").

The margin is chosen per acceleration (:data:`sgilo.pipeline.prior_fit.PRIOR_MARGINS`): the rows
of each acceleration give their own table, and :func:`choose_margin` takes the smallest ``τ``
whose mean loss to the best single method is within :data:`TIE_DB` of the lowest.

For every setting (single- and 8-coil, 4× and 8×, 30 dB SNR, ESPIRiT maps) it runs SGILO at its
defaults (whose diagnostics carry the held-out errors of SGILO and of every classical candidate)
and each classical method on all samples, and records per slice the PSNRs and the errors.
:func:`margin_table` then gives, per ``τ``, auto's mean loss against the best single method and its
worst loss against the best classical one (the classical method picked by its single-fold error,
as the ranking before the k-fold one was added: a pessimistic stand-in).

    python -m sgilo.pipeline.research.auto_margin --out rows.json   # ~25 min on idle 2 cores
    python -m sgilo.pipeline.research.auto_margin --rows rows.json --out rows.json  # only the
                                                  # tuning slices missing from rows.json
    python -m sgilo.pipeline.research.auto_margin --rows rows.json --out rows.json \
        --remeasure "8-coil 4x" "8-coil 8x"       # those settings again (new classical defaults)

Rows measured since the unexplained fraction exists (:func:`sgilo.pipeline.prior_fit.
unexplained_fraction`) carry it (``unexplained``); for the accelerations whose rows all do,
:func:`limit_table` gives auto's mean loss over a grid of margins ``τ`` × limits ``θ`` (SGILO kept
where its ratio is at most ``τ`` *and* its unexplained fraction at most ``θ``), and
:func:`choose_margin_and_limit` the pair (its ``θ`` is ``UNEXPLAINED_LIMIT``; its ``τ`` was
the 8× margin of both kinds of data until each kind got its own, below; a kind's own ``θ``:
:func:`choose_kind_limit`)::

    python -m sgilo.pipeline.research.auto_margin --rows docs/auto_margin.json --out rows.json \
        --remeasure "single-coil 8x" "8-coil 8x"  # 8x rows with the unexplained fraction, 10 min

The same tables per kind of data follow (single-coil rows, 8-coil rows), and, with ``θ`` fixed
by all rows, each kind's own margin (:func:`choose_margin` with that limit: the 8× entries of
:data:`sgilo.pipeline.prior_fit.SINGLE_COIL_PRIOR_MARGINS` and ``PRIOR_MARGINS``; one coil's one
or two held-out columns make the ratio noisier than eight coils')::

    python -m sgilo.pipeline.research.auto_margin --rows docs/auto_margin.json --out rows.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

CLASSICAL = ("cg-sense", "l1-wavelet", "tv")
TAUS = (1.0, 1.1, 1.2, 1.3, 1.5, 1.8, 2.0, 2.5, 3.0, float("inf"))
#: the limits of the unexplained fraction tried with each τ (``inf``: no limit)
LIMITS = (*(round(0.05 + 0.01 * k, 2) for k in range(16)), float("inf"))


#: the unseen in-domain tuning slices' generator settings (axial, template contrast, deformed)
UNSEEN_AXIAL = {
    "family_probs": (1.0, 0.0, 0.0),
    "oblique_prob": 0.0,
    "head_prob": 0.0,
    "contrast_probs": (1.0, 0.0, 0.0, 0.0, 0.0),
    "gamma_std": 0.0,
    "bias_prob": 0.0,
    "lowres_prob": 0.0,
    "blur_prob": 0.0,
    "noise_prob": 0.0,
}
UNSEEN_SEED, UNSEEN_COUNT = 11, 4
#: the extra set's synthetic slices: (name, count, seed, changes to :data:`UNSEEN_AXIAL`)
EXTRA_SYNTH: tuple[tuple[str, int, int, dict], ...] = (
    ("axial", 3, 12, {}),
    ("coronal", 2, 13, {"family_probs": (0.0, 1.0, 0.0)}),
    ("sagittal", 2, 14, {"family_probs": (0.0, 0.0, 1.0)}),
    ("axial-head", 2, 15, {"head_prob": 1.0}),
    ("axial-t2", 1, 16, {"contrast_probs": (0.0, 0.0, 1.0, 0.0, 0.0)}),
    ("axial-pd", 1, 17, {"contrast_probs": (0.0, 0.0, 0.0, 1.0, 0.0)}),
)


def tuning_images(size: int = 128) -> tuple[np.ndarray, list[str]]:
    """The tuning set of the module docstring: float32 ``(12, size, size)`` and a name each."""
    from sgilo.pipeline.data import mni, ood

    volume, _ = mni.mni_volume()
    train = mni.mni_slices("train", size)
    images, names = [train[5], train[40]], ["train-axial-5", "train-axial-40"]
    for y in (100, 135):
        images.append(ood._prepare(np.flipud(np.fliplr(volume[:, y, :].T)), size))
        names.append(f"coronal-y{y}")
    for x in (80, 115):
        images.append(ood._prepare(np.flipud(np.fliplr(volume[x, :, :].T)), size))
        names.append(f"sagittal-x{x}")
    t2 = sum(w * m for w, m in zip(ood.CONTRASTS["synthetic-t2"], ood._tissue_maps(), strict=True))
    z = mni.mni_slice_z("train")[30]
    images.append(ood._prepare(mni.axial_display_slice(t2, z), size))
    names.append(f"t2-train-z{z}")
    images.append(ood._prepare(ood.body_phantom(0, seed=7), size))
    names.append("abdomen-seed7")
    from sgilo.pipeline.data.synth_brain import SynthBrainConfig, synth_brain_batch

    unseen = synth_brain_batch(
        UNSEEN_COUNT, UNSEEN_SEED, size, "train", SynthBrainConfig(**UNSEEN_AXIAL)
    )
    images.extend(unseen.numpy())
    names.extend(f"unseen-axial-{k}" for k in range(UNSEEN_COUNT))
    return np.stack(images).astype(np.float32), names


def extra_tuning_images(size: int = 128) -> tuple[np.ndarray, list[str]]:
    """The second tuning set of the module docstring: float32 ``(12, size, size)`` and names."""
    from sgilo.pipeline.data import ood
    from sgilo.pipeline.data.synth_brain import SynthBrainConfig, synth_brain_batch

    images, names = [], []
    for label, count, seed, changes in EXTRA_SYNTH:
        config = SynthBrainConfig(**{**UNSEEN_AXIAL, **changes})
        batch = synth_brain_batch(count, seed, size, "train", config).numpy()
        images.extend(batch)
        names.extend(f"extra-{label}-{k}" for k in range(count))
    images.append(ood._prepare(ood.body_phantom(1, seed=9), size))
    names.append("extra-abdomen-kidney-seed9")
    return np.stack(images).astype(np.float32), names


#: the heads set's seed and size: axial slices of new subjects with scalp, skull and CSF
HEADS_SEED, HEADS_COUNT = 18, 8


def head_tuning_images(size: int = 128) -> tuple[np.ndarray, list[str]]:
    """The third tuning set of the module docstring: float32 ``(8, size, size)`` and names."""
    from sgilo.pipeline.data.synth_brain import SynthBrainConfig, synth_brain_batch

    config = SynthBrainConfig(**{**UNSEEN_AXIAL, "head_prob": 1.0})
    batch = synth_brain_batch(HEADS_COUNT, HEADS_SEED, size, "train", config).numpy()
    return batch.astype(np.float32), [f"head-axial-{k}" for k in range(HEADS_COUNT)]


#: the tuning sets by name (``--images``)
IMAGE_SETS = {"base": tuning_images, "extra": extra_tuning_images, "heads": head_tuning_images}
#: the sets ``--images`` takes by default: those the shipped margins and limit were chosen on
DEFAULT_IMAGE_SETS = ("base", "extra")


def tuning_problems(
    images: np.ndarray, settings: frozenset[str] | None, snr_db: float, seed: int
) -> Iterator[tuple[object, object, torch.Tensor, object]]:
    """Per default setting (all, or those labelled in ``settings``): the setting, its simulated
    acquisition of ``images`` (``(B, H, W)``) at ``snr_db`` with ``seed``, and ``y``, ``op`` with
    ESPIRiT maps (:func:`sgilo.pipeline.experiment.espirit_operator`)."""
    from sgilo.pipeline.experiment import DEFAULT_SETTINGS, espirit_operator

    for setting in DEFAULT_SETTINGS:
        if settings is not None and setting.label not in settings:
            continue
        acq = setting.simulate(images, snr_db=snr_db, seed=seed)
        y, op = espirit_operator(acq)
        yield setting, acq, y, op


def measure(
    prior: object,
    size: int = 128,
    snr_db: float = 30.0,
    seed: int = 3,
    skip: frozenset[str] = frozenset(),
    settings: frozenset[str] | None = None,
    image_set: str = "base",
) -> list[dict]:
    """One row per setting and slice of the tuning set ``image_set`` (:data:`IMAGE_SETS`; except
    the names in ``skip``): SGILO's and each classical method's PSNR, the held-out errors of
    SGILO's prior-fit report, its unexplained fraction, the SNR and the estimated noise level
    ``σ̂/s`` (``sigma_rel``, :func:`sgilo.pipeline.solvers.classical.noise_level`)."""
    from sgilo.pipeline.methods import solve
    from sgilo.pipeline.metrics import evaluate

    images, names = IMAGE_SETS[image_set](size)
    keep = [k for k, name in enumerate(names) if name not in skip]
    if not keep:
        return []
    images, names = images[keep], [names[k] for k in keep]
    rows = []
    from sgilo.pipeline.solvers.classical import noise_level

    for setting, acq, y, op in tuning_problems(images, settings, snr_db, seed):
        noise = noise_level(y, op).tolist()
        result = solve(y, op, "sgilo", prior=prior)
        record = result.diagnostics_dict()
        errors = record["prior_fit_heldout_errors"]
        methods = [m for m in CLASSICAL if m != "cg-sense" or setting.coils is not None]
        magnitudes = {"sgilo": result.magnitude}
        magnitudes.update({m: solve(y, op, m).magnitude for m in methods})
        for b, name in enumerate(names):
            target = acq.target[b : b + 1]
            psnr = {m: evaluate(target, v[b : b + 1])["psnr"] for m, v in magnitudes.items()}
            err = {k: v[b] for k, v in errors.items()}
            row = {"setting": setting.label, "image": name, "psnr": psnr, "errors": err}
            row["unexplained"] = record["prior_fit_unexplained"][b]
            row["snr_db"], row["sigma_rel"] = snr_db, noise[b]
            rows.append(row)
    return rows


def auto_pick(row: dict, tau: float, limit: float = float("inf")) -> str:
    """The method ``auto`` with margin ``tau`` (and limit ``limit`` of the unexplained
    fraction) keeps on a row (classical by single-fold error)."""
    errors = row["errors"]
    classical = [m for m in CLASSICAL if m in errors]
    best = min(classical, key=lambda m: errors[m])
    keep = errors["sgilo"] <= tau * errors[best]
    if limit != float("inf"):
        keep = keep and row["unexplained"] <= limit
    return "sgilo" if keep else best


def margin_table(
    rows: list[dict], taus: tuple[float, ...] = TAUS, limit: float = float("inf")
) -> list[dict]:
    """Per ``τ`` (and the unexplained fraction's ``limit``): auto's mean PSNR loss against the
    best single method of each row, and its largest loss against the best classical method
    (dB)."""
    table = []
    for tau in taus:
        to_best, to_classical = [], []
        for row in rows:
            psnr = row["psnr"]
            auto = psnr[auto_pick(row, tau, limit)]
            classical = max(v for k, v in psnr.items() if k in CLASSICAL)
            to_best.append(max(psnr.values()) - auto)
            to_classical.append(classical - auto)
        table.append(
            {
                "tau": tau,
                "mean_loss_to_best": float(np.mean(to_best)),
                "worst_loss_to_classical": float(np.max(to_classical)),
            }
        )
    return table


def acceleration_of(setting: str) -> str:
    """``"8x"`` of ``"8-coil 8x"``."""
    return setting.split()[-1]


#: losses within this of the lowest count as ties (dB): what 24 rows of a tuning set resolve
TIE_DB = 0.05


def choose_margin(
    rows: list[dict],
    taus: tuple[float, ...] = TAUS,
    tie: float = TIE_DB,
    limit: float = float("inf"),
) -> float:
    """The smallest ``τ`` whose mean loss to the best single method on ``rows`` (with the
    unexplained fraction's ``limit``) is within ``tie`` dB of the lowest (the smaller ``τ``
    leans to the classical methods, and keeps away from the edge of the plateau where larger
    ``τ`` let unlike data through)."""
    table = margin_table(rows, taus, limit)
    best = min(entry["mean_loss_to_best"] for entry in table)
    return min(e["tau"] for e in table if e["mean_loss_to_best"] <= best + tie)


def limit_table(
    rows: list[dict], taus: tuple[float, ...] = TAUS, limits: tuple[float, ...] = LIMITS
) -> dict[tuple[float, float], float]:
    """auto's mean loss to the best single method (dB) per ``(τ, θ)``, on rows that carry the
    unexplained fraction."""
    return {
        (tau, limit): entry["mean_loss_to_best"]
        for limit in limits
        for tau, entry in zip(taus, margin_table(rows, taus, limit), strict=True)
    }


def choose_margin_and_limit(
    rows: list[dict],
    taus: tuple[float, ...] = TAUS,
    limits: tuple[float, ...] = LIMITS,
    tie: float = TIE_DB,
) -> tuple[float, float]:
    """Of the ``(τ, θ)`` pairs whose mean loss is within ``tie`` of the lowest, the smallest
    ``τ`` and then the smallest ``θ`` (both lean to the classical methods, as
    :func:`choose_margin`)."""
    table = limit_table(rows, taus, limits)
    best = min(table.values())
    return min(pair for pair, loss in table.items() if loss <= best + tie)


def choose_kind_limit(
    rows: list[dict],
    joint: float,
    taus: tuple[float, ...] = TAUS,
    limits: tuple[float, ...] = LIMITS,
    tie: float = TIE_DB,
) -> float:
    """The limit ``θ`` for one kind of data's ``rows`` given the ``joint`` θ chosen on all rows
    of their acceleration: the kind's own θ of :func:`choose_margin_and_limit` where its mean loss
    lies more than ``tie`` dB below the loss at the joint θ (with the kind's margin chosen at
    it, :func:`choose_margin`), else the joint θ (a split the rows do not resolve is not made)."""
    tau, own = choose_margin_and_limit(rows, taus, limits, tie)
    table = limit_table(rows, taus, (own, joint))
    at_joint = table[(choose_margin(rows, taus, tie, limit=joint), joint)]
    return own if table[(tau, own)] < at_joint - tie else joint


def main(argv: list[str] | None = None) -> int:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="rows as JSON")
    parser.add_argument("--rows", type=Path, default=None, help="reuse measured rows")
    parser.add_argument(
        "--remeasure",
        nargs="+",
        default=[],
        help='settings whose rows are measured again, e.g. "8-coil 8x" (after a change of the '
        "classical defaults there)",
    )
    parser.add_argument(
        "--images",
        nargs="+",
        choices=sorted(IMAGE_SETS),
        default=list(DEFAULT_IMAGE_SETS),
        help="the tuning sets: their rows are kept from --rows or measured, the others' dropped "
        "(default: base and extra, the sets the shipped rule was chosen on)",
    )
    args = parser.parse_args(argv)
    rows = json.loads(args.rows.read_text()) if args.rows is not None else []
    again = frozenset(args.remeasure)
    kept = []
    for image_set in args.images:
        _, names = IMAGE_SETS[image_set](32)
        have = [r for r in rows if r["image"] in names and r["setting"] not in again]
        missing = set(names) - {r["image"] for r in have}
        if missing or again:
            from sgilo.pipeline.methods import load_prior

            prior = load_prior(None)
            if missing:
                skip = frozenset(set(names) - missing)
                have += measure(prior, skip=skip, image_set=image_set)
            if again:
                have += measure(prior, settings=again, image_set=image_set)
        kept += have
    rows = kept
    args.out.write_text(json.dumps(rows, indent=1))
    groups = {"all": rows}
    for acc in sorted({acceleration_of(r["setting"]) for r in rows}):
        groups[acc] = [r for r in rows if acceleration_of(r["setting"]) == acc]
    for label, subset in groups.items():
        print(f"\n{label} ({len(subset)} rows); chosen τ = {choose_margin(subset):g}\n")
        print("| τ | mean loss to the best single method (dB) | worst loss to the best classical |")
        print("|---|---|---|")
        for entry in margin_table(subset):
            print(
                f"| {entry['tau']:g} | {entry['mean_loss_to_best']:.2f} | "
                f"{entry['worst_loss_to_classical']:.2f} |"
            )
    for acc in sorted({acceleration_of(r["setting"]) for r in rows}):
        at = [r for r in rows if acceleration_of(r["setting"]) == acc]
        if not all("unexplained" in r for r in at):
            continue
        for coils in ("", "single-coil", "8-coil"):  # all rows, then each kind alone
            subset = [r for r in at if r["setting"].startswith(coils)]
            if subset:
                _print_limit_table(f"{acc} {coils or 'all'}", subset)
        from sgilo.pipeline.prior_fit import UNEXPLAINED_FROM

        if float(acc.rstrip("x")) < UNEXPLAINED_FROM:
            continue  # θ is not judged there
        _, limit = choose_margin_and_limit(at)
        for coils in ("single-coil", "8-coil"):
            subset = [r for r in at if r["setting"].startswith(coils)]
            if subset:
                tau = choose_margin(subset, limit=limit)
                print(f"\n{acc} {coils} at θ = {limit:g} (chosen on all rows): τ = {tau:g}")
                own = choose_kind_limit(subset, limit)
                print(
                    f"{acc} {coils}, its own limit: θ = {own:g}, τ = "
                    f"{choose_margin(subset, limit=own):g}"
                )
    return 0


def _print_limit_table(label: str, subset: list[dict]) -> None:
    """The τ × θ table of :func:`limit_table` for ``subset`` as Markdown, with its choice."""
    tau, limit = choose_margin_and_limit(subset)
    print(
        f"\n{label} ({len(subset)} rows), τ × θ (unexplained limit): "
        f"chosen τ = {tau:g}, θ = {limit:g}\n"
    )
    table = limit_table(subset)
    print("| τ \\ θ | " + " | ".join(f"{t:g}" for t in LIMITS) + " |")
    print("|---" * (len(LIMITS) + 1) + "|")
    for t in TAUS:
        print(f"| {t:g} | " + " | ".join(f"{table[(t, th)]:.2f}" for th in LIMITS) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
