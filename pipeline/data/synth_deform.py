"""Random smooth diffeomorphic deformations of the template, by scaling and squaring a smooth random
stationary velocity field (Arsigny et al., MICCAI 2006; as in SynthSeg/SynthMorph).

Coordinates are ``grid_sample``'s normalized ones over the source volume (:class:`sgilo.pipeline.
data.synth_volumes.SourceVolume`): a point is a (z, y, x) triple in [−1, 1]. For image b:

1. velocity: white Gaussian noise smoothed by a Gaussian of ``sigma`` nodes (valid part on a
   ``grid``³ grid)
   (correlation length ≈ 40 mm), scaled per image and component to a root-mean-square of
   ``amplitude_b`` millimetres (converted per axis to normalized units): v_b;
2. scaling and squaring: φ₀ = v_b / 2^T, φ_{k+1}(x) = φ_k(x) + φ_k(x + φ_k(x)) for T ``steps``,
   so that x ↦ x + φ_T(x) approximates exp(v_b), the flow of v_b at time 1 — a diffeomorphism
   whose inverse is exp(−v_b);
3. a point x of the output's plane samples the template at x + φ_T(x) (φ_T interpolated
   trilinearly from the grid).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["deform_points", "integrate_velocity", "random_velocity"]


def _gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, C, D, H, W) along its three grid axes, kernel radius
    r = ⌈3σ⌉ nodes, without padding: the output is (B, C, D − 2r, H − 2r, W − 2r) (a stationary
    field, no edge effects)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=field.dtype, device=field.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    b, c = field.shape[:2]
    out = field.reshape(b * c, 1, *field.shape[2:])
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        out = F.conv3d(out, kernel.view(shape))
    return out.reshape(b, c, *out.shape[2:])


def random_velocity(
    amplitude_mm: torch.Tensor,
    mm_per_unit: tuple[float, float, float],
    generator: torch.Generator,
    grid: int = 16,
    sigma: float = 2.5,
) -> torch.Tensor:
    """Smooth random velocity fields.

    Args:
        amplitude_mm: float32, (B,): the root-mean-square of each component over the field, in
            mm (0: no deformation).
        mm_per_unit: millimetres per normalized unit along (x, y, z).
        generator: draws the white noise (on its device).
        grid: nodes per axis of the field (spacing ≈ 16 mm over the padded template for 16).
        sigma: Gaussian smoothing in nodes (correlation length ≈ σ · spacing ≈ 40 mm).

    Returns:
        float32, (B, 3, grid, grid, grid), channels (z, y, x) in normalized units.
    """
    b = amplitude_mm.shape[0]
    device = amplitude_mm.device
    side = grid + 2 * max(1, math.ceil(3 * sigma))
    noise = torch.randn(
        (b, 3, side, side, side), generator=generator, device=device, dtype=torch.float32
    )
    smooth = _gaussian_smooth(noise, sigma)  # (b, 3, grid, grid, grid)
    rms = smooth.pow(2).mean(dim=(2, 3, 4), keepdim=True).sqrt().clamp_min(1e-12)
    per_unit = torch.tensor(mm_per_unit[::-1], dtype=torch.float32, device=device)  # (z, y, x)
    scale = amplitude_mm[:, None, None, None, None] / per_unit[None, :, None, None, None]
    return smooth / rms * scale


def _identity(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """float32, (B, D, H, W, 3): normalized (z, y, x) coordinates of the grid's own nodes."""
    theta = torch.eye(3, 4, device=device).expand(shape[0], 3, 4)
    return F.affine_grid(theta, list(shape), align_corners=True)


def integrate_velocity(velocity: torch.Tensor, steps: int = 6) -> torch.Tensor:
    """Scaling and squaring: the displacement φ_T of exp(v) (module docstring).

    Args:
        velocity: float32, (B, 3, D, H, W), channels (z, y, x), normalized units.
        steps: T, the number of squarings (≥ 0).

    Returns:
        float32, (B, 3, D, H, W): φ_T, the same layout.
    """
    phi = velocity / 2**steps
    ident = _identity(velocity.shape, velocity.device)
    for _ in range(steps):
        grid = ident + phi.permute(0, 2, 3, 4, 1)
        phi = phi + F.grid_sample(phi, grid, align_corners=True, padding_mode="border")
    return phi


def deform_points(
    points: torch.Tensor, displacement: torch.Tensor, coarse: int | None = None
) -> torch.Tensor:
    """x ↦ x + φ(x) for every point.

    Args:
        points: float32, (B, H, W, 3) normalized (z, y, x); with ``coarse``, an affine function
            of (row, column) (a plane), so that bilinear interpolation of it is exact.
        displacement: float32, (B, 3, D, H', W') from :func:`integrate_velocity`.
        coarse: if set (< H, W), φ is evaluated on a ``coarse``² corner-aligned subgrid of the
            pixels and interpolated bilinearly to H×W (φ varies over ~40 mm, a few pixels'
            interpolation loses nothing visible and saves most of the cost).

    Returns:
        float32, (B, H, W, 3): the deformed points.
    """
    h, w = points.shape[1:3]
    at = points
    if coarse is not None and coarse < min(h, w):
        at = F.interpolate(
            points.permute(0, 3, 1, 2), size=(coarse, coarse), mode="bilinear", align_corners=True
        ).permute(0, 2, 3, 1)
    phi = F.grid_sample(displacement, at[:, None], align_corners=True, padding_mode="border")
    phi = phi[:, :, 0]  # (B, 3, h', w')
    if phi.shape[-2:] != (h, w):
        phi = F.interpolate(phi, size=(h, w), mode="bilinear", align_corners=True)
    return points + phi.permute(0, 2, 3, 1)
