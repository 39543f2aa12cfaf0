"""Whether ESPIRiT coil maps can be trusted: objects that fill the field of view along the
phase-encode direction.

:func:`sgilo.pipeline.espirit.espirit` estimates one set of smooth maps from a few fully sampled
centre columns. The DFT makes every coil image periodic, so where the object reaches the
phase-encode edges (the first and last columns, the axis the column mask undersamples) the coil
image jumps from one edge's coil value to the other's, which no smooth periodic map explains, and
unlike the readout edges (:func:`sgilo.pipeline.espirit.readout_padding`) the undersampled
direction cannot be padded. The maps are then wrong near those edges, and every SENSE
reconstruction with them (every multi-coil method of this product) loses: on the two
out-of-distribution 8-coil 8× slices whose object fills the field of view, CG-SENSE, ℓ1-wavelet
and TV with the true maps were 0.6–11.5 dB better than with ESPIRiT's, while on heads inside the
field of view ESPIRiT's maps were mostly the better ones (docs/CLASSICAL_TUNING.md, "ESPIRiT on
objects cut by the readout edges").

The check: the fraction of the pixels of the outer :data:`EDGE_COLUMNS` columns on each side where
the maps are non-zero, per slice. ESPIRiT zeroes its maps where the object is not (``crop``), so
the fraction is 0 for an object inside the field of view. Measured (2026-12-05): 0.00 on all 24
8-coil rows of the tuning set of :mod:`sgilo.pipeline.research.auto_margin`; on the
out-of-distribution suite's 16 8-coil slices 0.13–0.83 on the 4 where ℓ1-wavelet with the true
maps was 2.0–8.7 dB better than with ESPIRiT's, 0.00 on the other 12 (ESPIRiT's maps better on
11, 0.75 dB worse on one). Above :data:`EDGE_LEVEL` the slice's maps are refined by a joint
image-and-map fit (:mod:`sgilo.pipeline.coil_map_refine`), ``sgilo reconstruct`` warns and
``run.json`` says so (``maps_edge_fraction``, ``maps_refined_rounds``). Where ESPIRiT's own
``crop`` blanks the edge columns too (its eigenvalue drops at the jump) the check sees nothing: it
flags, it does not clear.
"""

from __future__ import annotations

import numpy as np
import torch

#: the columns on each side of the field of view (phase-encode edges) that the check looks at
EDGE_COLUMNS = 2
#: warn when the maps are non-zero on more than this fraction of those columns' pixels
EDGE_LEVEL = 0.05


def edge_fraction(maps: np.ndarray | torch.Tensor, columns: int = EDGE_COLUMNS) -> list[float]:
    """Per slice, the fraction of the pixels of the outer ``columns`` columns on each side of
    ``maps`` (complex ``(C, H, W)``, one set for every slice, or ``(S, C, H, W)``) where some
    coil's map is non-zero; a list of one value for ``(C, H, W)``."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    maps = np.asarray(maps)
    if maps.ndim == 3:
        maps = maps[None]
    if maps.ndim != 4:
        raise ValueError(f"maps must be (C, H, W) or (S, C, H, W), got shape {maps.shape}")
    width = maps.shape[-1]
    if not 1 <= columns <= width // 2:
        raise ValueError(f"columns must lie in [1, {width // 2}], got {columns}")
    support = (maps != 0).any(axis=1)  # (S, H, W)
    edges = np.concatenate([support[..., :columns], support[..., -columns:]], axis=-1)
    return [float(v) for v in edges.mean(axis=(1, 2))]


def edge_warning(
    fractions: list[float] | None, level: float = EDGE_LEVEL, refined: list[int] | None = None
) -> str | None:
    """The one-line warning for the per-slice :func:`edge_fraction` of ESPIRiT maps, or ``None``
    when no slice exceeds ``level``; ``refined`` (the alternations per slice of
    :func:`sgilo.pipeline.coil_map_refine.refine_maps`, 0 for none) says whether the flagged
    slices' maps were refined."""
    if not fractions:
        return None
    flagged = [k for k, f in enumerate(fractions) if f > level]
    if not flagged:
        return None
    text = (
        f"warning: the ESPIRiT coil maps reach the phase-encode edges of the field of view on "
        f"{len(flagged)} of {len(fractions)} slice(s) (up to "
        f"{max(fractions[k] for k in flagged):.0%} of the edge columns): the object fills the "
        "field of view along that direction, where one set of ESPIRiT maps is unreliable"
    )
    if refined is not None and all(refined[k] > 0 for k in flagged):
        return text + (
            "; their maps were refined by a joint image-and-map fit, which on the tuning slices "
            "recovered most of the loss at 4x and about half of it at 8x "
            "(docs/CLASSICAL_TUNING.md); coil maps in the input file (sens_maps) avoid the estimate"
        )
    return text + (
        ", and every SENSE reconstruction may lose several dB (docs/CLASSICAL_TUNING.md); coil "
        "maps in the input file (sens_maps) avoid the estimate"
    )
