"""Image contrast from tissue maps: T1-, T2-, PD-like and random tissue intensities, the template's
own T1, an optional synthesized head, and a gamma curve.

Inputs per pixel (sampled from :mod:`sgilo.pipeline.data.synth_volumes`): the template T1 ``t1``,
tissue probabilities ``p_csf, p_gm, p_wm`` and the distance ``d`` (mm) outside the brain mask.
Head shells (image b, when it has a head) are soft bands in ``d`` with edges at cumulative random
thicknesses: extra-cerebral CSF [0, a), skull [a, a + s) with marrow (diploë) in its middle third,
scalp [a + s, a + s + c). With the smooth step σ_w(d − e) = sigmoid((d − e)/w), w = 0.5 mm, a band
[e₀, e₁) has weight σ_w(d − e₀) − σ_w(d − e₁) (the first band: 1 − σ_w(d − e₁)), all times
(1 − p_csf − p_gm − p_wm) so shells live outside the brain.

Intensity of image b (tissue weights ``w`` drawn per image from its contrast family, table
:data:`FAMILY_RANGES`, each weight uniform in its range):

    I = Σ_k w_k p_k                       (families t1, t2, pd, random)
    I = t1 + Σ_{k ∈ head} w_k p_k        (family "template": the template's own T1 in the brain,
                                          T1-like head weights)

then ``I ← (I / max I)^γ`` with log γ ~ N(0, ``gamma_std``²). The OOD suite's synthetic T2 and PD
images (CSF/GM/WM = 1/0.5/0.3 and 1/0.85/0.75) lie inside the t2 and pd ranges: a prior trained on
these images has seen those contrasts (at other slice positions, :mod:`sgilo.pipeline.data.
synth_split`).
"""

from __future__ import annotations

import torch

__all__ = ["CONTRAST_FAMILIES", "FAMILY_RANGES", "TISSUES", "render_contrast", "tissue_weights"]

#: tissues, in the order of the weight vectors
TISSUES: tuple[str, ...] = ("csf", "gm", "wm", "skull", "marrow", "scalp")
#: contrast families, in the order of their index in a batch
CONTRAST_FAMILIES: tuple[str, ...] = ("template", "t1", "t2", "pd", "random")
#: (low, high) of each tissue's weight, per family (template: the head weights; brain from t1)
FAMILY_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "template": ((0.05, 0.3), (0.4, 0.6), (0.7, 0.95), (0.0, 0.1), (0.4, 0.8), (0.6, 1.0)),
    "t1": ((0.05, 0.3), (0.4, 0.6), (0.7, 0.95), (0.0, 0.1), (0.4, 0.8), (0.6, 1.0)),
    "t2": ((0.8, 1.0), (0.45, 0.65), (0.25, 0.45), (0.0, 0.08), (0.3, 0.6), (0.3, 0.8)),
    "pd": ((0.75, 1.0), (0.65, 0.85), (0.5, 0.75), (0.0, 0.1), (0.5, 0.8), (0.5, 0.9)),
    "random": ((0.0, 1.0),) * 6,
}
#: width w (mm) of the smooth shell edges
EDGE_MM = 0.5


def tissue_weights(family: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image tissue weights drawn uniformly in their family's ranges.

    Args:
        family: int64, (B,): index into :data:`CONTRAST_FAMILIES`.
        generator: on ``family``'s device.

    Returns:
        float32, (B, 6): weights in :data:`TISSUES` order.
    """
    ranges = torch.tensor(
        [FAMILY_RANGES[f] for f in CONTRAST_FAMILIES], dtype=torch.float32, device=family.device
    )[family]  # (B, 6, 2)
    u = torch.rand(family.shape + (len(TISSUES),), generator=generator, device=family.device)
    return ranges[..., 0] + u * (ranges[..., 1] - ranges[..., 0])


def _step(d: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid((d - edge[:, None, None]) / EDGE_MM)


def render_contrast(
    channels: torch.Tensor,
    family: torch.Tensor,
    weights: torch.Tensor,
    head: torch.Tensor,
    thickness_mm: torch.Tensor,
    gamma: torch.Tensor,
) -> torch.Tensor:
    """Tissue maps → intensities (module docstring).

    Args:
        channels: float32, (B, 5, H, W): t1, csf, gm, wm, dist (:data:`sgilo.pipeline.data.
            synth_volumes.CHANNELS`).
        family: int64, (B,): contrast family index.
        weights: float32, (B, 6): tissue weights (:func:`tissue_weights`).
        head: bool, (B,): draw the head shells.
        thickness_mm: float32, (B, 3): extra-cerebral CSF, skull and scalp thicknesses.
        gamma: float32, (B,): the exponent γ.

    Returns:
        float32, (B, H, W), values in [0, 1] (0 where there is no tissue).
    """
    t1, csf, gm, wm, d = channels.unbind(1)
    w = weights[:, :, None, None]
    outside = (1.0 - csf - gm - wm).clamp(0.0, 1.0)
    e1 = thickness_mm[:, 0]
    e2 = e1 + thickness_mm[:, 1]
    e3 = e2 + thickness_mm[:, 2]
    m1, m2 = e1 + (e2 - e1) / 3, e1 + 2 * (e2 - e1) / 3
    s1, s2, s3 = _step(d, e1), _step(d, e2), _step(d, e3)
    marrow = _step(d, m1) - _step(d, m2)
    skull = (s1 - s2) - marrow
    shells = (
        w[:, 0] * (1.0 - s1) + w[:, 3] * skull + w[:, 4] * marrow + w[:, 5] * (s2 - s3)
    ) * outside
    shells = shells * head[:, None, None]
    brain = w[:, 0] * csf + w[:, 1] * gm + w[:, 2] * wm
    is_template = (family == CONTRAST_FAMILIES.index("template"))[:, None, None]
    image = torch.where(is_template, t1, brain) + shells
    peak = image.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]
    return (image / peak).clamp(0.0, 1.0) ** gamma[:, None, None]
