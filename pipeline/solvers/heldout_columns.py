"""Which measured k-space columns may be held out of a fit, and one seeded draw of them.

Shared by the two users of held-out measurements: ILO's and SGILO's iterate choice
(:mod:`sgilo.pipeline.solvers.holdout`) and the classical solvers' λ from held-out k-space
(:mod:`sgilo.pipeline.solvers.kspace_cv`).

"Columns" are the entries of the last axis of ``y``: the phase-encoding lines of the Cartesian
operators of :mod:`sgilo.operators.mri` (``y`` of shape ``(B, H, W)`` or ``(B, C, H, W)``, a column
``k`` is ``y[..., k]``), and single samples for the non-Cartesian operator (``y`` of shape
``(B, K)`` or ``(B, C, K)``), all of which are candidates. A Cartesian column counts as measured
when its mask has a non-zero entry; the fully sampled centre run
(:meth:`sgilo.operators.base.LinearOperator.calibration_region`) is never a candidate: it carries
most of the energy and the phase, and the coil maps are estimated from it.

The draw: per slice ``b`` with ``n_b`` candidates, ``max(1, round(f · n_b))`` of them, at most
``n_b − 1`` (so at least one outer column is always fitted), without replacement, from one
``torch.Generator`` seeded with ``seed`` and used slice after slice.
"""

from __future__ import annotations

import math

import torch

from sgilo.operators.base import LinearOperator


def candidate_columns(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool on ``y``'s device: the last-axis entries of ``y`` (``(B, ..., L)``) that
    may be held out: measured and outside the fully sampled centre (every sample for an operator
    without a Cartesian mask)."""
    batch, length = y.shape[0], y.shape[-1]
    mask = op.slice_masks(batch)
    centre = op.calibration_region(batch)
    if mask is None or centre is None:  # non-Cartesian: every sample
        return torch.ones(batch, length, dtype=torch.bool, device=y.device)
    measured = (mask > 0).any(dim=-2)  # (B, W)
    return (measured & ~centre.to(measured.device)).to(y.device)


def too_few_columns(op: LinearOperator, y: torch.Tensor) -> str | None:
    """Why no column of ``y`` can be held out (a slice with fewer than 2 candidate columns,
    :func:`candidate_columns`), or ``None``."""
    for b, count in enumerate(candidate_columns(op, y).sum(dim=1).tolist()):
        if count < 2:
            return (
                f"slice {b} has {count} measured column(s) outside the fully sampled centre; "
                "at least 2 are needed to hold one out"
            )
    return None


def _permuted(candidates: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Per slice, its candidate column indices in a seeded random order: one generator seeded
    with ``seed``, one ``randperm`` per slice in turn. Raises ``ValueError`` for a slice with
    fewer than 2 candidates."""
    rng = torch.Generator().manual_seed(seed)
    orders = []
    for b, row in enumerate(candidates.cpu()):
        index = row.nonzero().flatten()
        n = index.numel()
        if n < 2:
            raise ValueError(
                f"slice {b} has {n} measured column(s) outside the fully sampled centre; "
                "at least 2 are needed to hold one out"
            )
        orders.append(index[torch.randperm(n, generator=rng)])
    return orders


def draw_columns(candidates: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """``(B, L)`` bool: per slice, ``max(1, round(fraction · n))`` of its ``n`` ``candidates``
    (``(B, L)`` bool), at most ``n − 1``, drawn without replacement from a generator seeded with
    ``seed`` (slice after slice). Raises ``ValueError`` for a slice with ``n < 2``."""
    out = torch.zeros_like(candidates, device="cpu")
    for b, order in enumerate(_permuted(candidates, seed)):
        n = order.numel()
        out[b, order[: min(n - 1, max(1, round(fraction * n)))]] = True
    return out.to(candidates.device)


def partition_columns(candidates: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """``(K, B, L)`` bool: ``K = folds`` disjoint sets per slice that together hold every one of
    its candidates (``(B, L)`` bool): the seeded order of :func:`draw_columns` cut into ``folds``
    consecutive parts of sizes differing by at most one (``torch.tensor_split``), so that each
    candidate is held out exactly once over the folds. Needs ``2 ≤ folds ≤ n`` for every slice;
    raises ``ValueError`` otherwise."""
    counts = candidates.sum(dim=1)
    if folds < 2 or folds > int(counts.min()):
        raise ValueError(f"folds must lie in [2, {int(counts.min())}], got {folds}")
    out = torch.zeros(folds, *candidates.shape, dtype=torch.bool)
    for b, order in enumerate(_permuted(candidates, seed)):
        for k, chunk in enumerate(torch.tensor_split(order, folds)):
            out[k, b, chunk] = True
    return out.to(candidates.device)


def measured_per_column(op: LinearOperator, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, L)`` in ``dtype``: the measurements in each last-axis entry of ``y`` (rows sampled ×
    coils for a Cartesian mask; every entry of ``y`` for the non-Cartesian operator)."""
    batch = y.shape[0]
    mask = op.slice_masks(batch)
    if mask is None:
        per = y[0].numel() // y.shape[-1]
        return torch.full((batch, y.shape[-1]), float(per), dtype=dtype, device=y.device)
    coils = math.prod(op.oshape[:-2])  # the entries of y per k-space location
    return ((mask > 0).sum(dim=-2) * coils).to(dtype=dtype, device=y.device)


def draw_folds(candidates: torch.Tensor, fraction: float, folds: int, seed: int) -> torch.Tensor:
    """``(K, B, L)`` bool: ``K = folds`` disjoint held-out sets per slice, each of
    ``c = max(1, round(fraction · n))`` of the slice's ``n`` ``candidates`` (``(B, L)`` bool), cut
    in turn from one seeded permutation per slice (the permutation of :func:`draw_columns`, so
    fold 0 is its draw). A fold is left empty for a slice whose candidates run out (at least one
    candidate always stays fitted: fold ``k`` needs ``(k + 1) · c ≤ n − 1``; fold 0 gets
    ``min(c, n − 1)``). Raises ``ValueError`` for a slice with ``n < 2``."""
    out = torch.zeros(folds, *candidates.shape, dtype=torch.bool)
    for b, order in enumerate(_permuted(candidates, seed)):
        n = order.numel()
        count = min(n - 1, max(1, round(fraction * n)))
        for k in range(folds):
            if k == 0 or (k + 1) * count <= n - 1:
                out[k, b, order[k * count : (k + 1) * count]] = True
    return out.to(candidates.device)
