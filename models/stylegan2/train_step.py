"""One StyleGAN-2 training step (D, lazy R1, G, EMA) and the real images it draws, on this
process's share of the global batch (:mod:`sgilo.models.data_parallel`; see
:mod:`sgilo.models.stylegan2.train` for the losses)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sgilo.models.stylegan2.augment import augment_batch
from sgilo.models.stylegan2.generator import Generator, noise_resolution
from sgilo.models.stylegan2.pixels import to_network
from sgilo.models.stylegan2.train_config import TrainConfig
from sgilo.models.stylegan2.train_state import TrainRun

#: (batch size, torch.Generator) → real magnitudes, float32 (B, 1, R, R) in [0, 1] (RGB
#: (B, 3, R, R) for a 3-channel generator); must draw all its randomness from the generator given
#: (for exact resume)
BatchSampler = Callable[[int, torch.Generator], Tensor]


def check_reals(x: Tensor, batch: int | None, resolution: int, channels: int = 1) -> Tensor:
    """``x`` if it is (batch, channels, R, R) of finite values in [0, 1], else ValueError."""
    want = (channels, resolution, resolution)
    if x.dim() != 4 or tuple(x.shape[1:]) != want or (batch is not None and len(x) != batch):
        n = "N" if batch is None else batch
        raise ValueError(
            f"expected real images ({n}, {channels}, {resolution}, {resolution}), "
            f"got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        what = "RGB values" if channels == 3 else "magnitudes"
        raise ValueError(f"real images must be finite {what} in [0, 1]")
    return x


def real_channels(image_channels: int) -> int:
    """Channels of the real images a generator with ``image_channels`` trains on: 3 for RGB, else
    1 (magnitudes; the 2-channel layout is made by phase augmentation)."""
    return 3 if image_channels == 3 else 1


def as_sampler(
    images: Tensor | np.ndarray | BatchSampler, resolution: int, image_channels: int = 1
) -> BatchSampler:
    """A :data:`BatchSampler` of real images: uniform draws with replacement from ``images``
    (N, C, R, R) or (N, R, R), or a given sampler whose batches are checked."""
    channels = real_channels(image_channels)
    if callable(images):
        source = images

        def checked(batch: int, generator: torch.Generator) -> Tensor:
            x = torch.as_tensor(source(batch, generator), dtype=torch.float32)
            return check_reals(x, batch, resolution, channels)

        return checked
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.dim() == 3:
        x = x[:, None]
    x = check_reals(x, None, resolution, channels)
    if len(x) == 0:
        raise ValueError("no training images")

    def sample(batch: int, generator: torch.Generator) -> Tensor:
        return x[torch.randint(len(x), (batch,), generator=generator)]

    return sample


def stddev_group(config: TrainConfig) -> int:
    """The group of the discriminator's minibatch standard deviation over the global batch: the
    largest divisor of ``batch_size`` not above ``discriminator.stddev_group`` (as
    :func:`sgilo.models.stylegan2.discriminator.minibatch_stddev` forms it)."""
    b, group = config.batch_size, config.discriminator.stddev_group
    return max(k for k in range(1, min(b, group) + 1) if b % k == 0)


def sample_ws(
    g: Generator,
    batch: int,
    rng: torch.Generator,
    mixing_prob: float,
    device: torch.device,
    share: Callable[[Tensor], Tensor] = lambda x: x,
) -> tuple[Tensor, list[Tensor]]:
    """w+ (b, n_latent, D) with style mixing, and fresh noise maps [(b, 1, r, r)]: drawn on the
    CPU from ``rng`` for the global ``batch``, then this process's rows, ``share``: (B, …) →
    (b, …) (the identity, b = B, in one process)."""
    d, n = g.style_dim, g.n_latent
    z = torch.randn(2 * batch, d, generator=rng)
    mix = float(torch.rand((), generator=rng)) < mixing_prob
    cut = int(torch.randint(1, n, (), generator=rng))
    sides = [noise_resolution(i) for i in range(g.num_noises)]
    noises = [share(torch.randn(batch, 1, r, r, generator=rng)).to(device) for r in sides]
    local = len(noises[0]) if noises else batch
    if local != batch:  # the rows of both halves (the two styles of one sample) kept together
        z = torch.cat((share(z[:batch]), share(z[batch:])))
    w = g.mapping(z.to(device)).view(2, local, 1, d)
    if mix:
        ws = torch.cat((w[0].expand(-1, cut, -1), w[1].expand(-1, n - cut, -1)), dim=1)
    else:
        ws = w[0].expand(-1, n, -1)
    return ws, noises


def ema_beta(config: TrainConfig, images_seen: int) -> float:
    """β of the EMA generator after ``images_seen`` images (half-life ramp-up)."""
    n = config.ema_kimg * 1000
    if config.ema_rampup is not None:
        n = min(n, images_seen * config.ema_rampup)
    return 0.5 ** (config.batch_size / n) if n > 0 else 0.0


def train_step(run: TrainRun, sampler: BatchSampler, device: torch.device) -> dict[str, float]:
    """One step on the global batch ``config.batch_size`` (this process's share of it); returns
    the losses (means over the global batch): ``loss_d``, ``d_real``, ``d_fake``, ``loss_g`` and,
    on R1 steps, ``r1``."""
    cfg, g, d, parallel = run.config, run.g, run.d, run.parallel
    b = cfg.batch_size
    group = stddev_group(cfg)

    def share(x: Tensor) -> Tensor:
        return parallel.shard(x, group)

    # augmented where the networks run (its random numbers still come from the CPU generator):
    # on a GPU the warp of a batch on the host would cost more than the step's networks. Every
    # process augments the global batch (the draws depend on its size) and keeps its rows.
    real = sampler(b, run.rngs["data"]).to(device)
    real = augment_batch(real, run.rngs["augment"], cfg.augment, cfg.phase_augmentation)
    real = share(to_network(real, cfg.image_channels))

    with torch.no_grad():
        fake = g.synthesize(*sample_ws(g, b, run.rngs["latent"], cfg.mixing_prob, device, share))
    real_logit, fake_logit = d(real), d(fake)
    d_loss = F.softplus(fake_logit).mean() + F.softplus(-real_logit).mean()
    run.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    stats = parallel.average(
        d.parameters(),
        {"loss_d": d_loss, "d_real": real_logit.mean(), "d_fake": fake_logit.mean()},
    )
    run.d_opt.step()

    gamma = cfg.effective_r1_gamma
    if gamma > 0 and run.step % cfg.r1_every == 0:
        x = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
        r1 = grad.pow(2).flatten(1).sum(1).mean()
        run.d_opt.zero_grad(set_to_none=True)
        (r1 * (gamma / 2 * cfg.r1_every)).backward()
        stats |= parallel.average(d.parameters(), {"r1": r1})
        run.d_opt.step()

    d.requires_grad_(False)
    fake = g.synthesize(*sample_ws(g, b, run.rngs["latent"], cfg.mixing_prob, device, share))
    g_loss = F.softplus(-d(fake)).mean()
    run.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    stats |= parallel.average(g.parameters(), {"loss_g": g_loss})
    run.g_opt.step()
    d.requires_grad_(True)

    beta = ema_beta(cfg, run.images_seen)
    with torch.no_grad():
        for p_ema, p in zip(run.g_ema.parameters(), g.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
    run.step += 1
    run.images_seen += b
    return stats
