"""Measurements split into a fitted and a held-out part: the operators and data of k-space
cross-validation.

Given a ``(B, L)`` bool choice of held-out columns (the last axis of ``y``;
:mod:`sgilo.pipeline.solvers.heldout_columns` draws it), :func:`split_measurements` builds two
problems per group of slices: the *fitted* one (the same operator with the held-out columns taken
out of its mask, ``y`` zeroed there) and the *held-out* one (only the held-out columns), each
repeated ``copies`` times along the batch (copy major: entry ``c · n + j`` is slice
``slices[j]`` in copy ``c``), so that several fits of the same split (a λ grid, several methods)
run as one batch. :func:`heldout_error` scores an image on the held-out part:
``e_b = ‖M_h ⊙ (A x_b − y_b)‖² / n_h`` with ``n_h`` the held-out measurements (coils included).

A Cartesian operator gives one group (all slices, each with its own restricted mask); a
non-Cartesian one gives one group per slice (its trajectory restricted to that slice's samples).
Coil maps refined on every sample (:class:`sgilo.pipeline.split_maps.RefinedMapsMRI`) are
refitted on the fitted samples for both problems (:func:`sgilo.pipeline.split_maps.split_maps`):
the held-out samples must not reach the fit through the maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI
from sgilo.pipeline.split_maps import split_maps


@dataclass(frozen=True)
class SplitPart:
    """The split problem of the slices ``slices``, repeated ``copies`` times (copy major: entry
    ``c · len(slices) + j`` is slice ``slices[j]``): ``fit_op``/``fit_y`` without the held-out
    measurements, ``held_op``/``held_y`` with only them."""

    slices: list[int]
    fit_op: LinearOperator
    fit_y: torch.Tensor
    held_op: LinearOperator
    held_y: torch.Tensor


def _on_last_axis(keep: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` → broadcastable against ``y`` ``(B, …, L)``, in ``y``'s real dtype."""
    shape = (keep.shape[0], *([1] * (y.ndim - 2)), keep.shape[-1])
    return keep.view(shape).to(device=y.device, dtype=y.real.dtype)


def split_measurements(
    op: LinearOperator, y: torch.Tensor, held: torch.Tensor, copies: int = 1
) -> list[SplitPart]:
    """The fitted and the held-out problems, each repeated ``copies`` times: one part for a
    Cartesian operator (its mask restricted per slice), one per slice for a non-Cartesian one
    (its trajectory restricted to the slice's samples)."""
    batch = y.shape[0]
    masks = op.slice_masks(batch)
    maps = op.coil_maps
    if masks is not None:
        fit_mask = masks * _on_last_axis(~held, masks).to(masks.dtype)
        held_mask = masks * _on_last_axis(held, masks).to(masks.dtype)
        refitted = None if maps is None else split_maps(op, y * _on_last_axis(~held, y), fit_mask)
        maps = maps if refitted is None else refitted  # refined maps: refitted on the split
        per_slice_maps = None if maps is None or maps.ndim == 3 else maps.repeat(copies, 1, 1, 1)

        def cartesian(mask: torch.Tensor) -> LinearOperator:
            mask = mask.repeat(copies, 1, 1)
            if maps is None:
                return SingleCoilMRI(mask)
            return MultiCoilMRI(maps if per_slice_maps is None else per_slice_maps, mask)

        def data(keep: torch.Tensor) -> torch.Tensor:
            return (y * _on_last_axis(keep, y)).repeat(copies, *([1] * (y.ndim - 1)))

        return [
            SplitPart(
                list(range(batch)),
                cartesian(fit_mask),
                data(~held),
                cartesian(held_mask),
                data(held),
            )
        ]
    coord = op.trajectory
    if coord is None:
        raise ValueError(f"{type(op).__name__}: no sampling mask and no trajectory to hold out")
    parts = []
    for b in range(batch):
        slice_maps = None if maps is None else (maps if maps.ndim == 3 else maps[b])

        def sub(keep: torch.Tensor, b: int = b, m: torch.Tensor | None = slice_maps) -> tuple:
            sub_op = NonCartesianMRI(coord[keep.to(coord.device)], m, image_shape=op.ishape)
            sub_y = y[b : b + 1][..., keep.to(y.device)]
            return sub_op, sub_y.repeat(copies, *([1] * (y.ndim - 1)))

        fit_op, fit_y = sub(~held[b])
        held_op, held_y = sub(held[b])
        parts.append(SplitPart([b], fit_op, fit_y, held_op, held_y))
    return parts


def heldout_error(part: SplitPart, image: torch.Tensor) -> torch.Tensor:
    """The mean squared prediction error on the held-out measurements of ``part`` for images
    ``(copies · len(part.slices), H, W)`` fitted on its ``fit_y``: float64 ``(copies, n)``,
    ``‖M_h ⊙ (A x − y)‖² / n_h`` per entry (``n_h``: held-out measurements of that slice)."""
    sse = _squared_residual(part.held_op, part.held_y, image)
    counts = part.held_op.num_measurements(sse.shape[0]).clamp_min(1)
    return (sse / counts).view(-1, len(part.slices))


def fitted_residual(part: SplitPart, image: torch.Tensor) -> torch.Tensor:
    """How much of its *fitted* measurements an image leaves unexplained: float64 ``(copies, n)``,
    ``‖M_f ⊙ (A x − y)‖²`` per entry (summed, not averaged), for images ``(copies · n, H, W)``."""
    return _squared_residual(part.fit_op, part.fit_y, image).view(-1, len(part.slices))


def _squared_residual(op: LinearOperator, y: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``‖A x − y‖²`` per image: float64 ``(N,)`` on the CPU."""
    residual = op.A(image.to(y.dtype)) - y
    return residual.abs().pow(2).reshape(residual.shape[0], -1).sum(dim=1).to(torch.float64).cpu()


def fitted_energy(part: SplitPart) -> torch.Tensor:
    """``‖M_f ⊙ y‖²`` per entry of ``part``'s fitted data: float64 ``(copies, n)``."""
    energy = part.fit_y.abs().pow(2).reshape(part.fit_y.shape[0], -1).sum(dim=1)
    return energy.to(torch.float64).cpu().view(-1, len(part.slices))


def heldout_column_errors(part: SplitPart, image: torch.Tensor) -> torch.Tensor:
    """The squared prediction error per held-out column of ``part`` for images
    ``(copies · len(part.slices), H, W)`` fitted on its ``fit_y``: float64 ``(copies, n, L)`` on
    the CPU, ``Σ_{coils, rows} |A x − y|²`` per last-axis entry ``l`` of ``held_y`` (0 outside the
    held-out columns of a Cartesian mask; every entry of a non-Cartesian ``held_y`` is a held-out
    sample). Summed over ``l`` it is :func:`heldout_error` times ``n_h``."""
    residual = part.held_op.A(image.to(part.held_y.dtype)) - part.held_y
    squared = residual.abs().pow(2).to(torch.float64)
    per_column = squared.reshape(squared.shape[0], -1, squared.shape[-1]).sum(dim=1)
    return per_column.cpu().view(-1, len(part.slices), per_column.shape[-1])
