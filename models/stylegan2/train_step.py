"""One StyleGAN-2 training step (D, lazy R1, G, EMA) and the real images it draws, on this
process's share of the global batch (:mod:`sgilo.models.data_parallel`; see
:mod:`sgilo.models.stylegan2.train` for the losses).

No step reads a value back to the host on an accelerator: the random numbers are drawn on the
training device, the style-mixing decision is applied by a device-side mask, the losses come back
as 0-dim device tensors (the loop reads them when it logs), and the check that a sampler's images
lie in [0, 1] is a device flag read by :meth:`CheckedSampler.verify`. On the CPU, where a
read-back costs nothing, the step computes exactly what it always did (style mixing by slicing,
the value check at once).
"""

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
#: (B, 3, R, R) for a 3-channel generator), on any device; must draw all its randomness from the
#: generator given, a CPU generator (for exact resume)
BatchSampler = Callable[[int, torch.Generator], Tensor]


def _check_shape(x: Tensor, batch: int | None, resolution: int, channels: int) -> None:
    want = (channels, resolution, resolution)
    if x.dim() != 4 or tuple(x.shape[1:]) != want or (batch is not None and len(x) != batch):
        n = "N" if batch is None else batch
        raise ValueError(
            f"expected real images ({n}, {channels}, {resolution}, {resolution}), "
            f"got {tuple(x.shape)}"
        )


def _values_error(channels: int) -> ValueError:
    what = "RGB values" if channels == 3 else "magnitudes"
    return ValueError(f"real images must be finite {what} in [0, 1]")


def values_ok(x: Tensor) -> Tensor:
    """0-dim bool tensor on x's device: every value of ``x`` finite and in [0, 1] (no read-back)."""
    low, high = x.aminmax()
    return torch.isfinite(x).all() & (low >= 0) & (high <= 1)


def check_reals(x: Tensor, batch: int | None, resolution: int, channels: int = 1) -> Tensor:
    """``x`` if it is (batch, channels, R, R) of finite values in [0, 1], else ValueError."""
    _check_shape(x, batch, resolution, channels)
    if not values_ok(x):
        raise _values_error(channels)
    return x


def real_channels(image_channels: int) -> int:
    """Channels of the real images a generator with ``image_channels`` trains on: 3 for RGB, else
    1 (magnitudes; the 2-channel layout is made by phase augmentation)."""
    return 3 if image_channels == 3 else 1


class TensorSampler:
    """Uniform draws with replacement from images (N, C, R, R) kept on ``device``; the indices
    come from the generator passed in, which must live on the same device (:attr:`rng_device`)."""

    def __init__(self, images: Tensor, device: torch.device) -> None:
        self.images = images.to(device)
        self.rng_device = torch.device(device)

    def __call__(self, batch: int, generator: torch.Generator) -> Tensor:
        index = torch.randint(
            len(self.images), (batch,), generator=generator, device=self.rng_device
        )
        return self.images[index]

    def verify(self) -> None:
        """Nothing to do: the images were checked once."""


class CheckedSampler:
    """A :data:`BatchSampler` whose batches are checked: the shape at once; the values at once
    for a CPU batch, else as a device flag that :meth:`verify` reads (one read-back per call, not
    per step). It gets a CPU generator (:attr:`rng_device`), as the protocol promises."""

    rng_device = torch.device("cpu")

    def __init__(
        self, source: BatchSampler, resolution: int, channels: int, defer: bool | None = None
    ) -> None:
        self.source, self.resolution, self.channels = source, resolution, channels
        self.defer = defer  # None: defer the value check for batches off the CPU
        self._ok: Tensor | None = None

    def __call__(self, batch: int, generator: torch.Generator) -> Tensor:
        x = torch.as_tensor(self.source(batch, generator), dtype=torch.float32)
        _check_shape(x, batch, self.resolution, self.channels)
        defer = x.device.type != "cpu" if self.defer is None else self.defer
        if defer:
            ok = values_ok(x)
            self._ok = ok if self._ok is None else self._ok & ok
        elif not values_ok(x):
            raise _values_error(self.channels)
        return x

    def verify(self) -> None:
        """ValueError if a batch drawn since the last call had values outside [0, 1]."""
        ok, self._ok = self._ok, None
        if ok is not None and not bool(ok):
            raise ValueError(f"{_values_error(self.channels)} (a batch since the last log)")


def as_sampler(
    images: Tensor | np.ndarray | BatchSampler,
    resolution: int,
    image_channels: int = 1,
    device: str | torch.device = "cpu",
) -> TensorSampler | CheckedSampler:
    """A sampler of real images: uniform draws with replacement from ``images`` (N, C, R, R) or
    (N, R, R), moved to ``device`` (:class:`TensorSampler`), or a given sampler whose batches are
    checked (:class:`CheckedSampler`)."""
    channels = real_channels(image_channels)
    if callable(images):
        return CheckedSampler(images, resolution, channels)
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.dim() == 3:
        x = x[:, None]
    _check_shape(x, None, resolution, channels)
    if len(x) == 0:
        raise ValueError("no training images")
    return TensorSampler(check_reals(x, None, resolution, channels), torch.device(device))


def stddev_group(config: TrainConfig) -> int:
    """The group of the discriminator's minibatch standard deviation over the global batch: the
    largest divisor of ``batch_size`` not above ``discriminator.stddev_group`` (as
    :func:`sgilo.models.stylegan2.discriminator.minibatch_stddev` forms it)."""
    b, group = config.batch_size, config.discriminator.stddev_group
    return max(k for k in range(1, min(b, group) + 1) if b % k == 0)


def mix_styles(w: Tensor, mix: Tensor, cut: Tensor, n: int) -> Tensor:
    """Style mixing without a read-back. w: (2, b, 1, D), the two styles of each sample; mix:
    0-dim bool; cut: 0-dim integer in [1, n). Returns ws (b, n, D): row i is w[1] where
    ``mix`` and i ≥ ``cut``, else w[0] (the values of the host-side slicing, exactly)."""
    second = (torch.arange(n, device=w.device) >= cut) & mix  # (n,)
    return torch.where(second[None, :, None], w[1].expand(-1, n, -1), w[0].expand(-1, n, -1))


def sample_ws(
    g: Generator,
    batch: int,
    rng: torch.Generator,
    mixing_prob: float,
    device: torch.device,
    share: Callable[[Tensor], Tensor] = lambda x: x,
    on_device: bool | None = None,
    mapping: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """w+ (b, n_latent, D) with style mixing, and fresh noise maps [(b, 1, r, r)]: drawn from
    ``rng`` (on its device) for the global ``batch``, then this process's rows, ``share``:
    (B, …) → (b, …) (the identity, b = B, in one process).

    The draws: z (2B, D), u ~ U[0, 1), cut ~ {1, …, n−1}, the noise maps; mixing when
    u < ``mixing_prob``. ``on_device`` (default: unless ``rng`` is a CPU generator) applies the
    decision by a device-side mask (:func:`mix_styles`, no read-back) instead of slicing on the
    host; the same ws either way, the gradients equal up to the order of float sums. ``mapping``:
    z → w (default ``g.mapping``; a compiled one in training).
    """
    d, n = g.style_dim, g.n_latent
    dev = rng.device
    z = torch.randn(2 * batch, d, generator=rng, device=dev)
    u = torch.rand((), generator=rng, device=dev)
    cut = torch.randint(1, n, (), generator=rng, device=dev)
    sides = [noise_resolution(i) for i in range(g.num_noises)]
    noises = [
        share(torch.randn(batch, 1, r, r, generator=rng, device=dev)).to(device) for r in sides
    ]
    local = len(noises[0]) if noises else batch
    if local != batch:  # the rows of both halves (the two styles of one sample) kept together
        z = torch.cat((share(z[:batch]), share(z[batch:])))
    w = (mapping or g.mapping)(z.to(device)).view(2, local, 1, d)
    if on_device is None:
        on_device = dev.type != "cpu"
    if on_device:
        mix = u.to(device, torch.float64) < mixing_prob
        return mix_styles(w, mix, cut.to(device), n), noises
    if float(u) < mixing_prob:
        c = int(cut)
        ws = torch.cat((w[0].expand(-1, c, -1), w[1].expand(-1, n - c, -1)), dim=1)
    else:
        ws = w[0].expand(-1, n, -1)
    return ws, noises


def ema_beta(config: TrainConfig, images_seen: int) -> float:
    """β of the EMA generator after ``images_seen`` images (half-life ramp-up)."""
    n = config.ema_kimg * 1000
    if config.ema_rampup is not None:
        n = min(n, images_seen * config.ema_rampup)
    return 0.5 ** (config.batch_size / n) if n > 0 else 0.0


@torch.no_grad()
def update_ema(ema: list[Tensor], params: list[Tensor], beta: float) -> None:
    """ema ← lerp(p, ema, β) = p + β·(ema − p) for every pair, in two multi-tensor ops (one fused
    kernel each on a GPU; on the CPU the same per-tensor ``lerp`` as one at a time)."""
    torch._foreach_copy_(ema, torch._foreach_lerp(params, ema, beta))


def train_step(run: TrainRun, sampler: BatchSampler, device: torch.device) -> dict[str, Tensor]:
    """One step on the global batch ``config.batch_size`` (this process's share of it); returns
    the losses (means over the global batch) as detached 0-dim tensors on ``device``:
    ``loss_d``, ``d_real``, ``d_fake``, ``loss_g`` and, on R1 steps, ``r1``. The networks run
    through ``run.nets`` (compiled or not), R1's double backward through the plain D."""
    cfg, g, d, parallel, nets = run.config, run.g, run.d, run.parallel, run.nets
    b = cfg.batch_size
    group = stddev_group(cfg)

    def share(x: Tensor) -> Tensor:
        return parallel.shard(x, group)

    if nets.compiled:  # a new step for CUDA graphs (compile mode "reduce-overhead"): the last
        torch.compiler.cudagraph_mark_step_begin()  # step's graph outputs may be reused

    # augmented where the networks run, from the augment generator (on the training device): on a
    # GPU the warp of a batch on the host would cost more than the step's networks. Every process
    # augments the global batch (the draws depend on its size) and keeps its rows.
    real = sampler(b, run.rngs["data"]).to(device)
    real = augment_batch(real, run.rngs["augment"], cfg.augment, cfg.phase_augmentation)
    real = share(to_network(real, cfg.image_channels))

    def styles() -> tuple[Tensor, list[Tensor]]:
        rng = run.rngs["latent"]
        return sample_ws(g, b, rng, cfg.mixing_prob, device, share, run.sync_free, nets.mapping)

    with torch.no_grad():
        fake = nets.synthesize(*styles())
    real_logit, fake_logit = nets.d(real), nets.d(fake)
    d_loss = F.softplus(fake_logit).mean() + F.softplus(-real_logit).mean()
    run.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    stats = parallel.average_tensors(
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
        stats |= parallel.average_tensors(d.parameters(), {"r1": r1})
        run.d_opt.step()

    d.requires_grad_(False)
    fake = nets.synthesize(*styles())
    g_loss = F.softplus(-nets.d(fake)).mean()
    run.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    stats |= parallel.average_tensors(g.parameters(), {"loss_g": g_loss})
    run.g_opt.step()
    d.requires_grad_(True)

    update_ema(list(run.g_ema.parameters()), list(g.parameters()), ema_beta(cfg, run.images_seen))
    run.step += 1
    run.images_seen += b
    return stats
