"""Simulated experiments: the acquisition settings the demo, tuning and benchmarks share.

A :class:`Setting` is one acquisition protocol (coils, acceleration, centre fraction). The
defaults are fastMRI's: 4× with an 8 % fully sampled centre and 8× with 4 %, single-coil and
8-coil. :func:`make_operator` turns a simulated :class:`Acquisition` into ``(y, op)`` for the
solvers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.masks import Seed
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.simulate import Acquisition, simulate_acquisition
from sgilo.pipeline.split_maps import MapRefit, RefinedMapsMRI, map_refit


@dataclass(frozen=True)
class Setting:
    """One acquisition protocol; ``coils=None`` is single-coil."""

    coils: int | None
    acceleration: float
    center_fraction: float

    @property
    def label(self) -> str:
        coils = "single-coil" if self.coils is None else f"{self.coils}-coil"
        return f"{coils} {self.acceleration:g}x"

    def simulate(
        self, images: np.ndarray, *, snr_db: float | None = 30.0, seed: Seed = 0
    ) -> Acquisition:
        """This protocol's acquisition of the magnitudes ``images`` (float ``(S, H, W)``):
        :func:`sgilo.pipeline.simulate.simulate_acquisition` with its coils, acceleration and
        centre fraction, complex noise at ``snr_db`` and the random mask of ``seed``."""
        return simulate_acquisition(
            images,
            acceleration=self.acceleration,
            center_fraction=self.center_fraction,
            num_coils=self.coils,
            snr_db=snr_db,
            seed=seed,
        )


DEFAULT_SETTINGS = [
    Setting(None, 4, 0.08),
    Setting(None, 8, 0.04),
    Setting(8, 4, 0.08),
    Setting(8, 8, 0.04),
]


def make_operator(
    acq: Acquisition, maps: torch.Tensor | None = None, refit: MapRefit | None = None
) -> tuple[torch.Tensor, LinearOperator]:
    """``(y, op)`` for an acquisition: single-coil ``y`` is ``(S, H, W)``, multi-coil
    ``(S, C, H, W)``. Multi-coil uses ``maps`` (complex ``(C, H, W)`` or ``(S, C, H, W)``) when
    given — e.g. ESPIRiT estimates — else the true simulated maps; ``refit``: what refined maps
    started from (:class:`sgilo.pipeline.split_maps.MapRefit`, held-out splits refit them)."""
    y = torch.from_numpy(acq.kspace)
    mask = torch.from_numpy(acq.mask.astype("float32"))
    h, w = acq.target.shape[1:]
    if not acq.multicoil:
        return y[:, 0], SingleCoilMRI(mask, (h, w))
    coil_maps = torch.from_numpy(acq.maps) if maps is None else maps
    if refit is not None:
        return y, RefinedMapsMRI(coil_maps, mask, refit)
    return y, MultiCoilMRI(coil_maps, mask)


def estimated_maps(acq: Acquisition) -> tuple[np.ndarray, MapRefit | None]:
    """The coil maps ``sgilo reconstruct`` estimates for a multi-coil acquisition: ESPIRiT's
    from its calibration region, refined where the object reaches the phase-encode edges
    (:func:`sgilo.pipeline.coil_map_refine.checked_maps`); complex64 ``(S, C, H, W)``, and what
    the refined ones started from (``None`` when no slice was refined)."""
    from sgilo.pipeline.coil_map_refine import checked_maps
    from sgilo.pipeline.espirit import estimate_maps

    start = estimate_maps(acq.kspace, acq.mask)
    maps, check = checked_maps(acq.kspace, acq.mask, start)
    return maps, map_refit(start, check.refined_rounds)


def espirit_operator(acq: Acquisition) -> tuple[torch.Tensor, LinearOperator]:
    """Like :func:`make_operator`, but multi-coil data get the maps a real acquisition without
    maps gets (:func:`estimated_maps`)."""
    if not acq.multicoil:
        return make_operator(acq)
    maps, refit = estimated_maps(acq)
    return make_operator(acq, maps=torch.from_numpy(maps), refit=refit)


def save_acquisition(path: Path, acq: Acquisition, *, espirit: bool = True) -> Path:
    """Write a simulated acquisition to an ``.npz`` (with the maps of :func:`estimated_maps` for
    multi-coil data, when ``espirit``, and what refined ones started from); read back by
    :func:`load_acquisition` and :func:`load_refit`."""
    arrays = {k: getattr(acq, k) for k in ("target", "image", "kspace", "mask")}
    if acq.maps is not None:
        arrays["maps"] = acq.maps
        if espirit:
            arrays["espirit"], refit = estimated_maps(acq)
            if refit is not None:
                arrays["espirit_start"] = refit.start.numpy()
                arrays["espirit_refined"] = refit.refined.numpy()
    np.savez(
        path,
        **arrays,
        sigma=acq.sigma,
        acceleration=acq.acceleration,
        center_fraction=acq.center_fraction,
        num_low_frequencies=acq.num_low_frequencies,
    )
    return Path(path)


def load_refit(path: Path) -> MapRefit | None:
    """What the refined maps of an acquisition written by :func:`save_acquisition` started from
    (``None`` when it has none)."""
    d = np.load(path)
    if "espirit_start" not in d:
        return None
    return MapRefit(torch.from_numpy(d["espirit_start"]), torch.from_numpy(d["espirit_refined"]))


def load_acquisition(path: Path) -> tuple[Acquisition, np.ndarray | None]:
    """An acquisition written by :func:`save_acquisition`, and its ESPIRiT maps (or None)."""
    d = np.load(path)
    acq = Acquisition(
        target=d["target"],
        image=d["image"],
        kspace=d["kspace"],
        mask=d["mask"],
        maps=d["maps"] if "maps" in d else None,
        sigma=float(d["sigma"]),
        acceleration=float(d["acceleration"]),
        center_fraction=float(d["center_fraction"]),
        num_low_frequencies=int(d["num_low_frequencies"]),
    )
    return acq, (d["espirit"] if "espirit" in d else None)
