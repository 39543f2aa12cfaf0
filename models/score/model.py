"""A score model on one latent space: ε-network + VP-SDE + normalization, and its file format.

Normalization. The diffusion runs on the standardized latent u = (h − shift)/scale, with
``shift``/``scale`` (buffers, stored in the checkpoint) the per-coordinate mean and std of the
training data: per (row, dim) for vector latents (B, n_rows, dim), per channel for feature maps
(B, C, r, r) (shape (C, 1, 1)). Why standardize rather than the reference's min-max to [0, 1]:
the VP-SDE's terminal law is N(0, I), and its noise scale is fixed (s(t) ≤ 1), so data with zero
mean and unit variance per coordinate is what the schedule is designed for; min-max scaling is set
by the extreme samples (one outlier squashes every other value) and leaves the data off-centre.
``shift = 0, scale = 1`` (no normalization) is allowed.

Gaussian skip (``gaussian_skip=True``, the default): ε̂(u, t) = s(t)·u + F_θ(u, t). For
u_0 ~ N(0, I) the exact ε-prediction is E[ε | u_t] = s(t)·u_t (since m² + s² = 1), so the network
F_θ only learns the deviation of the standardized data from N(0, I), and an untrained model
(F_θ = 0 at initialization) is the prior N(shift, scale²). Measured on 6-d Gaussian data after
300 steps (init seeds 0–3): relative score error 0.04–0.08 at t = 0.05 with the skip,
0.11–0.36 without.

Everything below is in the ORIGINAL coordinates h unless named otherwise. The model's perturbed
law is that of h_t = shift + scale·u_t with u_t = m(t)·u_0 + s(t)·ε (the diffusion of the
standardized data, mapped back), so by the chain rule through the affine map

    score(h, t) = ∇_h log p_t(h) = (1/scale) ⊙ ∇_u log p_t^u(u) = −ε̂(u, t) / (s(t)·scale),

    denoise(h, t) = E[h_0 | h_t = h] = shift + scale ⊙ (u + s(t)²·∇_u log p_t^u(u)) / m(t)
                  = shift + scale ⊙ (u − s(t)·ε̂(u, t)) / m(t)          (Tweedie's formula).

In EDM's terms (D(x, σ), score = (D − x)/σ²) the normalized denoiser D_u = (u − s·ε̂)/m satisfies
∇_u log p_t^u(u) = (m·D_u − u)/s².

Checkpoint (a torch file holding a dict, read with ``weights_only=True``):
``format`` "sgilo-score", ``format_version`` 1, ``network_config`` (plain dict with ``kind``),
``sde`` (plain dict), ``gaussian_skip`` (bool), ``space`` (str, e.g. "z" or "block1"),
``state_dict`` (network.* weights, ``shift``, ``scale``), ``extra`` (plain values). Every failure
to load raises :class:`ScoreCheckpointError` with one line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from sgilo.models.score.network import (
    ConvScoreNetConfig,
    MLPScoreNetConfig,
    build_network,
    network_config_from_dict,
)
from sgilo.models.score.sde import VPSDE, TimeLike, expand_time, randn_like_from, time_tensor
from sgilo.models.torch_io import atomic_torch_save, first_line, safe_torch_load

FORMAT = "sgilo-score"
FORMAT_VERSION = 1


class ScoreCheckpointError(ValueError):
    """A score-model (or training-state) file that cannot be used; one line naming the file."""


class ScoreModel(nn.Module):
    """s_θ(h, t) ≈ ∇ log p_t(h) on one latent space (see the module docstring for the equations).

    network: maps (u: (B, *data_shape), t: (B,)) to ε̂ (or, with ``gaussian_skip``, to the
    correction F_θ added to s(t)·u) shaped like u, and exposes ``data_shape`` (and ``config``, an
    MLP/Conv config, for saving). shift, scale: tensors broadcastable to data_shape (scale > 0).
    Methods take h: (B, *data_shape) in the original coordinates and t: float or (B,); they keep
    gradients (use ``torch.no_grad()`` around them when not needed).
    """

    shift: Tensor
    scale: Tensor

    def __init__(
        self,
        network: nn.Module,
        sde: VPSDE | None = None,
        shift: Tensor | None = None,
        scale: Tensor | None = None,
        space: str = "",
        gaussian_skip: bool = True,
    ) -> None:
        super().__init__()
        self.network = network
        self.sde = sde if sde is not None else VPSDE()
        self.space = space
        self.gaussian_skip = gaussian_skip
        self.extra: dict[str, Any] = {}
        shape = self.data_shape
        shift = torch.zeros(()) if shift is None else shift.detach().clone()
        scale = torch.ones(()) if scale is None else scale.detach().clone()
        for name, v in (("shift", shift), ("scale", scale)):
            dims = tuple(v.shape)
            fits = len(dims) <= len(shape) and all(
                a in (1, b) for a, b in zip(reversed(dims), reversed(shape), strict=False)
            )
            if not fits:
                raise ValueError(f"{name} {dims} does not broadcast to the data shape {shape}")
        if not bool((scale > 0).all()):
            raise ValueError("scale must be positive")
        self.register_buffer("shift", shift.float())
        self.register_buffer("scale", scale.float())

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.network.data_shape)

    # ------------------------------------------------------------------ coordinates
    def _check(self, h: Tensor) -> None:
        if h.dim() != len(self.data_shape) + 1 or tuple(h.shape[1:]) != self.data_shape:
            want = ", ".join(map(str, self.data_shape))
            raise ValueError(f"h must be (B, {want}), got {tuple(h.shape)}")

    def normalize(self, h: Tensor) -> Tensor:
        """u = (h − shift)/scale; h: (B, *data_shape)."""
        return (h - self.shift) / self.scale

    def unnormalize(self, u: Tensor) -> Tensor:
        """h = shift + scale·u."""
        return self.shift + self.scale * u

    # ------------------------------------------------------------------ the contract
    def eps_normalized(self, u: Tensor, t: TimeLike) -> Tensor:
        """ε̂(u, t) on the standardized latent u: (B, *data_shape) → same shape."""
        self._check(u)
        tt = time_tensor(t, u)
        eps = self.network(u, tt)
        if self.gaussian_skip:
            eps = eps + expand_time(self.sde.std(tt), u) * u
        return eps

    def eps(self, h: Tensor, t: TimeLike) -> Tensor:
        """ε̂ at h (original coordinates): the predicted noise of the standardized diffusion."""
        return self.eps_normalized(self.normalize(h), t)

    def score_normalized(self, u: Tensor, t: TimeLike) -> Tensor:
        """∇_u log p_t^u(u) = −ε̂(u, t)/s(t)."""
        return self.sde.score_from_eps(self.eps_normalized(u, t), time_tensor(t, u))

    def score(self, h: Tensor, t: TimeLike) -> Tensor:
        """∇_h log p_t(h) = −ε̂(u, t)/(s(t)·scale), u = (h − shift)/scale."""
        return self.score_normalized(self.normalize(h), t) / self.scale

    def denoise_normalized(self, u: Tensor, t: TimeLike) -> Tensor:
        """E[u_0 | u_t = u] = (u − s(t)·ε̂)/m(t)."""
        tt = time_tensor(t, u)
        m = expand_time(self.sde.mean_coeff(tt), u)
        s = expand_time(self.sde.std(tt), u)
        return (u - s * self.eps_normalized(u, tt)) / m

    def denoise(self, h: Tensor, t: TimeLike) -> Tensor:
        """Tweedie's one-step denoiser E[h_0 | h_t = h], computed on u and mapped back."""
        return self.unnormalize(self.denoise_normalized(self.normalize(h), t))

    @torch.no_grad()
    def sgilo_step(
        self,
        v: Tensor,
        lam: float,
        tau: float,
        t: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """SGILO's prior step (docs/ALGORITHMS.md §4), in the standardized space:

            u ← u + λ·(D_u(u, t) − u) + τ·ξ,   ξ ~ N(0, I),

        i.e. v ← v + scale ⊙ [λ·(D_u − u) + τ·ξ] = v + λ·(D(v) − v) + τ·scale ⊙ ξ, so τ is in
        units of the data's std (scale-free; equal to the plain formula when scale = 1).
        v: (B, *data_shape), detached; returns a new tensor. λ = τ = 0 returns v unchanged
        (bit for bit) without running the network or drawing noise.
        """
        if lam == 0 and tau == 0:
            return v.clone()
        delta = torch.zeros_like(v)
        if lam != 0:
            u = self.normalize(v)
            delta = delta + lam * (self.denoise_normalized(u, t) - u)
        if tau != 0:
            delta = delta + tau * randn_like_from(v, generator)
        return v + self.scale * delta

    @torch.no_grad()
    def sample(
        self,
        shape: int | tuple[int, ...],
        steps: int = 500,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """Samples of p_0 by the Euler–Maruyama reverse SDE from t = 1 to t_min, then Tweedie.

        u_{t−Δ} = u_t + [½β(t)·u_t + β(t)·∇_u log p_t(u_t)]·Δ + √(β(t)·Δ)·z, u_1 ~ N(0, I), on a
        uniform grid of ``steps`` intervals, then the denoiser E[u_0 | u_{t_min}] removes the
        remaining noise (s(t_min) ≈ 0.014). shape: a batch size or (B, *data_shape). Returns
        (B, *data_shape) in the original coordinates.
        """
        if isinstance(shape, int):
            shape = (shape, *self.data_shape)
        if tuple(shape[1:]) != self.data_shape:
            raise ValueError(f"shape must be (B, {self.data_shape}), got {tuple(shape)}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        dev = device if device is not None else self.shift.device
        u = randn_like_from(torch.empty(shape, device=dev, dtype=self.shift.dtype), generator)
        ts = torch.linspace(self.sde.t_max, self.sde.t_min, steps + 1, dtype=torch.float64)
        for i in range(steps):
            t, dt = float(ts[i]), float(ts[i] - ts[i + 1])
            beta = float(self.sde.beta(t))
            u = u + (0.5 * beta * u + beta * self.score_normalized(u, t)) * dt
            u = u + (beta * dt) ** 0.5 * randn_like_from(u, generator)
        return self.unnormalize(self.denoise_normalized(u, self.sde.t_min))


# ---------------------------------------------------------------------- files
def _plain(value: Any, where: str) -> None:
    """Refuse values that ``weights_only`` loading could not read back."""
    if value is None or isinstance(value, (bool, int, float, str, Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: keys must be str or int, got {type(k).__name__}")
            _plain(v, f"{where}.{k}")
        return
    raise TypeError(f"{where}: {type(value).__name__} is not a plain value (tensor/number/str)")


def save_score_model(
    path: str | Path, model: ScoreModel, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (network config + weights, SDE, normalization, space, extra) to ``path``.

    extra: plain values only (tensors, numbers, strings, None and lists/dicts of them).
    """
    config = getattr(model.network, "config", None)
    if not isinstance(config, (MLPScoreNetConfig, ConvScoreNetConfig)):
        raise TypeError("only MLPScoreNet / ConvScoreNet score models can be saved")
    extra = dict(extra or {})
    _plain(extra, "extra")
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network_config": config.model_dump(mode="json"),
        "sde": model.sde.model_dump(mode="json"),
        "gaussian_skip": bool(model.gaussian_skip),
        "space": model.space,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    return atomic_torch_save(ckpt, path)


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) of a dict, every failure as a one-line ScoreCheckpointError."""

    obj = safe_torch_load(path, ScoreCheckpointError, device)
    if not isinstance(obj, dict):
        raise ScoreCheckpointError(
            f"{path}: expected a dict, the file holds a {type(obj).__name__}"
        )
    return obj


def check_state_dict(path: Path, state: Any, module: nn.Module, what: str) -> None:
    """Keys and shapes of ``state`` must equal ``module``'s (ScoreCheckpointError otherwise)."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ScoreCheckpointError(f"{path}: '{what}' is not a state_dict of tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = [
            f"{len(keys)} {name} keys ({', '.join(keys[:4])}{', …' if len(keys) > 4 else ''})"
            for name, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise ScoreCheckpointError(
            f"{path}: '{what}' does not match the stored architecture: " + "; ".join(parts)
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ScoreCheckpointError(
                f"{path}: shape mismatch at {what}.{k}: file has {tuple(state[k].shape)}, the "
                f"stored architecture expects {tuple(v.shape)}"
            )


def load_score_model(path: str | Path, device: str | torch.device = "cpu") -> ScoreModel:
    """Load a score model saved by :func:`save_score_model` (eval mode, parameters frozen).

    The file's ``extra`` dict is attached as ``model.extra``. Raises ScoreCheckpointError.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, device)
    if ckpt.get("format") != FORMAT:
        raise ScoreCheckpointError(
            f"{path}: not a score-model checkpoint (format {ckpt.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    required = ("network_config", "sde", "gaussian_skip", "state_dict")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise ScoreCheckpointError(f"{path}: missing entries: {', '.join(missing)}")
    if not isinstance(ckpt["gaussian_skip"], bool):
        raise ScoreCheckpointError(f"{path}: 'gaussian_skip' must be a bool")
    try:
        config = network_config_from_dict(ckpt["network_config"])
        sde = VPSDE.model_validate(ckpt["sde"])
    except ValidationError as exc:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        loc = ".".join(map(str, err["loc"]))
        raise ScoreCheckpointError(
            f"{path}: invalid stored config ({loc}: {first_line(err['msg'])})"
        ) from None
    state = ckpt["state_dict"]
    network = build_network(config)
    shapes = {k: v.shape for k, v in state.items()} if isinstance(state, dict) else {}
    shift = torch.zeros(shapes.get("shift", ()))
    scale = torch.ones(shapes.get("scale", ()))
    try:
        model = ScoreModel(
            network, sde, shift, scale, str(ckpt.get("space", "")), ckpt["gaussian_skip"]
        )
    except ValueError as exc:
        raise ScoreCheckpointError(f"{path}: bad normalization ({first_line(exc)})") from None
    check_state_dict(path, state, model, "state_dict")
    model.load_state_dict(state, strict=True)
    if not bool((model.scale > 0).all()):
        raise ScoreCheckpointError(f"{path}: normalization scale must be positive")
    extra = ckpt.get("extra") or {}
    if not isinstance(extra, dict):
        raise ScoreCheckpointError(f"{path}: 'extra' must be a dict")
    model.extra = dict(extra)
    return model.to(device).eval().requires_grad_(False)
