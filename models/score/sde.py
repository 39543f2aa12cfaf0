"""The variance-preserving SDE of SGILO's score models (Song et al. 2021, "VP-SDE").

Forward process on data x_0 (here always the *normalized* latent, see
:mod:`sgilo.models.score.model`):

    dx = −½ β(t) x dt + √β(t) dW,        β(t) = β_min + (β_max − β_min)·t,   t ∈ [t_min, 1]

with β_min = 0.1, β_max = 20 (β(t) = 0.1 + 19.9·t) and t_min = ε = 1e-3. Its transition kernel is
Gaussian:

    x_t = m(t)·x_0 + s(t)·ε,   ε ~ N(0, I)
    B(t) = ∫_0^t β = β_min·t + ½(β_max − β_min)·t²
    m(t) = exp(−½·B(t))            (``mean_coeff``; ``alpha_bar`` = m² = exp(−B))
    s(t) = √(1 − m(t)²)            (``std``; computed as √(−expm1(−B)) for small t)

so m² + s² = 1 for every t. The score of the kernel is ∇ log p(x_t | x_0) = −ε/s(t); a network
ε̂(x_t, t) trained with the ε-prediction MSE E‖ε̂(x_t, t) − ε‖² gives the score estimate
s_θ(x_t, t) = −ε̂/s(t) (denoising score matching). In EDM's terms x_t/m(t) is x_0 plus noise of
level σ(t) = s(t)/m(t) (``noise_level``).

Times ``t`` are a Python float, a 0-d tensor or a (B,) tensor (one time per batch element); the
helpers broadcast them over the trailing dimensions of x.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

TimeLike = Tensor | float


def time_tensor(t: TimeLike, like: Tensor) -> Tensor:
    """t as a (B,) tensor of ``like``'s dtype and device; like: (B, ...)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(like.shape[0])
    if t.shape != (like.shape[0],):
        raise ValueError(f"t must be a scalar or ({like.shape[0]},), got {tuple(t.shape)}")
    return t


def expand_time(t: Tensor, x: Tensor) -> Tensor:
    """A (B,) or 0-d per-sample quantity reshaped to broadcast against x: (B, 1, …, 1)."""
    if t.dim() == 0:
        return t
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def randn_like_from(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise shaped like x, drawn with ``generator`` on its own device, then moved to x's.

    Drawing on the generator's device makes a CPU generator usable for CUDA tensors, and the
    same seed gives the same noise on every device.
    """
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


class VPSDE(BaseModel):
    """VP-SDE with linear β(t) = β_min + (β_max − β_min)·t (a frozen, JSON-able config).

    All methods take t as a float or tensor and return tensors of t's dtype (float → the default
    dtype); they are pure and differentiable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    beta_min: float = Field(0.1, ge=0)
    beta_max: float = Field(20.0, gt=0)
    t_min: float = Field(1e-3, gt=0, lt=1, description="ε: smallest time trained and sampled")
    t_max: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> VPSDE:
        if self.beta_max < self.beta_min:
            raise ValueError("beta_max < beta_min")
        if self.t_max <= self.t_min:
            raise ValueError("t_max <= t_min")
        return self

    # ------------------------------------------------------------------ schedule
    @staticmethod
    def _t(t: TimeLike) -> Tensor:
        t = torch.as_tensor(t)
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())

    def beta(self, t: TimeLike) -> Tensor:
        """β(t) = β_min + (β_max − β_min)·t."""
        t = self._t(t)
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def integral_beta(self, t: TimeLike) -> Tensor:
        """B(t) = ∫_0^t β(τ) dτ = β_min·t + ½(β_max − β_min)·t²."""
        t = self._t(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def mean_coeff(self, t: TimeLike) -> Tensor:
        """m(t) = exp(−½·B(t)): E[x_t | x_0] = m(t)·x_0."""
        return torch.exp(-0.5 * self.integral_beta(t))

    def alpha_bar(self, t: TimeLike) -> Tensor:
        """ᾱ(t) = m(t)² = exp(−B(t)) (the DDPM notation)."""
        return torch.exp(-self.integral_beta(t))

    def std(self, t: TimeLike) -> Tensor:
        """s(t) = √(1 − m(t)²) = √(−expm1(−B(t))): the std of x_t given x_0."""
        return torch.sqrt(-torch.expm1(-self.integral_beta(t)))

    def noise_level(self, t: TimeLike) -> Tensor:
        """EDM's σ(t) = s(t)/m(t): x_t/m(t) = x_0 + σ(t)·ε."""
        return self.std(t) / self.mean_coeff(t)

    def drift(self, x: Tensor, t: TimeLike) -> Tensor:
        """f(x, t) = −½ β(t)·x; x: (B, ...)."""
        return -0.5 * expand_time(self.beta(t).to(x), x) * x

    def diffusion(self, t: TimeLike) -> Tensor:
        """g(t) = √β(t)."""
        return torch.sqrt(self.beta(t))

    # ------------------------------------------------------------------ sampling the kernel
    def sample_time(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> Tensor:
        """t ~ U[t_min, t_max]: (n,), drawn with ``generator`` on its device, then moved."""
        dev = generator.device if generator is not None else device
        u = torch.rand(n, generator=generator, device=dev, dtype=dtype)
        return (self.t_min + (self.t_max - self.t_min) * u).to(device or u.device)

    def perturb(
        self, x0: Tensor, t: TimeLike, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw x_t = m(t)·x_0 + s(t)·ε, ε ~ N(0, I).

        x0: (B, ...); t: float or (B,). Returns (x_t, ε), both shaped like x0.
        """
        t = time_tensor(t, x0)
        eps = randn_like_from(x0, generator)
        m, s = expand_time(self.mean_coeff(t), x0), expand_time(self.std(t), x0)
        return m * x0 + s * eps, eps

    # ------------------------------------------------------------------ ε ↔ score
    def score_from_eps(self, eps: Tensor, t: TimeLike) -> Tensor:
        """∇ log p_t = −ε/s(t); eps: (B, ...), t: float or (B,)."""
        t = time_tensor(t, eps)
        return -eps / expand_time(self.std(t), eps)

    def eps_from_score(self, score: Tensor, t: TimeLike) -> Tensor:
        """ε = −s(t)·∇ log p_t (the inverse of :meth:`score_from_eps`)."""
        t = time_tensor(t, score)
        return -score * expand_time(self.std(t), score)
