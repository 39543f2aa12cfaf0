"""Training data for score models: callables ``source(n, generator) -> (n, *shape)`` tensors.

A source must be a pure function of (n, the generator's state): :func:`sgilo.models.score.train.
train_score` resumes bit for bit by restoring the generator. Two kinds:

- :func:`tensor_source` — draws rows (with replacement) from a given tensor of latents, e.g. ILO
  inversions of real training slices (the paper's best prior).
- :func:`gan_latent_source` — latents of GAN samples (the paper's cheap "syn" prior):

  * ``space="z"``: z ~ N(0, I) of shape (n, n_latent, style_dim), ILO's Gaussianized
    parametrization. These data are exactly Gaussian (the true score is −z), so a model trained
    on them only restates the N(0, I) prior; a z-space prior carries information only when the
    source supplies inverted latents (use tensor_source).
  * ``space=k`` (int): the block output h_k = block_output(k, w+) of block k. Representation:
    by default the **features only** (n, C_k, r, r) — the variable SGILO's rounds optimize and
    what the reference's prior covers; the skip image (n, C_img, r, r) is carried by the solver
    but left unregularized. ``include_skip=True`` appends it as C_img extra channels (same side
    r, no resampling): (n, C_k + C_img, r, r); per-channel standardization handles its different
    scale, and :func:`split_block_tensor` splits it back.
    w+: ``w_from="mapping"`` (default) uses the GAN's own sample law — one z (D,) per sample,
    w = mapping(z) broadcast to every row; ``w_from="gaussianized"`` draws independent rows
    w = LeakyReLU_0.2(σ ⊙ z + μ) (ILO's parametrization; needs the fitted LatentStats).
    Noise maps: fresh N(0, 1) per sample (``noise="random"``) or the generator's fixed buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from sgilo.models.stylegan2.checkpoint import LatentStats, gaussianized_to_w
from sgilo.models.stylegan2.generator import Generator, SynthesisState, noise_resolution


def _randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


class TensorSource:
    """Uniform draws with replacement from ``data`` (N, *shape); ``data`` is kept as given."""

    def __init__(self, data: Tensor) -> None:
        if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] < 1:
            raise ValueError("data must be a tensor (N, *shape) with N >= 1 and a sample shape")
        if not data.is_floating_point():
            raise ValueError(f"data must be floating point, got {data.dtype}")
        if not bool(torch.isfinite(data).all()):
            raise ValueError("data holds NaN or inf")
        self.data = data.detach()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __call__(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, *shape): rows data[i], i ~ U{0, …, N−1} drawn with ``generator``."""
        idx = torch.randint(self.data.shape[0], (n,), generator=generator, device=generator.device)
        return self.data[idx.to(self.data.device)]


def tensor_source(data: Tensor) -> TensorSource:
    """A source sampling from a given tensor of latents (N, *shape)."""
    return TensorSource(data)


def _all_rows(x: Tensor) -> Tensor:
    return x


def split_block_tensor(x: Tensor, image_channels: int) -> SynthesisState:
    """(B, C_k + C_img, r, r) from ``include_skip=True`` → SynthesisState(features, skip)."""
    return SynthesisState(x[:, :-image_channels], x[:, -image_channels:])


class GANLatentSource:
    """Latents of samples of a StyleGAN-2 generator (see the module docstring)."""

    def __init__(
        self,
        generator: Generator,
        space: Literal["z"] | int,
        latent_stats: LatentStats | None = None,
        w_from: Literal["mapping", "gaussianized"] = "mapping",
        noise: Literal["random", "fixed"] = "random",
        include_skip: bool = False,
        chunk: int = 256,
    ) -> None:
        if space != "z" and not (isinstance(space, int) and 0 <= space < generator.num_blocks):
            raise ValueError(
                f"space must be 'z' or a block in [0, {generator.num_blocks}), got {space!r}"
            )
        if w_from not in ("mapping", "gaussianized"):
            raise ValueError(f"w_from must be 'mapping' or 'gaussianized', got {w_from!r}")
        if w_from == "gaussianized" and latent_stats is None:
            raise ValueError("w_from='gaussianized' needs latent_stats (fit_latent_stats)")
        if noise not in ("random", "fixed"):
            raise ValueError(f"noise must be 'random' or 'fixed', got {noise!r}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.generator, self.space, self.latent_stats = generator, space, latent_stats
        self.w_from, self.noise, self.include_skip, self.chunk = w_from, noise, include_skip, chunk

    @property
    def sample_shape(self) -> tuple[int, ...]:
        g = self.generator
        if self.space == "z":
            return (g.n_latent, g.style_dim)
        k = int(self.space)
        c = g.block_channels(k) + (g.config.image_channels if self.include_skip else 0)
        r = g.block_resolution(k)
        return (c, r, r)

    @torch.no_grad()
    def __call__(
        self,
        n: int,
        generator: torch.Generator,
        rows: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """(n, *sample_shape), float32 on the GAN's device.

        All random draws (z, then the noise maps that blocks ≤ k read, in index order) are made
        up front, so the result does not depend on ``chunk`` (the generator runs in chunks).
        ``rows`` (e.g. :meth:`sgilo.models.data_parallel.DataParallel.shard`) selects rows of
        those draws, (n, …) → (m, …), before the generator runs: the result is then those m rows
        of the n-row result, at the cost of m (the random stream advances as for n).
        """
        g = self.generator
        dev = g.w_avg.device
        pick = rows if rows is not None else _all_rows
        if self.space == "z":
            return pick(_randn((n, *self.sample_shape), generator, dev))
        k = int(self.space)
        if self.w_from == "mapping":
            z = _randn((n, g.style_dim), generator, dev)
        else:
            z = _randn((n, g.n_latent, g.style_dim), generator, dev)
        noises: list[Tensor | None] = [None] * g.num_noises
        if self.noise == "random":
            for i in range(2 * k + 1):  # the noise maps of blocks 0 … k
                r = noise_resolution(i)
                noises[i] = _randn((n, 1, r, r), generator, dev)
        z, noises = pick(z), [None if x is None else pick(x) for x in noises]
        n = len(z)
        parts = []
        for lo in range(0, n, self.chunk):
            sl = slice(lo, min(lo + self.chunk, n))
            if self.w_from == "mapping":
                ws = g.mapping(z[sl])[:, None, :].expand(-1, g.n_latent, -1)
            else:
                assert self.latent_stats is not None
                mu, sigma = self.latent_stats.mu.to(dev), self.latent_stats.sigma.to(dev)
                ws = gaussianized_to_w(z[sl], mu, sigma)
            h = g.block_output(k, ws, [None if x is None else x[sl] for x in noises])
            parts.append(torch.cat([h.features, h.skip], 1) if self.include_skip else h.features)
        return torch.cat(parts).float()


def gan_latent_source(
    generator: Generator,
    space: Literal["z"] | int,
    latent_stats: LatentStats | None = None,
    w_from: Literal["mapping", "gaussianized"] = "mapping",
    noise: Literal["random", "fixed"] = "random",
    include_skip: bool = False,
    chunk: int = 256,
) -> GANLatentSource:
    """A source of GAN latents in ``space`` ("z" or block index k); see the module docstring."""
    return GANLatentSource(generator, space, latent_stats, w_from, noise, include_skip, chunk)
