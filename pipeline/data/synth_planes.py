"""Slice planes through the template: the 3-D points an output image samples, for three orientation
families, oblique tilts, in-plane rotations, zoom, shift and a per-axis head size.

Template coordinates are millimetres on the 1 mm template grid, ordered (x, y, z) in RAS+ voxel
order (voxel (i, j, k) at (i, j, k) mm). Each family's canonical plane is shown as the project's
other slices are (:func:`sgilo.pipeline.data.mni.axial_display_slice`, :mod:`sgilo.pipeline.data.
ood`): with ``u`` the direction of increasing column, ``v`` of increasing row and ``n`` the normal,

* axial: u = −x (the patient's right on the left), v = −y (anterior at the top), n = +z;
* coronal: u = −x, v = −z (superior at the top), n = +y;
* sagittal: u = −y (anterior on the left), v = −z, n = +x.

The plane of image b is

    p(r, c) = o_b + S_b ( q_b + Δ_b ((c − (W − 1)/2) R_b u + (r − (H − 1)/2) R_b v) − o_b )

with q_b the canonical centre (the family axis at the split position, the other two coordinates
at the template centre (98, 116, 94), plus an in-plane shift), R_b = R(a_b, θ_b) R(n, φ_b) an
in-plane rotation φ_b followed by a tilt θ_b about an axis a_b lying in the canonical plane,
Δ_b = fov_b / W the pixel spacing in mm, S_b = diag(1/k_b) a per-axis head-size factor k_b about
the template centre o = (98, 116, 94). Rotations use Rodrigues' formula
R(a, t) = I + sin t [a]_× + (1 − cos t) [a]_×².
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["CENTRE_MM", "PlaneBatch", "canonical_bases", "plane_points", "rotation_matrices"]

#: template centre (x, y, z) in mm: the in-plane centre of every canonical plane
CENTRE_MM: tuple[float, float, float] = (98.0, 116.0, 94.0)


@dataclass(frozen=True)
class PlaneBatch:
    """Per-image plane parameters, all tensors of one device, leading dimension B.

    Attributes:
        family: int64, (B,): index into :data:`sgilo.pipeline.data.synth_split.FAMILIES`.
        position: float32, (B,): template index (mm) of the plane centre along the family axis.
        inplane: float32, (B,): in-plane rotation φ in radians.
        tilt: float32, (B,): tilt θ in radians (0: a canonical plane).
        tilt_axis: float32, (B,): angle (radians, from u) of the tilt axis in the canonical plane.
        fov_mm: float32, (B,): the image side in mm.
        shift_mm: float32, (B, 2): in-plane shift of the centre along (u, v), mm.
        head_scale: float32, (B, 3): per-axis size factors k (x, y, z).
    """

    family: torch.Tensor
    position: torch.Tensor
    inplane: torch.Tensor
    tilt: torch.Tensor
    tilt_axis: torch.Tensor
    fov_mm: torch.Tensor
    shift_mm: torch.Tensor
    head_scale: torch.Tensor


def canonical_bases(device: torch.device | str = "cpu") -> torch.Tensor:
    """float32, (3 families, 3 vectors u/v/n, 3 coordinates x/y/z) (module docstring)."""
    return torch.tensor(
        [
            [[-1, 0, 0], [0, -1, 0], [0, 0, 1]],  # axial
            [[-1, 0, 0], [0, 0, -1], [0, 1, 0]],  # coronal
            [[0, -1, 0], [0, 0, -1], [1, 0, 0]],  # sagittal
        ],
        dtype=torch.float32,
        device=device,
    )


def rotation_matrices(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: unit axes float32 (B, 3), angles (B,) → rotation matrices (B, 3, 3)."""
    zero = torch.zeros_like(angle)
    ax, ay, az = axis.unbind(-1)
    k = torch.stack(
        [
            torch.stack([zero, -az, ay], -1),
            torch.stack([az, zero, -ax], -1),
            torch.stack([-ay, ax, zero], -1),
        ],
        -2,
    )
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device).expand_as(k)
    s, c = angle.sin()[:, None, None], angle.cos()[:, None, None]
    return eye + s * k + (1 - c) * (k @ k)


def plane_points(planes: PlaneBatch, size: int) -> torch.Tensor:
    """The template points each output pixel samples (module docstring's p(r, c)).

    Args:
        planes: B planes.
        size: output side H = W.

    Returns:
        float32, (B, size, size, 3): (x, y, z) template mm of pixel (row, column).
    """
    device = planes.position.device
    basis = canonical_bases(device)[planes.family]  # (B, 3, 3): rows u, v, n
    u, v, n = basis.unbind(1)
    r_in = rotation_matrices(n, planes.inplane)
    tilt_axis = planes.tilt_axis.cos()[:, None] * u + planes.tilt_axis.sin()[:, None] * v
    rot = rotation_matrices(tilt_axis, planes.tilt) @ r_in
    u_r = (rot @ u[..., None])[..., 0]
    v_r = (rot @ v[..., None])[..., 0]
    origin = torch.tensor(CENTRE_MM, dtype=torch.float32, device=device)
    centre = origin.expand_as(n) * (1 - n.abs()) + n.abs() * planes.position[:, None]
    centre = centre + planes.shift_mm[:, :1] * u + planes.shift_mm[:, 1:] * v
    step = planes.fov_mm / size  # (B,)
    coords = (torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2)[None]
    cols = (coords * step[:, None])[:, None, :, None] * u_r[:, None, None, :]
    rows = (coords * step[:, None])[:, :, None, None] * v_r[:, None, None, :]
    points = centre[:, None, None, :] + cols + rows
    scale = planes.head_scale[:, None, None, :]
    return origin + (points - origin) / scale
