r"""Coil maps for a held-out split: refined maps refitted without the held-out samples.

ESPIRiT's maps come from the fully sampled calibration columns, which no hold-out touches
(:mod:`sgilo.pipeline.solvers.heldout_columns` draws only outer columns). The refined maps of a
slice whose object fills the phase-encode field of view (:mod:`sgilo.pipeline.coil_map_refine`)
are fitted jointly with an image to **every** measured sample, the held-out ones included. A fit
on a split that keeps those maps has seen the held-out samples through them, and the method that
follows its data most closely gains from that: on 12 synthetic heads in a 100–130 mm field of
view (8-coil 4×, 20 dB), ``auto``'s classical blend weighted ℓ1-wavelet over TV and sat 0.97 dB
below the better of the two (worst slice −2.32), against 0.10 (worst −0.78) with maps refitted on
each split's own samples (docs/CLASSICAL_TUNING.md, "Held-out k-space and refined maps").

So an operator whose maps were refined carries what the refinement started from
(:class:`MapRefit`: ESPIRiT's maps and which slices were refined; :class:`RefinedMapsMRI`), and
every split of it (:func:`sgilo.pipeline.solvers.kspace_split.split_measurements`: the prior-fit
check, ``auto``'s folds, ``lam="auto"``) refits those slices' maps on the split's fitted samples
(:func:`split_maps`), with the basis size the full mask chose, and uses them for both the fit and
the prediction of the held-out samples. Only where the mask samples at least ``1/6`` of k-space
(:func:`sgilo.pipeline.coil_map_refine.well_sampled`): below, the joint problem is already
under-determined, a split that holds out a quarter of the outer columns gives maps worse than
the output's, and on the tuning heads the refit did not help (blend −0.22 to +0.16 dB against
the maps of all samples at 8×, 0.00 to +0.87 at 4×). The output is still reconstructed with the
maps refined on every sample. Cost: one more refinement per such slice and split (0.15–0.6 s per
128² slice of 8 coils, docs/CLASSICAL_TUNING.md); nothing for other slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sgilo.operators.mri import MultiCoilMRI


@dataclass(frozen=True)
class MapRefit:
    """What refined coil maps started from: ESPIRiT's maps ``start`` complex64
    ``(S, C, H, W)`` (CPU) and ``refined`` bool ``(S,)``, the slices whose maps were refined."""

    start: torch.Tensor
    refined: torch.Tensor

    def take(self, index: list[int]) -> MapRefit:
        """The record of the slices ``index``."""
        return MapRefit(self.start[index], self.refined[index])


class RefinedMapsMRI(MultiCoilMRI):
    """:class:`sgilo.operators.mri.MultiCoilMRI` with per-slice maps ``(S, C, H, W)`` some of
    which were refined on all samples; ``map_refit`` says which and from what
    (:class:`MapRefit`), so that a held-out split refits them (:func:`split_maps`)."""

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor, refit: MapRefit) -> None:
        if maps.ndim != 4 or refit.start.shape != maps.shape:
            raise ValueError(
                f"refined maps need per-slice maps and a start of the same shape, got "
                f"{tuple(maps.shape)} and {tuple(refit.start.shape)}"
            )
        super().__init__(maps, mask)
        self.map_refit = refit


def map_refit(start: np.ndarray | torch.Tensor, refined: list[int]) -> MapRefit | None:
    """The record of maps refined from ``start`` (ESPIRiT's, ``(S, C, H, W)``) on the slices
    where ``refined`` (the refinement's rounds per slice) is positive; ``None`` if none was."""
    flags = torch.tensor([r > 0 for r in refined], dtype=torch.bool)
    if not bool(flags.any()):
        return None
    return MapRefit(torch.as_tensor(np.asarray(start, dtype=np.complex64)), flags)


def refinable_operator(
    maps: torch.Tensor, mask: torch.Tensor, start: np.ndarray | torch.Tensor, refined: list[int]
) -> MultiCoilMRI:
    """The operator of maps ``(S, C, H, W)`` refined from ``start`` (:func:`map_refit`): a
    :class:`RefinedMapsMRI` if any slice was refined, else a plain ``MultiCoilMRI``."""
    refit = map_refit(start, refined)
    return MultiCoilMRI(maps, mask) if refit is None else RefinedMapsMRI(maps, mask, refit)


def split_maps(
    op: MultiCoilMRI, fit_y: torch.Tensor, fit_masks: torch.Tensor
) -> torch.Tensor | None:
    """The maps ``(B, C, H, W)`` of a split of ``op``'s ``B`` slices: ``op``'s own, with the maps
    of every refined slice sampled at least ``1/6`` refitted on the split's fitted samples
    ``fit_y`` ``(B, C, H, W)`` (zero where not fitted) under its mask ``fit_masks``
    ``(B, H, W)``; ``None`` when ``op`` has no refined slice."""
    from sgilo.pipeline.coil_map_refine import basis_size, refine_maps, well_sampled

    refit: MapRefit | None = getattr(op, "map_refit", None)
    if refit is None or not bool(refit.refined.any()):
        return None
    maps = op.coil_maps.clone()
    full = op.slice_masks(fit_y.shape[0]).detach().cpu()  # (B, H, W)
    shape = tuple(full.shape[-2:])
    for b in refit.refined.nonzero().flatten().tolist():
        if not well_sampled(full[b], shape):  # under 1/6 sampled: kept (docstring)
            continue
        mask = fit_masks[b].detach().cpu().numpy() > 0
        fitted, _ = refine_maps(
            fit_y[b : b + 1].detach().cpu().numpy() * mask,
            mask,
            refit.start[b : b + 1],
            basis=basis_size(full[b], shape),
        )
        maps[b] = torch.from_numpy(fitted[0]).to(maps)
    return maps
