"""Projections used by the latent-space solvers (ILO/SGILO §3 step 4, CSGM).

- :func:`l1_ball_project`: the exact Euclidean projection onto the ℓ1 ball, per batch element
  (the soft threshold of Duchi, Shalev-Shwartz, Singer & Chandra, ICML 2008, found without a sort
  by Michelot's active-set iteration, 1986); :func:`l1_ball_project_around_` the solvers' in-place
  form ``v ← c + Π(v − c)``, touching only the batch elements outside the ball;
  :func:`l1_ball_project_around_nosync_` the same without reading device values on the host
  (for GPU queues), the threshold always by the sort-based formula;
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


def _check_radius(radius: float | torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``radius`` as a checked ``(B,)`` tensor (finite, ``≥ 0``) for a real ``v`` ``(B, ...)``."""
    if torch.is_complex(v) or not v.is_floating_point():
        raise ValueError(f"l1_ball_project needs a real floating tensor, got {v.dtype}")
    if v.ndim < 1:
        raise ValueError("l1_ball_project needs a leading batch axis: v of shape (B, ...)")
    r = _per_batch(radius, v.shape[0], v, "radius")
    if bool((r < 0).any()) or not bool(torch.isfinite(r).all()):
        raise ValueError("radius must be finite and non-negative")
    return r


#: rows up to this many entries get the sort-based threshold, longer ones Michelot's iteration
SORT_BELOW = 2048


def _soft_threshold_level(mag: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The ``θ ≥ 0`` ``(B,)`` with ``Σ_i max(mag_i − θ, 0) = r`` for rows ``mag`` ``(B, n)`` with
    ``Σ_i mag_i > r ≥ 0``, by Michelot's iteration: ``θ ← (Σ_{i∈S} mag_i − r) / |S|`` over the
    active set ``S = {i : mag_i > θ}``, from ``S`` = everything. ``θ`` increases to the exact
    value and ``S`` shrinks to the ``ρ`` largest entries of the sort-based formula (the fixed point
    is reached after at most ``n`` passes, in practice a handful), each pass ``O(n)``.
    Rows of at most :data:`SORT_BELOW` entries use the sort-based formula instead (one pass of a
    few kernels, cheaper there than Michelot's handful of passes)."""
    if mag.shape[1] <= SORT_BELOW:  # few entries: one sort costs fewer kernel launches
        return _sorted_level(mag, r)
    count = torch.full_like(r, mag.shape[1])
    theta = (mag.sum(dim=1) - r) / count
    active = torch.ones_like(mag, dtype=torch.bool)
    while True:
        # S only shrinks and θ only grows (as in exact arithmetic; enforced, so that rounding
        # cannot make the iteration cycle): at most n + 1 passes
        active &= mag > theta[:, None]
        new_count = active.sum(dim=1).to(mag.dtype)
        if torch.equal(new_count, count):
            break
        count = new_count
        level = (torch.where(active, mag, 0).sum(dim=1) - r) / count.clamp_min(1)
        theta = torch.where(count > 0, torch.maximum(level, theta), theta)
    return theta.clamp_min(0)


def _sorted_level(mag: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The threshold ``θ`` ``(B,)`` of :func:`_soft_threshold_level` by the sort-based formula
    (Duchi et al.): a fixed sequence of kernels, no host read."""
    u = torch.sort(mag, dim=1, descending=True).values
    excess = torch.cumsum(u, dim=1) - r[:, None]  # Σ_{i≤j} u_i − r
    j = torch.arange(1, u.shape[1] + 1, dtype=mag.dtype, device=mag.device)
    rho = ((u - excess / j) > 0).sum(dim=1).clamp_min(1)  # the prefix j = 1 … ρ
    return (excess.gather(1, (rho - 1)[:, None]).squeeze(1) / rho.to(mag.dtype)).clamp_min(0)


@torch.no_grad()
def l1_ball_project(v: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each batch element onto the ℓ1 ball of radius ``r``:

        Π(v) = argmin_x ‖x − v‖₂²  subject to  ‖x‖₁ ≤ r,

    computed exactly for every ``v_b = v[b]`` (all axes after the first flattened, ``n`` entries).

    If ``‖v‖₁ ≤ r`` the point is its own projection and is returned unchanged. Otherwise the KKT
    conditions give soft thresholding, ``x_i = sign(v_i) · max(|v_i| − θ, 0)``, with the unique
    ``θ > 0`` such that ``Σ_i max(|v_i| − θ, 0) = r``. With ``u`` the magnitudes ``|v_i|`` sorted in
    decreasing order (Duchi et al. 2008, Fig. 1),

        ρ = max{ j ∈ 1…n : u_j − (Σ_{i≤j} u_i − r) / j > 0 },   θ = (Σ_{i≤ρ} u_i − r) / ρ;

    the same ``θ`` is found without sorting by Michelot's active-set iteration
    (:func:`_soft_threshold_level`), which is the costly part otherwise (``O(n log n)``).

    ``radius``: a float (every element) or a ``(B,)`` tensor (one per element), ``≥ 0``; a radius
    of 0 projects to 0. ``v``: real ``(B, ...)``.
    """
    r = _check_radius(radius, v)
    batch = v.shape[0]
    flat = v.reshape(batch, -1)
    mag = flat.abs()
    outside = mag.sum(dim=1) > r
    if not bool(outside.any()):
        return v
    theta = _soft_threshold_level(mag, r)
    projected = torch.sign(flat) * (mag - theta[:, None]).clamp_min(0)
    projected = torch.where((r > 0)[:, None], projected, 0)
    out = torch.where(outside[:, None], projected, flat)
    return out.reshape(v.shape)


@torch.no_grad()
def l1_ball_project_around_(
    v: torch.Tensor, center: torch.Tensor, radius: float | torch.Tensor
) -> torch.Tensor:
    """In place: ``v ← c + Π_{‖·‖₁ ≤ r}(v − c)`` per batch element (:func:`l1_ball_project`),
    ``c = center`` (same shape as ``v``). Batch elements inside their ball are not written (no
    ``c + (v − c)`` rounding); when every element is inside nothing is allocated beyond the norm
    check. Returns ``v``."""
    r = _check_radius(radius, v)
    if center.shape != v.shape:
        raise ValueError(f"center {tuple(center.shape)} must have v's shape {tuple(v.shape)}")
    batch = v.shape[0]
    d = (v - center).reshape(batch, -1)
    mag = d.abs()
    outside = mag.sum(dim=1) > r
    if not bool(outside.any()):
        return v
    if bool(outside.all()):  # the common case in a round: no gather / scatter
        theta = _soft_threshold_level(mag, r)
        shrunk = torch.sign(d).mul_((mag - theta[:, None]).clamp_min_(0))
        if not bool((r > 0).all()):
            shrunk = torch.where((r > 0)[:, None], shrunk, 0)
        return torch.add(center, shrunk.view(v.shape), out=v)
    idx = outside.nonzero().squeeze(1)
    mag, d, r_out = mag[idx], d[idx], r[idx]
    theta = _soft_threshold_level(mag, r_out)
    shrunk = torch.sign(d) * (mag - theta[:, None]).clamp_min(0)
    shrunk = torch.where((r_out > 0)[:, None], shrunk, 0)
    new = center.reshape(batch, -1)[idx] + shrunk
    v.index_copy_(0, idx, new.view(-1, *v.shape[1:]))
    return v


@torch.no_grad()
def l1_ball_project_around_nosync_(
    v: torch.Tensor, center: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """:func:`l1_ball_project_around_` without a host read: every batch element is computed and
    written back only where it is outside its ball, ``θ`` by the sort-based formula for rows of
    any length. ``radius`` ``(B,)``, finite and ``≥ 0``, is not checked (a check reads it on the
    host; the solvers check once per round, :func:`check_radius`). Equal to
    :func:`l1_ball_project_around_` bit for bit for rows of at most :data:`SORT_BELOW` entries,
    and up to float rounding of ``θ`` for longer ones (which use Michelot's iteration there).
    Returns ``v``."""
    batch = v.shape[0]
    d = (v - center).reshape(batch, -1)
    mag = d.abs()
    outside = mag.sum(dim=1) > radius
    theta = _sorted_level(mag, radius)
    shrunk = torch.sign(d).mul_((mag - theta[:, None]).clamp_min_(0))
    shrunk = torch.where((radius > 0)[:, None], shrunk, 0)
    new = torch.add(center.reshape(batch, -1), shrunk)
    return v.copy_(torch.where(outside[:, None], new, v.reshape(batch, -1)).view(v.shape))


def check_radius(radius: float | torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``radius`` as the ``(B,)`` tensor :func:`l1_ball_project_around_nosync_` takes, checked
    (finite, ``≥ 0``; one host read) for a real ``v`` ``(B, ...)``."""
    return _check_radius(radius, v)


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


@torch.no_grad()
def sphere_project_(v: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """In place, the solvers' form of :func:`sphere_project` (same values): ``v`` real
    ``(S..., rest...)`` rescaled to ``norms`` of shape ``S`` (a prefix of ``v.shape``, checked
    once, not its signs: the solvers pass norms they measured). Returns ``v``."""
    if norms.ndim > v.ndim or tuple(v.shape[: norms.ndim]) != tuple(norms.shape):
        raise ValueError(
            f"norms of shape {tuple(norms.shape)} must be a prefix of v's shape {tuple(v.shape)}"
        )
    dims = tuple(range(norms.ndim, v.ndim))
    current = v.pow(2).sum(dim=dims, keepdim=True).sqrt() if dims else v.abs()
    nu = norms.reshape(*norms.shape, *([1] * len(dims)))
    tiny = torch.finfo(v.dtype).tiny
    return v.mul_(torch.where(current > 0, nu / current.clamp_min(tiny), 0.0))
