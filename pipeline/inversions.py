"""ILO inversions of training images: the block-``k`` latents a score model is trained on.

The SGILO paper trained its latent score models on latents obtained by inverting real training
images with ILO, and found them better than models trained on latents of GAN samples (the cheap
"syn" prior of :func:`sgilo.models.score.sources.gan_latent_source`). :func:`invert_images` produces
those latents; :func:`save_inversions` / :func:`load_inversions` keep them in a torch file that
``sgilo train-score --latents FILE`` reads (via :class:`sgilo.models.score.sources.TensorSource`).

The fit of one image ``x`` (``(R, R)`` in [0, 1], or RGB ``(3, R, R)``) is a denoising problem
with the identity as forward model, solved by ILO's rounds
(:func:`sgilo.pipeline.solvers.rounds.run_rounds` with ILO's after-step hook: sphere projections and
ℓ1 balls of radius ``radius_fraction`` around each round's start, ILO's learning-rate schedule and
early stop):

- 1- and 2-channel (MRI) priors: the fully sampled single-coil operator (a mask of ones) on the
  generator's grid, ``y = F x``, with no phase (``phase="none"``), no scale normalisation (the
  images already have the generator's [0, 1] convention ``(G + 1)/2``), no gain and no data
  consistency. A 2-channel prior fits ``G₀ + i G₁`` to the real image.
- 3-channel priors: the real identity on ``(3, R, R)`` (:class:`sgilo.operators.base.Identity`).

Which round, which state: ILO's round ``j`` optimises ``h_{j−1}``, the output of block ``j − 1``
(round 0 the latent ``z``). For ``space = k`` the rounds ``0 … k + 1`` run, and the result is the
final iterate of ``h_k`` in round ``k + 1`` — the variable, and the point in the schedule, where
SGILO's block-``k`` prior acts. For the last block (``k = num_blocks − 1``) no round optimises
``h_k``: the rounds ``0 … k`` run and ``h_k`` is block ``k`` applied to the final ``h_{k−1}``.
The kept iterate is the LAST one of the last round (``keep_last``), since the returned latent
must be the state the optimiser ended in (with ILO's cosine ramp-down it is also within noise of
the lowest-loss one).

The representation mirrors the existing score models (:class:`sgilo.models.score.sources.
GANLatentSource`): the features ``(N, C_k, r, r)`` (the shipped models), or with
``include_skip=True`` the skip image appended as ``C_img`` extra channels ``(N, C_k + C_img, r, r)``
— the two shapes :func:`sgilo.pipeline.solvers.sgilo.check_score_models` accepts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgilo.models.stylegan2.checkpoint import gaussianized_to_w
from sgilo.models.stylegan2.generator import Generator, SynthesisState
from sgilo.models.torch_io import atomic_torch_save, first_line, safe_torch_load
from sgilo.operators.base import Identity
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.solvers.base import Progress
from sgilo.pipeline.solvers.generator_state import frozen
from sgilo.pipeline.solvers.ilo import ILOConfig, ball_hook, round_learning_rate
from sgilo.pipeline.solvers.problem import check_inputs, prepare_problem
from sgilo.pipeline.solvers.radius import resolve_radius_fraction
from sgilo.pipeline.solvers.rounds import EarlyStop, Round, latent_stats_on, run_rounds

#: default Adam steps per round (rounds 0 … k + 1 use the first k + 2 entries): ILO's schedule
#: for easy tasks (docs/ALGORITHMS.md §3), extended; ILO's early stop usually ends rounds sooner
DEFAULT_STEPS: tuple[int, ...] = (100, 50, 50, 25, 25, 25, 25, 25)
FORMAT = "sgilo-inversions"
FORMAT_VERSION = 1


class InversionsError(ValueError):
    """A latents file that cannot be used; the message names the file and the reason."""


def inversion_rounds(generator: Generator, space: int) -> int:
    """The number of ILO rounds an inversion for block ``space`` runs: ``space + 2`` (the round
    optimising ``h_space`` included), at most ``num_blocks``."""
    if not (isinstance(space, int) and 0 <= space < generator.num_blocks):
        raise ValueError(f"space must be a block in [0, {generator.num_blocks}), got {space!r}")
    return min(space + 2, generator.num_blocks)


def latent_shape(generator: Generator, space: int, include_skip: bool = False) -> tuple[int, ...]:
    """``(C_k [+ C_img], r, r)``: the shape of one block-``space`` latent."""
    c = generator.block_channels(space)
    if include_skip:
        c += int(generator.config.image_channels)
    r = generator.block_resolution(space)
    return (c, r, r)


def _as_images(images: np.ndarray | torch.Tensor, generator: Generator) -> torch.Tensor:
    """float32 ``(N, R, R)`` (1/2-channel priors) or ``(N, 3, R, R)`` (RGB) on the generator's
    grid; ``ValueError`` otherwise."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    x = x.detach().to(torch.float32).cpu()
    res = int(generator.config.resolution)
    channels = int(generator.config.image_channels)
    if channels == 3:
        want = (3, res, res)
        ok = x.ndim == 4 and tuple(x.shape[1:]) == want
    else:
        want = (res, res)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        ok = x.ndim == 3 and tuple(x.shape[1:]) == want
    if not ok or x.shape[0] < 1:
        raise ValueError(
            f"images must be (N, {', '.join(map(str, want))}) for this {channels}-channel "
            f"{res}² prior, got {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images hold NaN or inf")
    return x


def _measurements(x: torch.Tensor, generator: Generator) -> tuple[torch.Tensor, Any]:
    """``(y, op)`` of the denoising problem of the images ``x`` (module docstring)."""
    res = int(generator.config.resolution)
    if int(generator.config.image_channels) == 3:
        return x, Identity((3, res, res))
    op = SingleCoilMRI(torch.ones(res, res), shape=(res, res))
    return op.A(x.to(torch.complex64)), op


def _final_block_output(
    generator: Generator, mu: torch.Tensor, sigma: torch.Tensor, rnd: Round, space: int
) -> SynthesisState:
    """``h_space`` from the final iterate of the last round ``rnd`` (round ``j`` holds
    ``h_{j−1}``; for ``j = space + 1`` it is the answer, else the blocks ``j … space`` run)."""
    if rnd.k == space + 1:
        assert rnd.h is not None
        return rnd.h
    ws = gaussianized_to_w(rnd.z, mu, sigma)
    if rnd.k == 0:
        return generator.run_blocks(ws, rnd.noises, start=0, end=space + 1)
    return generator.run_blocks(ws, rnd.noises, start=rnd.k, end=space + 1, h=rnd.h)


def _invert_batch(
    x: torch.Tensor,
    z: torch.Tensor,
    generator: Generator,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    space: int,
    config: ILOConfig,
) -> SynthesisState:
    """``h_space`` of the ILO fits of the images ``x`` from the initial latents ``z``."""
    device = mu.device
    y, op = _measurements(x, generator)
    y, op = y.to(device), op.to(device)
    check_inputs(y, op, generator, "invert_images", rounds=config.rounds)
    problem = prepare_problem(y, op, generator, phase="none", normalize=False, fit_gain=False)
    captured: list[Round] = []

    ilo_balls = ball_hook(config, resolve_radius_fraction(config.radius_fraction, problem, device))

    def balls(rnd: Round) -> Callable[[], None]:
        """ILO's after-step hook (sphere projections, then the ℓ1 balls); keeps the round."""
        captured.append(rnd)
        return ilo_balls(rnd)

    with frozen(generator):
        run_rounds(
            problem,
            generator,
            mu,
            sigma,
            z.to(device),
            steps=config.steps,
            lr=config.lr,
            geocross_weight=config.geocross_weight,
            noise_blocks_ahead=config.noise_blocks_ahead,
            after_step=balls,
            learning_rate=lambda s, i: round_learning_rate(config, s, i),
            keep_last=True,
            history=[],
            early_stop=EarlyStop(config.patience) if config.early_stop else None,
        )
        with torch.no_grad():
            return _final_block_output(generator, mu, sigma, captured[-1], space)


def invert_images(
    images: np.ndarray | torch.Tensor,
    prior: Any,
    space: int,
    *,
    batch: int = 8,
    steps: Sequence[int] | None = None,
    include_skip: bool = False,
    config: ILOConfig | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Block-``space`` latents of ILO fits of ``images`` (see the module docstring).

    images: float32 ``(N, R, R)`` in [0, 1] (1- and 2-channel priors; ``(N, 1, R, R)`` is taken
    too) or ``(N, 3, R, R)`` (RGB priors), on the generator's grid ``R``. prior: a
    :class:`sgilo.pipeline.methods.Prior` (its ``generator`` and ``stats()``). steps: Adam steps per
    round, at least :func:`inversion_rounds` entries (default :data:`DEFAULT_STEPS`); the other
    ILO parameters come from ``config`` (default :class:`ILOConfig`; its ``steps`` and MRI options
    are not used). The initial latents ``z ~ N(0, I)`` ``(N, n_latent, D)`` are drawn up front
    from a CPU generator seeded ``seed``; images are fitted ``batch`` at a time (a batch's rounds
    end early only when every image in it has stalled). ``progress(done, N, message)`` after
    each batch. Returns float32 ``(N, C_k, r, r)`` (``include_skip``: ``(N, C_k + C_img, r, r)``)
    on the CPU.
    """
    generator: Generator = prior.generator
    rounds = inversion_rounds(generator, space)
    steps = tuple(DEFAULT_STEPS if steps is None else steps)
    if len(steps) < rounds or any(int(s) < 0 for s in steps):
        raise ValueError(
            f"block {space} needs {rounds} rounds: steps must give at least {rounds} "
            f"non-negative counts, got {steps}"
        )
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    base = {} if config is None else config.model_dump()
    config = ILOConfig(**(base | {"steps": tuple(int(s) for s in steps[:rounds])}))
    x_all = _as_images(images, generator)
    n = x_all.shape[0]
    param = next(generator.parameters())
    mu, sigma = latent_stats_on(prior.stats(), generator, param.dtype, param.device)
    rng = torch.Generator().manual_seed(seed)
    shape = (n, generator.n_latent, generator.style_dim)
    z_all = torch.randn(shape, generator=rng, dtype=param.dtype)
    parts: list[torch.Tensor] = []
    start_time = time.perf_counter()
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        h = _invert_batch(x_all[lo:hi], z_all[lo:hi], generator, mu, sigma, space, config)
        out = torch.cat([h.features, h.skip], 1) if include_skip else h.features
        parts.append(out.detach().float().cpu())
        if progress is not None:
            per = (time.perf_counter() - start_time) / hi
            progress(hi, n, f"inverted {hi}/{n} images ({per:.1f} s/image)")
    return torch.cat(parts)


# ---------------------------------------------------------------------- the latents file
def save_inversions(path: str | Path, latents: torch.Tensor, info: dict[str, Any]) -> Path:
    """Write ``latents`` ``(N, C, r, r)`` and ``info`` (plain values: ``space`` (int),
    ``generator_sha256``, ``num_images``, ``sources`` (list of str), and anything else JSON-like,
    e.g. ``steps``, ``seed``, ``include_skip``) atomically to the torch file ``path``."""
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[0] < 1:
        raise ValueError("latents must be a (N, C, r, r) tensor with N >= 1")
    for key in ("space", "generator_sha256"):
        if key not in info:
            raise ValueError(f"info needs {key!r}")
    record = {"num_images": int(latents.shape[0]), **info}
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "latents": latents.detach().float().cpu().contiguous(),
        "info": record,
    }
    return atomic_torch_save(blob, Path(path))


def load_inversions(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(latents (N, C, r, r) float32, info)`` from :func:`save_inversions`'s file, read with
    ``torch.load(..., weights_only=True)``; :class:`InversionsError` (one line naming the file)
    when it is missing, corrupt or not a latents file."""
    path = Path(path)
    try:
        blob = safe_torch_load(path, InversionsError)
    except InversionsError:
        raise
    except Exception as exc:  # the unpickler's other failures on junk (e.g. struct.error)
        raise InversionsError(f"{path}: truncated or corrupt file ({first_line(exc)})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InversionsError(f"{path}: not a latents file of `sgilo invert-training`")
    latents, info = blob.get("latents"), blob.get("info")
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[0] < 1:
        raise InversionsError(f"{path}: the latents are not a (N, C, r, r) tensor")
    if not latents.is_floating_point() or not bool(torch.isfinite(latents).all()):
        raise InversionsError(f"{path}: the latents are not finite floating-point numbers")
    if not isinstance(info, dict) or not isinstance(info.get("space"), int):
        raise InversionsError(f"{path}: the file does not record its block (info['space'])")
    return latents.float(), info


def check_inversions(
    latents: torch.Tensor,
    info: dict[str, Any],
    generator: Generator,
    space: int | str,
    generator_sha256: str | None = None,
    path: str | Path = "latents",
) -> None:
    """``ValueError`` naming ``path`` unless the latents were made for block ``space`` of this
    generator: the recorded space, the shape (features, or features + skip image) and, when
    given, the generator file's SHA-256."""
    if space != info.get("space"):
        raise ValueError(
            f"{path}: the latents are of block {info.get('space')}, but --space is {space}"
        )
    assert isinstance(space, int)
    if not 0 <= space < generator.num_blocks:
        raise ValueError(f"{path}: block {space} is not a block of this generator")
    shape = tuple(int(s) for s in latents.shape[1:])
    want = [latent_shape(generator, space), latent_shape(generator, space, include_skip=True)]
    if shape not in want:
        raise ValueError(
            f"{path}: the latents are {shape}, but block {space} of this generator gives "
            f"{want[0]} (or {want[1]} with the skip image)"
        )
    recorded = info.get("generator_sha256")
    if generator_sha256 is not None and recorded and recorded != generator_sha256:
        raise ValueError(
            f"{path}: the latents were inverted with another generator (sha256 {recorded[:12]}…, "
            f"this one {generator_sha256[:12]}…)"
        )


def evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """Indices of ``min(limit, n)`` evenly spaced items of ``n`` (all of them for ``None``)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(int))
