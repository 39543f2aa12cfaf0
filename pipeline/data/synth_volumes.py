"""The 3-D source of the synthetic brain images: nilearn's MNI152 template and tissue maps, with a
distance map outside the brain for a synthesized head, resampled for an output size.

Sources (all inside the nilearn wheel pinned in requirements.lock; nothing is downloaded):
``load_mni152_template`` (the skull-stripped T1, also :func:`sgilo.pipeline.data.mni.
mni_volume`), ``load_mni152_gm_template``, ``load_mni152_wm_template`` and
``load_mni152_brain_mask``, all 197×233×189 at 1 mm on the same RAS+ grid. nilearn ships no
non-skull-stripped T1 and no CSF map offline, so

* CSF: ``p_csf = clip(mask − p_gm − p_wm, 0, 1)`` inside the brain mask (as the OOD suite's
  synthetic contrasts, :mod:`sgilo.pipeline.data.ood`);
* head: ``d`` = the Euclidean distance in mm from each voxel to the brain mask closed by a ball
  of ``CLOSING_MM`` with its holes filled (0 inside; the closing puts one head around the
  temporal lobes, cerebellum and brainstem). Head layers (extra-cerebral CSF, skull, marrow,
  scalp) are drawn later as shells of random thickness in ``d``
  (:mod:`sgilo.pipeline.data.synth_contrast`): a synthetic head, not anatomy.

The volumes are zero-padded by ``PAD_MM`` on every side (room for the head shells and for
deformations) and resampled to a voxel of ``voxel_mm`` (anti-aliased: a Gaussian of σ =
0.4 · voxel_mm / 1 mm voxels before linear interpolation), so that sampling a plane at the output's
pixel spacing needs no further anti-aliasing.

Channels (:data:`CHANNELS`): ``t1`` (template intensities, [0, 1]), ``csf``, ``gm``, ``wm``
(probabilities, [0, 1]) and ``dist`` (mm, ≥ 0; values beyond ``DIST_CAP_MM`` are capped).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["CHANNELS", "DIST_CAP_MM", "PAD_MM", "SourceVolume", "source_volume"]

#: the channel order of :class:`SourceVolume` ``.data``
CHANNELS: tuple[str, ...] = ("t1", "csf", "gm", "wm", "dist")
#: padding added on every side of the 197×233×189 template, in mm
PAD_MM = 24
#: distances outside the brain are capped here (mm): every head shell lies inside it
DIST_CAP_MM = 40.0
#: radius (mm) of the morphological closing of the brain mask that the head wraps
CLOSING_MM = 20.0
#: the template's shape (x, y, z) at 1 mm
TEMPLATE_SHAPE: tuple[int, int, int] = (197, 233, 189)


class SourceVolume:
    """The padded, resampled source channels.

    Attributes:
        data: float32, (1, 5, X, Y, Z) on ``device`` (channels :data:`CHANNELS`); its first
            voxel is at template millimetres (−PAD_MM, −PAD_MM, −PAD_MM) and its last at
            ``extent_mm`` (corner-aligned resampling, so the spacing is about ``voxel_mm``;
            template voxel (i, j, k) is at (i, j, k) mm; MNI = template mm − (98, 134, 72)).
        voxel_mm: nominal voxel side in mm.
        extent_mm: float64, (3,): template coordinates (x, y, z) of the last voxel.
    """

    def __init__(self, data: torch.Tensor, voxel_mm: float) -> None:
        self.data = data
        self.voxel_mm = float(voxel_mm)
        self.extent_mm = np.asarray(TEMPLATE_SHAPE, dtype=np.float64) - 1.0 + PAD_MM

    def to_normalized(self, points_mm: torch.Tensor) -> torch.Tensor:
        """Template mm (..., 3) ordered (x, y, z) → ``grid_sample`` coordinates (..., 3) ordered
        (z, y, x) in [−1, 1] over this volume (``align_corners=True``)."""
        lo = -float(PAD_MM)
        span = torch.as_tensor(self.extent_mm - lo, dtype=points_mm.dtype, device=points_mm.device)
        norm = 2.0 * (points_mm - lo) / span - 1.0
        return norm.flip(-1)

    def mm_per_unit(self) -> np.ndarray:
        """float64, (3,) ordered (x, y, z): millimetres per normalized unit along each axis."""
        return (self.extent_mm + PAD_MM) / 2.0


@functools.lru_cache(maxsize=1)
def _template_channels() -> np.ndarray:
    """float32, (5, 197 + 2·PAD, 233 + 2·PAD, 189 + 2·PAD) at 1 mm (module docstring)."""
    from scipy.ndimage import binary_fill_holes, distance_transform_edt, zoom

    from sgilo.pipeline.data.mni_sources import mni_arrays

    arrays = mni_arrays()
    t1, mask = arrays.t1, arrays.mask
    gm = np.clip(arrays.gm, 0.0, 1.0)
    wm = np.clip(arrays.wm, 0.0, 1.0)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    pad = ((PAD_MM, PAD_MM),) * 3
    mask_p = np.pad(mask, pad)
    # on a 2 mm grid (the shells are smooth; 8× fewer voxels): closing by a ball of CLOSING_MM
    # (two distance transforms), holes filled, so one head wraps the temporal lobes, cerebellum
    # and brainstem instead of one per island; then the distance, interpolated back to 1 mm
    coarse = mask_p[::2, ::2, ::2]
    dilated = distance_transform_edt(~coarse, sampling=2.0) <= CLOSING_MM
    closed = binary_fill_holes(distance_transform_edt(dilated, sampling=2.0) > CLOSING_MM)
    dist2 = distance_transform_edt(~(closed | coarse), sampling=2.0)
    factors = [n / c for n, c in zip(mask_p.shape, coarse.shape, strict=True)]
    dist = np.minimum(zoom(dist2, factors, order=1), DIST_CAP_MM)
    dist[mask_p] = 0.0
    stack = [np.pad(np.asarray(a, dtype=np.float32), pad) for a in (t1, csf, gm, wm)]
    return np.stack([*stack, dist.astype(np.float32)])


@functools.lru_cache(maxsize=4)
def _resampled(voxel_mm: float) -> np.ndarray:
    """The channels at ``voxel_mm`` (anti-aliased), float32 (5, X, Y, Z)."""
    from scipy.ndimage import gaussian_filter, zoom

    full = _template_channels()
    if voxel_mm == 1.0:
        return full
    sigma = 0.4 * voxel_mm
    out = [zoom(gaussian_filter(c, sigma), 1.0 / voxel_mm, order=1) for c in full]
    return np.stack(out).astype(np.float32)


def source_volume(voxel_mm: float, device: str | torch.device = "cpu") -> SourceVolume:
    """The source channels at ``voxel_mm`` (≥ 1, rounded to 0.25 mm) on ``device``.

    Returns:
        :class:`SourceVolume` whose ``data`` is float32 (1, 5, X, Y, Z), X ≈ (197 + 2·PAD_MM) /
        voxel_mm and so on; cached per voxel size on the host (a new tensor per call on device).
    """
    voxel = max(1.0, round(float(voxel_mm) * 4) / 4)
    data = torch.from_numpy(_resampled(voxel))[None].to(device)
    return SourceVolume(data, voxel)
