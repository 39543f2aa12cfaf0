"""Simulated experiments: the acquisition settings the demo, tuning and benchmarks share.

A :class:`Setting` is one acquisition protocol (coils, acceleration, centre fraction). The
defaults are fastMRI's: 4× with an 8 % fully sampled centre and 8× with 4 %, single-coil and
8-coil. :func:`make_operator` turns a simulated :class:`Acquisition` into ``(y, op)`` for the
solvers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from operators.base import LinearOperator
from operators.mri import MultiCoilMRI, SingleCoilMRI
from pipeline.simulate import Acquisition


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


DEFAULT_SETTINGS = [
    Setting(None, 4, 0.08),
    Setting(None, 8, 0.04),
    Setting(8, 4, 0.08),
    Setting(8, 8, 0.04),
]


def make_operator(
    acq: Acquisition, maps: torch.Tensor | None = None
) -> tuple[torch.Tensor, LinearOperator]:
    """``(y, op)`` for an acquisition: single-coil ``y`` is ``(S, H, W)``, multi-coil
    ``(S, C, H, W)``. Multi-coil uses ``maps`` (complex ``(C, H, W)`` or ``(S, C, H, W)``) when
    given — e.g. ESPIRiT estimates — else the true simulated maps."""
    y = torch.from_numpy(acq.kspace)
    mask = torch.from_numpy(acq.mask.astype("float32"))
    h, w = acq.target.shape[1:]
    if not acq.multicoil:
        return y[:, 0], SingleCoilMRI(mask, (h, w))
    coil_maps = torch.from_numpy(acq.maps) if maps is None else maps
    return y, MultiCoilMRI(coil_maps, mask)


def espirit_operator(acq: Acquisition) -> tuple[torch.Tensor, LinearOperator]:
    """Like :func:`make_operator`, but multi-coil data get ESPIRiT maps estimated from the
    acquisition's calibration region — what a real acquisition without maps gets."""
    if not acq.multicoil:
        return make_operator(acq)
    from pipeline.espirit import estimate_maps

    return make_operator(acq, maps=torch.from_numpy(estimate_maps(acq.kspace, acq.mask)))
