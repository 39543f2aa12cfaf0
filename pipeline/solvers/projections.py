"""Projections used by the latent-space solvers (ILO/SGILO §3 step 4, CSGM).

- :func:`l1_ball_project`: the exact Euclidean projection onto the ℓ1 ball, per batch element,
  by the sort-based algorithm of Duchi, Shalev-Shwartz, Singer & Chandra (ICML 2008);
- :func:`sphere_project`: rescale each batch element (or each row) to a prescribed ℓ2 norm.

Both are plain tensor maps (computed under ``torch.no_grad``): they are applied to the
optimisation variables *after* an optimiser step, never differentiated through.
"""

from __future__ import annotations

import torch


def _per_batch(
    value: float | torch.Tensor, batch: int, like: torch.Tensor, name: str
) -> torch.Tensor:
    """A float or a ``(B,)`` tensor as a ``(B,)`` tensor of ``like``'s dtype and device."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a float or a ({batch},) tensor, got {tuple(t.shape)}")
    return t


@torch.no_grad()
def l1_ball_project(v: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each batch element onto the ℓ1 ball of radius ``r``:

        Π(v) = argmin_x ‖x − v‖₂²  subject to  ‖x‖₁ ≤ r,

    computed exactly for every ``v_b = v[b]`` (all axes after the first flattened, ``n`` entries).

    If ``‖v‖₁ ≤ r`` the point is its own projection and is returned unchanged. Otherwise the KKT
    conditions give soft thresholding, ``x_i = sign(v_i) · max(|v_i| − θ, 0)``, with the unique
    ``θ > 0`` such that ``Σ_i max(|v_i| − θ, 0) = r``. With ``u`` the magnitudes ``|v_i|`` sorted in
    decreasing order (Duchi et al. 2008, Fig. 1),

        ρ = max{ j ∈ 1…n : u_j − (Σ_{i≤j} u_i − r) / j > 0 },   θ = (Σ_{i≤ρ} u_i − r) / ρ.

    ``radius``: a float (every element) or a ``(B,)`` tensor (one per element), ``≥ 0``; a radius
    of 0 projects to 0. ``v``: real ``(B, ...)``. Cost ``O(n log n)`` per element (the sort).
    """
    if torch.is_complex(v) or not v.is_floating_point():
        raise ValueError(f"l1_ball_project needs a real floating tensor, got {v.dtype}")
    if v.ndim < 1:
        raise ValueError("l1_ball_project needs a leading batch axis: v of shape (B, ...)")
    batch = v.shape[0]
    r = _per_batch(radius, batch, v, "radius")
    if bool((r < 0).any()) or not bool(torch.isfinite(r).all()):
        raise ValueError("radius must be finite and non-negative")
    flat = v.reshape(batch, -1)
    mag = flat.abs()
    outside = mag.sum(dim=1) > r
    if not bool(outside.any()):
        return v
    u = torch.sort(mag, dim=1, descending=True).values
    excess = torch.cumsum(u, dim=1) - r[:, None]  # Σ_{i≤j} u_i − r
    j = torch.arange(1, u.shape[1] + 1, dtype=v.dtype, device=v.device)
    positive = (u - excess / j) > 0  # true for j = 1 … ρ (a prefix) when ‖v‖₁ > r
    rho = positive.sum(dim=1).clamp_min(1)  # (B,) ≥ 1 where outside
    theta = excess.gather(1, (rho - 1)[:, None]).squeeze(1) / rho.to(v.dtype)
    theta = theta.clamp_min(0)
    projected = torch.sign(flat) * (mag - theta[:, None]).clamp_min(0)
    out = torch.where(outside[:, None], projected, flat)
    return out.reshape(v.shape)


@torch.no_grad()
def sphere_project(v: torch.Tensor, norms: float | torch.Tensor) -> torch.Tensor:
    """Rescale ``v`` to prescribed ℓ2 norms: ``x = ν · v / ‖v‖₂``.

    ``norms`` of shape ``S`` (a prefix of ``v.shape``) gives one norm per index of ``S``: the norm
    is taken over the remaining axes. So ``norms`` ``(B,)`` rescales every batch element of
    ``v`` ``(B, ...)``, and ``(B, n)`` every row of a ``(B, n, D)`` latent; a float means
    ``(B,)`` filled with that value. Entries with ``‖v‖ = 0`` have no direction and stay 0.
    """
    if v.ndim < 1:
        raise ValueError("sphere_project needs a leading batch axis: v of shape (B, ...)")
    real = v.real.dtype if torch.is_complex(v) else v.dtype
    nu = torch.as_tensor(norms, dtype=real, device=v.device)
    if nu.ndim == 0:
        nu = nu.expand(v.shape[0])
    if nu.ndim > v.ndim or tuple(v.shape[: nu.ndim]) != tuple(nu.shape):
        raise ValueError(
            f"norms of shape {tuple(nu.shape)} must be a prefix of v's shape {tuple(v.shape)}"
        )
    if bool((nu < 0).any()):
        raise ValueError("norms must be non-negative")
    dims = tuple(range(nu.ndim, v.ndim))
    current = v.abs().pow(2).sum(dim=dims, keepdim=True).sqrt() if dims else v.abs()
    shape = (*nu.shape, *([1] * len(dims)))
    factor = torch.where(
        current > 0, nu.reshape(shape) / current.clamp_min(torch.finfo(real).tiny), 0.0
    )
    return v * factor.to(real)
