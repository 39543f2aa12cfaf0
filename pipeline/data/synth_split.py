"""The train/validation split of the synthetic brain images: by the position of the slice plane.

Every synthetic image is a plane through the (deformed) template whose orientation belongs to one
of three families, ``axial`` (normal along z), ``coronal`` (y) and ``sagittal`` (x), possibly
tilted (oblique). Its centre lies at an integer template index ``c`` along the family's axis
(before tilt, deformation and in-plane shift). The split is on ``c``:

* **validation** positions: the bands below. Axial: the MNI validation bands of
  :mod:`sgilo.pipeline.data.mni` (z = 86…93, 108…115); coronal and sagittal: 8-slice bands around
  the planes of the OOD suite (:mod:`sgilo.pipeline.data.ood`: coronal y = 116, 150; sagittal
  x = 98, 70), and around x = 126, the mirror image of x = 70 (nilearn's template is symmetric,
  ``tal_nlin_sym``, and training images are flipped left–right);
* **training** positions: every index whose canonical plane contains brain (more than
  ``mni.BRAIN_FRACTION`` of the plane in the brain mask) and lies at least ``mni.MARGIN``
  (6 mm) from every validation band of its family.

So no training image is centred on, or within 6 mm of, a plane that the validation slices, the
in-domain benchmark slices or the OOD suite's coronal, sagittal and synthetic-contrast slices lie
on. What the split cannot do: an oblique training plane crosses a validation plane along a line,
and a coronal or sagittal training plane crosses the axial validation bands (one anatomy seen
from three directions); the validation images are therefore held-out *planes* of the one template,
not held-out subjects.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from sgilo.pipeline.data import mni

__all__ = ["FAMILIES", "VALIDATION_BANDS", "Family", "SynthSplit", "split_positions"]

Family = Literal["axial", "coronal", "sagittal"]
SynthSplit = Literal["train", "validation"]

#: orientation families, in the order of their index in a batch's ``family`` tensor
FAMILIES: tuple[Family, ...] = ("axial", "coronal", "sagittal")
#: the template axis (0 = x, 1 = y, 2 = z) normal to each family's canonical plane
FAMILY_AXIS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
#: validation bands per family, half-open index ranges along the family's axis
VALIDATION_BANDS: dict[str, tuple[tuple[int, int], ...]] = {
    "axial": mni.VALIDATION_BANDS,
    "coronal": ((112, 120), (146, 154)),
    "sagittal": ((94, 102), (66, 74), (122, 130)),
}


@functools.lru_cache(maxsize=1)
def _brain_fraction() -> dict[str, np.ndarray]:
    """Per family: float64, (n,) the fraction of each canonical plane inside the brain mask."""
    from sgilo.pipeline.data.mni_sources import mni_arrays

    mask = mni_arrays().mask
    out = {}
    for family, axis in FAMILY_AXIS.items():
        others = tuple(a for a in range(3) if a != axis)
        area = mask.shape[others[0]] * mask.shape[others[1]]
        out[family] = np.count_nonzero(mask, axis=others) / area
    return out


@functools.lru_cache(maxsize=8)
def split_positions(family: Family, split: SynthSplit) -> tuple[int, ...]:
    """The plane positions (template indices along the family's axis) of one split.

    Args:
        family: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        split: ``"train"`` (brain planes ≥ ``mni.MARGIN`` from every band) or ``"validation"``
            (the band indices).

    Returns:
        sorted, non-empty tuple of ints.
    """
    if family not in FAMILY_AXIS:
        raise ValueError(f"family: expected one of {FAMILIES}, received {family!r}")
    bands = VALIDATION_BANDS[family]
    band_idx = [i for lo, hi in bands for i in range(lo, hi)]
    if split == "validation":
        return tuple(sorted(band_idx))
    if split != "train":
        raise ValueError(f"split: expected 'train' or 'validation', received {split!r}")
    fraction = _brain_fraction()[family]
    return tuple(
        int(i)
        for i in np.flatnonzero(fraction > mni.BRAIN_FRACTION)
        if min(abs(int(i) - b) for b in band_idx) >= mni.MARGIN
    )
