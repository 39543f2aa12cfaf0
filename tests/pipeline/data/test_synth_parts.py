"""The parts of the synthetic brain generator: scaling and squaring, planes, bias, acquisition."""

from __future__ import annotations

import math

import torch

from sgilo.pipeline.data.synth_acquisition import degrade
from sgilo.pipeline.data.synth_bias import bias_fields
from sgilo.pipeline.data.synth_deform import (
    deform_points,
    integrate_velocity,
    random_velocity,
)
from sgilo.pipeline.data.synth_planes import PlaneBatch, plane_points, rotation_matrices

MM = (120.0, 140.0, 118.0)  # mm per normalized unit, about the padded template's


def _identity_grid(b: int, n: int) -> torch.Tensor:
    theta = torch.eye(3, 4).expand(b, 3, 4)
    return torch.nn.functional.affine_grid(theta, [b, 3, n, n, n], align_corners=True)


def test_scaling_and_squaring_is_invertible_and_orientation_preserving():
    rng = torch.Generator().manual_seed(0)
    v = random_velocity(torch.tensor([6.0, 3.0]), MM, rng)
    phi, phi_inv = integrate_velocity(v), integrate_velocity(-v)
    assert phi.abs().max() > 0.02  # a real deformation (several mm)
    # exp(v) then exp(-v): back to the start, away from the box border
    x = _identity_grid(2, 16)[:, 4:12, 4:12, 4:12].reshape(2, 8, 64, 3)
    there = deform_points(x, phi)
    back = deform_points(there, phi_inv)
    assert (back - x).abs().max() < 0.1 * (there - x).abs().max()
    # Jacobian determinant of x + phi(x) on the grid, by central differences: positive
    # components reordered (z, y, x) → (D, H, W) to match the difference axes
    y = (_identity_grid(2, 16) + phi.permute(0, 2, 3, 4, 1)).flip(-1)
    h = 2.0 / 15
    jac = torch.stack(
        [
            (y[:, 2:, 1:-1, 1:-1] - y[:, :-2, 1:-1, 1:-1]) / (2 * h),
            (y[:, 1:-1, 2:, 1:-1] - y[:, 1:-1, :-2, 1:-1]) / (2 * h),
            (y[:, 1:-1, 1:-1, 2:] - y[:, 1:-1, 1:-1, :-2]) / (2 * h),
        ],
        -1,
    )
    assert torch.linalg.det(jac).min() > 0


def test_zero_velocity_is_the_identity():
    v = torch.zeros(1, 3, 8, 8, 8)
    points = torch.rand(1, 5, 5, 3) * 2 - 1
    assert torch.equal(deform_points(points, integrate_velocity(v)), points)


def test_coarse_displacement_matches_the_full_evaluation():
    rng = torch.Generator().manual_seed(1)
    phi = integrate_velocity(random_velocity(torch.tensor([4.0]), MM, rng))
    lin = torch.linspace(-0.6, 0.6, 64)
    points = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), -1)  # a plane: (z, y)
    points = torch.cat([points, 0.3 * points[..., :1]], -1)[None]
    full, fast = deform_points(points, phi), deform_points(points, phi, coarse=32)
    assert (full - fast).abs().max() < 0.02 * (full - points).abs().max()


def test_rotation_matrices_are_rotations_about_their_axis():
    axis = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]]), dim=1)
    r = rotation_matrices(axis, torch.tensor([0.7, math.pi / 2]))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose((r @ axis[..., None])[..., 0], axis, atol=1e-6)
    assert torch.allclose(
        r[1] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6
    )


def _planes(family: int, **kw) -> PlaneBatch:
    base = dict(
        family=torch.tensor([family]),
        position=torch.tensor([90.0]),
        inplane=torch.zeros(1),
        tilt=torch.zeros(1),
        tilt_axis=torch.zeros(1),
        fov_mm=torch.tensor([128.0]),
        shift_mm=torch.zeros(1, 2),
        head_scale=torch.ones(1, 3),
    )
    base.update(kw)
    return PlaneBatch(**base)


def test_canonical_planes_follow_the_display_conventions():
    axial = plane_points(_planes(0), 8)[0]  # 16 mm pixels
    assert torch.allclose(axial[..., 2], torch.tensor(90.0))  # a plane at z = 90
    assert axial[0, 0, 0] > axial[0, -1, 0] and axial[0, 0, 1] > axial[-1, 0, 1]  # R, A first
    assert torch.allclose(axial[0, 1] - axial[0, 0], torch.tensor([-16.0, 0.0, 0.0]))
    sagittal = plane_points(_planes(2), 8)[0]
    assert torch.allclose(sagittal[..., 0], torch.tensor(90.0))
    assert sagittal[0, 0, 2] > sagittal[-1, 0, 2] and sagittal[0, 0, 1] > sagittal[0, -1, 1]
    tilted = plane_points(_planes(0, tilt=torch.tensor([0.3])), 8)[0]
    assert tilted[..., 2].std() > 1.0  # oblique: z varies across the image
    assert torch.allclose(tilted[3:5, 3:5, 2].mean(), torch.tensor(90.0), atol=1e-4)


def test_bias_fields_are_smooth_positive_and_off_at_zero_strength():
    rng = torch.Generator().manual_seed(0)
    b = bias_fields(torch.tensor([0.0, 0.3]), 64, rng)
    assert torch.equal(b[0], torch.ones(64, 64))
    assert b[1].min() > 0 and b[1].log().std() > 0.05
    assert (b[1][:, 1:] - b[1][:, :-1]).abs().max() < 0.1  # smooth


def test_degrade_is_the_identity_without_effects_and_lowpasses_otherwise():
    rng = torch.Generator().manual_seed(0)
    image = torch.rand(2, 32, 32)
    same = degrade(image, torch.ones(2, 2), torch.zeros(2), torch.zeros(2), rng)
    assert torch.allclose(same, image, atol=1e-5)
    low = degrade(
        image, torch.tensor([[0.4, 1.0], [1.0, 1.0]]), torch.tensor([0.0, 1.5]), torch.zeros(2), rng
    )
    spectrum = torch.fft.fft2(low - low.mean((1, 2), keepdim=True)).abs() ** 2
    k = torch.fft.fftfreq(32).abs()
    high_r, high_c = (k > 0.25)[:, None] & (k < 0.1)[None], (k < 0.1)[:, None] & (k > 0.25)[None]
    # 40 % of the row frequencies kept: nothing above 0.2 cycles/pixel along rows; columns kept
    assert spectrum[0][high_r].sum() < 1e-4 * spectrum[0].sum()
    assert spectrum[0][high_c].sum() > 0.05 * spectrum[0].sum()
    # the Gaussian (σ = 1.5 px) damps high frequencies along both axes by exp(-2π²σ²k²) < 0.02
    ref = torch.fft.fft2(image[1] - image[1].mean()).abs() ** 2
    assert spectrum[1][high_c].sum() < 1e-3 * ref[high_c].sum()
    noisy = degrade(
        torch.zeros(1, 64, 64), torch.ones(1, 2), torch.zeros(1), torch.tensor([0.1]), rng
    )
    # Rician background: the magnitude of complex N(0, 0.1²) has mean 0.1·sqrt(π/2)
    assert abs(noisy.mean().item() - 0.1 * math.sqrt(math.pi / 2)) < 0.005
