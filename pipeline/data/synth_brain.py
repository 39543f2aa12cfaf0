"""Synthetic brain MR magnitude images with the variety of real scans, generated on the fly from
nilearn's offline MNI152 template and tissue maps: ``synth_brain_batch`` and, for ``sgilo
train-gan --data synth-brain``, the batch sampler :class:`SynthBrainSampler`.

One image (every random choice is per image, every step batched in torch on one device):

1. a slice plane (:mod:`~sgilo.pipeline.data.synth_planes`): orientation family axial/coronal/
   sagittal, its position from the split (:mod:`~sgilo.pipeline.data.synth_split`), with
   probability ``oblique_prob`` a tilt up to ``max_tilt_deg``, an in-plane rotation, a field of
   view (zoom), an in-plane shift and a per-axis head size;
2. a smooth diffeomorphic deformation (:mod:`~sgilo.pipeline.data.synth_deform`) applied to the
   plane's points, so each image comes from a new "subject";
3. the source channels sampled there (trilinear; :mod:`~sgilo.pipeline.data.synth_volumes`) and
   turned into intensities (:mod:`~sgilo.pipeline.data.synth_contrast`): the template T1 or
   T1-/T2-/PD-like or random tissue weights, with or without a synthetic head, a gamma curve;
4. a bias field (:mod:`~sgilo.pipeline.data.synth_bias`), then lower resolution, blur and Rician
   noise (:mod:`~sgilo.pipeline.data.synth_acquisition`);
5. a left–right flip with probability ½, then the project's training-image scaling (:mod:`sgilo.
   pipeline.data.training`): divide by the image's 99.5th percentile and clip to [0, 1].

Randomness: ``synth_brain_batch(n, seed, split=...)`` draws everything from one
``torch.Generator`` on ``device`` seeded with a hash of (seed, split), so a (seed, split, device)
triple gives the same images every time (CPU and CUDA streams differ). The sampler draws one such
seed per batch from the trainer's data generator, so ``train-gan --resume`` replays exactly.
Validation images come from the ``"validation"`` plane positions only, training images from the
``"train"`` ones (disjoint, 6 mm apart): a validation image is never a training image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from sgilo.pipeline.data.synth_acquisition import degrade
from sgilo.pipeline.data.synth_bias import bias_fields
from sgilo.pipeline.data.synth_contrast import render_contrast, tissue_weights
from sgilo.pipeline.data.synth_deform import deform_points, integrate_velocity, random_velocity
from sgilo.pipeline.data.synth_planes import PlaneBatch, plane_points
from sgilo.pipeline.data.synth_split import FAMILIES, SynthSplit, split_positions
from sgilo.pipeline.data.synth_volumes import SourceVolume, source_volume
from sgilo.pipeline.data.training import PERCENTILE, SYNTH_BRAIN

__all__ = ["SYNTH_BRAIN", "SynthBrainConfig", "SynthBrainSampler", "synth_brain_batch"]

#: side of the output grid the (smooth) displacement is sampled on, then upsampled bilinearly
DISPLACEMENT_GRID = 32

Probs3 = tuple[float, float, float]
Range = tuple[float, float]


class SynthBrainConfig(BaseModel):
    """The distribution of the synthetic images (defaults: the ``synth-brain`` training source)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family_probs: Probs3 = Field((0.5, 0.25, 0.25), description="axial, coronal, sagittal")
    oblique_prob: float = Field(0.5, ge=0, le=1, description="probability of a tilted plane")
    max_tilt_deg: float = Field(25.0, ge=0, le=45, description="tilt uniform in [0, this]")
    max_inplane_deg: float = Field(10.0, ge=0, le=180, description="in-plane rotation ± this")
    fov_mm: Range = Field((200.0, 260.0), description="image side in mm, uniform")
    max_shift_mm: float = Field(10.0, ge=0, description="in-plane centre shift ± this, per axis")
    head_scale: Range = Field((0.9, 1.1), description="per-axis head size factor, uniform")
    max_deform_mm: float = Field(4.0, ge=0, description="velocity rms in mm, U(0, this)")
    head_prob: float = Field(0.5, ge=0, le=1, description="probability of a synthetic head")
    thickness_mm: tuple[Range, Range, Range] = Field(
        ((1.0, 4.0), (4.0, 9.0), (4.0, 10.0)),
        description="extra-cerebral CSF, skull, scalp thickness ranges (mm)",
    )
    contrast_probs: tuple[float, float, float, float, float] = Field(
        (0.3, 0.2, 0.2, 0.15, 0.15), description="template, t1, t2, pd, random"
    )
    gamma_std: float = Field(0.2, ge=0, description="std of log γ")
    bias_prob: float = Field(0.8, ge=0, le=1)
    max_bias: float = Field(0.3, ge=0, description="log bias std at the nodes, U(0, this)")
    lowres_prob: float = Field(0.4, ge=0, le=1, description="probability of a k-space crop")
    min_keep: float = Field(0.35, gt=0, le=1, description="kept k-space fraction, U(this, 1)")
    blur_prob: float = Field(0.4, ge=0, le=1)
    max_blur_px: float = Field(1.0, ge=0, description="Gaussian σ in pixels, U(0, this)")
    noise_prob: float = Field(0.7, ge=0, le=1)
    max_noise: float = Field(0.04, ge=0, description="noise std (image max = 1), U(0, this)")


def _seed(seed: int, split: SynthSplit) -> int:
    """A 63-bit generator seed from (seed, split): the two splits never share a stream."""
    key = 0 if split == "train" else 1
    state = np.random.SeedSequence([int(seed) & (2**64 - 1), key]).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)


def _uniform(rng: torch.Generator, n: int, lo: float, hi: float, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=rng, device=device)


def _gated(rng: torch.Generator, n: int, prob: float, hi: float, device) -> torch.Tensor:
    """U(0, hi) with probability ``prob``, else 0 (both draws always made: fixed stream)."""
    on = torch.rand(n, generator=rng, device=device) < prob
    return _uniform(rng, n, 0.0, hi, device) * on


def _choice(rng: torch.Generator, n: int, probs, device) -> torch.Tensor:
    p = torch.tensor(probs, dtype=torch.float32, device=device)
    return torch.multinomial(p / p.sum(), n, replacement=True, generator=rng)


def _percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise q-th percentile of float (B, N), linear interpolation (as ``np.percentile`` and
    ``torch.quantile``), from the top-k values only (cheaper than a full sort). Returns (B,)."""
    pos = (x.shape[1] - 1) * q / 100.0  # rank of the percentile from the bottom
    lo = math.floor(pos)
    top = x.topk(x.shape[1] - lo, dim=1).values  # descending: top[:, j] is rank N - 1 - j
    at_lo = top[:, -1]
    at_hi = top[:, -2] if top.shape[1] > 1 else at_lo
    return at_lo + (pos - lo) * (at_hi - at_lo)


def _planes(
    rng: torch.Generator, n: int, split: SynthSplit, cfg: SynthBrainConfig, device
) -> PlaneBatch:
    family = _choice(rng, n, cfg.family_probs, device)
    table = [torch.tensor(split_positions(f, split), device=device) for f in FAMILIES]
    pick = torch.rand(n, generator=rng, device=device)
    position = torch.zeros(n, device=device)
    for k, positions in enumerate(table):
        index = (pick * len(positions)).long().clamp_max(len(positions) - 1)
        position = torch.where(family == k, positions[index].float(), position)
    tilt = _gated(rng, n, cfg.oblique_prob, math.radians(cfg.max_tilt_deg), device)
    limit = math.radians(cfg.max_inplane_deg)
    return PlaneBatch(
        family=family,
        position=position,
        inplane=_uniform(rng, n, -limit, limit, device),
        tilt=tilt,
        tilt_axis=_uniform(rng, n, 0.0, 2 * math.pi, device),
        fov_mm=_uniform(rng, n, *cfg.fov_mm, device),
        shift_mm=_uniform(rng, 2 * n, -cfg.max_shift_mm, cfg.max_shift_mm, device).view(n, 2),
        head_scale=_uniform(rng, 3 * n, *cfg.head_scale, device).view(n, 3),
    )


def _render(
    volume: SourceVolume, n: int, size: int, split: SynthSplit, cfg: SynthBrainConfig, rng
) -> torch.Tensor:
    device = volume.data.device
    planes = _planes(rng, n, split, cfg, device)
    points = volume.to_normalized(plane_points(planes, size))
    amplitude = _uniform(rng, n, 0.0, cfg.max_deform_mm, device)
    mm = tuple(float(v) for v in volume.mm_per_unit())
    velocity = random_velocity(amplitude, mm, rng)
    points = deform_points(points, integrate_velocity(velocity), coarse=DISPLACEMENT_GRID)
    # "border": beyond the padded box, no tissue and the capped (far) distance of its faces
    channels = torch.nn.functional.grid_sample(
        volume.data, points[None], align_corners=True, padding_mode="border"
    )[0].transpose(0, 1)  # (n, 5, size, size)
    family = _choice(rng, n, cfg.contrast_probs, device)
    weights = tissue_weights(family, rng)
    head = torch.rand(n, generator=rng, device=device) < cfg.head_prob
    thickness = torch.stack([_uniform(rng, n, *r, device) for r in cfg.thickness_mm], 1)
    gamma = torch.exp(cfg.gamma_std * torch.randn(n, generator=rng, device=device))
    image = render_contrast(channels, family, weights, head, thickness, gamma)
    image = image * bias_fields(_gated(rng, n, cfg.bias_prob, cfg.max_bias, device), size, rng)
    lowres = torch.rand(n, generator=rng, device=device) < cfg.lowres_prob
    keep = _uniform(rng, 2 * n, cfg.min_keep, 1.0, device).view(n, 2)
    keep = torch.where(lowres[:, None], keep, torch.ones_like(keep))
    blur = _gated(rng, n, cfg.blur_prob, cfg.max_blur_px, device)
    noise = _gated(rng, n, cfg.noise_prob, cfg.max_noise, device)
    image = degrade(image, keep, blur, noise, rng)
    flip = torch.rand(n, generator=rng, device=device) < 0.5
    image = torch.where(flip[:, None, None], image.flip(-1), image)
    ref = _percentile(image.flatten(1), PERCENTILE)
    ref = torch.where(ref > 0, ref, image.flatten(1).amax(1)).clamp_min(1e-8)
    return (image / ref[:, None, None]).clamp(0.0, 1.0)


def _voxel_mm(size: int, cfg: SynthBrainConfig) -> float:
    """Source voxel for an output side: the smallest pixel spacing (the volume is anti-aliased
    for it), at least 1 mm."""
    return max(1.0, cfg.fov_mm[0] / size)


def synth_brain_batch(
    n: int,
    seed: int,
    size: int = 128,
    split: SynthSplit = "train",
    config: SynthBrainConfig | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``n`` synthetic brain images (module docstring), a pure function of its arguments.

    Args:
        n: number of images (≥ 1).
        seed: any integer; with ``split`` and the device it fixes every random choice.
        size: output side (≥ 8).
        split: ``"train"`` or ``"validation"`` plane positions (:mod:`~sgilo.pipeline.data.
            synth_split`).
        config: the distribution (default :class:`SynthBrainConfig`).
        device: where the images are made.

    Returns:
        float32, (n, size, size) on ``device``, values in [0, 1].
    """
    cfg = config or SynthBrainConfig()
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size: expected an integer >= 8, received {size!r}")
    if n < 1:
        raise ValueError(f"n: expected at least 1 image, received {n}")
    split_positions("axial", split)  # validates the split name
    volume = source_volume(_voxel_mm(int(size), cfg), device)
    rng = torch.Generator(device=volume.data.device).manual_seed(_seed(seed, split))
    return _render(volume, int(n), int(size), split, cfg, rng)


class SynthBrainSampler:
    """A ``train_gan`` batch sampler (:data:`sgilo.models.stylegan2.train.BatchSampler`) of
    synthetic brain images: ``sampler(batch, generator)`` draws one seed from ``generator`` (the
    trainer's data generator, on the CPU) and returns ``synth_brain_batch(batch, seed)`` as
    float32 (batch, 1, size, size) on ``device``, [0, 1]. The source volume stays on ``device``
    between calls."""

    def __init__(
        self,
        size: int,
        split: SynthSplit = "train",
        config: SynthBrainConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.size = int(size)
        self.split = split
        self.config = config or SynthBrainConfig()
        split_positions("axial", split)
        self.volume = source_volume(_voxel_mm(self.size, self.config), device)

    def __call__(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        device = self.volume.data.device
        rng = torch.Generator(device=device).manual_seed(_seed(seed, self.split))
        return _render(self.volume, batch, self.size, self.split, self.config, rng)[:, None]
