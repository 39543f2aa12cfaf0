"""Validation figures of a generative prior (recorded in ``models/weights/PROVENANCE.md``).

Three numbers, none of which needs a network trained elsewhere (no Inception/LPIPS weights here):

- **Inversion PSNR**: how well the generator can *represent* held-out images. Each validation
  slice ``v`` (scaled like the training images: its 99.5th percentile ↦ 1) is fitted from its
  fully sampled k-space, ``y = F v``, by CSGM or ILO without data consistency and without phase
  (``x̂ = G(latents)`` alone), and ``PSNR(v, |x̂|)`` is reported (volume PSNR, fastMRI definition).
  This is the ceiling of what the prior can contribute to a reconstruction.
- **Sliced Wasserstein distance** (Karras et al., 2018) between generated samples and the
  training images, over 7×7 patches of the Laplacian pyramid levels from the full resolution down
  to 16×16 (each level's descriptors standardized per set; 4 × 128 random unit directions; the
  mean absolute difference of the sorted projections, ×10³). The same distance between the
  validation slices and the training images is given as the floor a perfect sampler would reach
  with that few images.
- **Nearest-training PSNR**: for each sample, the highest PSNR against any training image
  (range 1). Compared with the same figure for the validation slices, it shows whether the
  generator copies its training set (samples much closer to training images than held-out
  slices are) or produces new slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sgilo.operators.fft import fft2c
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.data.training import scale_to_unit
from sgilo.pipeline.metrics import psnr

#: 5-tap binomial filter of the Gaussian pyramid
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


@dataclass
class InversionScore:
    """Per-slice and volume PSNR of the generator's fit to held-out slices."""

    method: str
    psnr: float
    psnr_per_slice: list[float]
    seconds: float


def training_scaled(images: np.ndarray) -> np.ndarray:
    """Each image ``(N, H, W)`` divided by its own 99.5th percentile, clipped to [0, 1] — the
    scaling the training images get (:func:`sgilo.pipeline.data.training.scale_to_unit`)."""
    out = [scale_to_unit(np.asarray(im, dtype=np.float64)) for im in images]
    return np.stack([np.zeros_like(images[0]) if o is None else o for o in out]).astype(np.float32)


def invert(
    prior: object,
    images: np.ndarray,
    method: str = "ilo",
    *,
    steps: tuple[int, ...] | int | None = None,
    seed: int = 0,
    callback: object | None = None,
) -> InversionScore:
    """Fit the generator of ``prior`` (:class:`sgilo.pipeline.reconstruct.Prior`) to each image of
    ``images`` ``(N, R, R)`` in [0, 1] from its fully sampled k-space; no data consistency, no
    phase, no rescaling (the images are already in the generator's units)."""
    import time

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    op = SingleCoilMRI(torch.ones(x.shape[-2:]))
    y = fft2c(x.to(torch.complex64))
    rng = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    common = dict(phase="none", normalize=False, fit_gain=False, data_consistency=False)
    if method == "csgm":
        from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm

        config = CSGMConfig(**common, **({} if steps is None else {"steps": int(steps)}))
        result = csgm(y, op, generator=prior.generator, config=config, rng=rng, callback=callback)
    elif method == "ilo":
        from sgilo.pipeline.solvers.ilo import ILOConfig, ilo

        default = ILOConfig().steps[: prior.generator.num_blocks]
        config = ILOConfig(**common, steps=tuple(steps) if steps is not None else default)
        result = ilo(
            y,
            op,
            generator=prior.generator,
            latent_stats=prior.stats(),
            config=config,
            rng=rng,
            callback=callback,
        )
    else:
        raise ValueError(f"method: expected 'csgm' or 'ilo', received {method!r}")
    fit = result.magnitude
    per_slice = [psnr(images[i], fit[i], data_range=1.0) for i in range(len(images))]
    return InversionScore(
        method, psnr(images, fit, data_range=1.0), per_slice, time.perf_counter() - start
    )


# ---------------------------------------------------------------------- sliced Wasserstein
def _blur_down(x: torch.Tensor) -> torch.Tensor:
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x.dtype)[None, None]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, stride=2)


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x.dtype)[None, None] * 4
    up = torch.zeros(x.shape[0], 1, *size, dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    return F.conv2d(F.pad(up, (2, 2, 2, 2), mode="reflect"), k)


def laplacian_pyramid(images: np.ndarray, min_side: int = 16) -> list[torch.Tensor]:
    """Levels ``(N, 1, r, r)`` from the full side down to ``min_side``: band-pass differences
    ``G_l − up(G_{l+1})``, and the coarsest Gaussian level itself."""
    g = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]
    levels = []
    while g.shape[-1] > min_side:
        low = _blur_down(g)
        levels.append(g - _upsample(low, g.shape[-2:]))
        g = low
    levels.append(g)
    return levels


def _descriptors(level: torch.Tensor, per_image: int, rng: torch.Generator) -> torch.Tensor:
    """``per_image`` random 7×7 patches per image, flattened: ``(N·per_image, 49)``."""
    patches = F.unfold(level, kernel_size=7)  # (N, 49, L)
    n, _, count = patches.shape
    idx = torch.randint(count, (n, per_image), generator=rng)
    picked = torch.gather(patches, 2, idx[:, None, :].expand(n, 49, per_image))
    return picked.permute(0, 2, 1).reshape(-1, 49)


def _standardize(d: torch.Tensor) -> torch.Tensor:
    return (d - d.mean(dim=0)) / d.std(dim=0).clamp_min(1e-8)


def _swd(a: torch.Tensor, b: torch.Tensor, rng: torch.Generator, repeats: int, dirs: int) -> float:
    n = min(len(a), len(b))
    total = 0.0
    for _ in range(repeats):
        proj = torch.randn(a.shape[1], dirs, generator=rng)
        proj = proj / proj.norm(dim=0, keepdim=True)
        pa = (a[torch.randperm(len(a), generator=rng)[:n]] @ proj).sort(dim=0).values
        pb = (b[torch.randperm(len(b), generator=rng)[:n]] @ proj).sort(dim=0).values
        total += float((pa - pb).abs().mean())
    return total / repeats


def sliced_wasserstein(
    images_a: np.ndarray,
    images_b: np.ndarray,
    *,
    per_image: int = 128,
    repeats: int = 4,
    directions: int = 128,
    seed: int = 0,
) -> float:
    """Mean over pyramid levels of the sliced Wasserstein distance ×10³ between the patch
    descriptors of two image sets ``(N, R, R)``, ``(M, R, R)`` (same R). Lower is closer."""
    if images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(f"image sizes differ: {images_a.shape[1:]} vs {images_b.shape[1:]}")
    rng = torch.Generator().manual_seed(seed)
    values = []
    for la, lb in zip(laplacian_pyramid(images_a), laplacian_pyramid(images_b), strict=True):
        da = _standardize(_descriptors(la, per_image, rng))
        db = _standardize(_descriptors(lb, per_image, rng))
        values.append(_swd(da, db, rng, repeats, directions))
    return 1e3 * float(np.mean(values))


def nearest_psnr(images: np.ndarray, references: np.ndarray) -> np.ndarray:
    """For each image ``(N, R, R)``, the highest PSNR (range 1) against any reference
    ``(M, R, R)``: ``(N,)``."""
    a = torch.from_numpy(np.asarray(images, dtype=np.float64)).flatten(1)
    b = torch.from_numpy(np.asarray(references, dtype=np.float64)).flatten(1)
    mse = torch.cdist(a, b).pow(2) / a.shape[1]
    best = mse.min(dim=1).values.clamp_min(1e-12)
    return (-10.0 * torch.log10(best)).numpy()


def generator_samples(generator: object, n: int, seed: int = 0, batch: int = 32) -> np.ndarray:
    """``n`` magnitude samples ``(n, R, R)`` in [0, 1] with fresh z and random noise maps."""
    from sgilo.models.stylegan2.generator import noise_resolution
    from sgilo.models.stylegan2.train import network_to_magnitude

    rng = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, n, batch):
            b = min(batch, n - start)
            z = torch.randn(b, generator.config.style_dim, generator=rng)
            ws = generator.mapping(z)[:, None].expand(-1, generator.n_latent, -1)
            noises = [
                torch.randn(b, 1, r, r, generator=rng)
                for r in (noise_resolution(i) for i in range(generator.num_noises))
            ]
            mag = network_to_magnitude(generator.synthesize(ws, noises))
            out.append(mag[:, 0].clamp(0, 1).numpy())
    return np.concatenate(out)


def median(values: np.ndarray | list[float]) -> float:
    """The median as a float (NaN for no values)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)) if values.size else math.nan


#: the image sets a prior can be inverted on (:func:`validation_images`)
IMAGE_SETS: tuple[str, ...] = ("mni", "synth-brain", "ood")


def validation_images(kind: str, resolution: int, count: int, seed: int = 0) -> np.ndarray:
    """Held-out images to invert, float32 ``(N, R, R)`` scaled as the training images, N ≤ count.

    Args:
        kind: ``"mni"``: the first ``count`` of the 16 MNI152 validation slices (axial T1, the
            shipped brain-t1-128's domain); ``"synth-brain"``: ``count`` images of the
            ``synth-brain`` validation split (held-out plane positions in every orientation,
            random contrasts, heads, deformations; docs/DATA.md), seed ``seed``; ``"ood"``: the
            out-of-distribution suite's images without its in-domain group (coronal, sagittal,
            T2-/PD-like, pydicom's and nibabel's MR, the abdomen phantom; 14), evenly spaced
            when ``count`` is smaller.
        resolution: the prior's side R.
        count: how many (≥ 1).
    """
    if kind == "mni":
        from sgilo.pipeline.data.mni import mni_slices

        return training_scaled(mni_slices("validation", resolution))[:count]
    if kind == "synth-brain":
        from sgilo.pipeline.data.synth_brain import synth_brain_batch

        batch = synth_brain_batch(count, seed, resolution, split="validation")
        return training_scaled(batch.numpy())
    if kind == "ood":
        from sgilo.pipeline.data.ood import GROUPS, ood_groups

        names = [g for g in GROUPS if g != "mni-axial-validation"]
        images = np.concatenate([g.images for g in ood_groups(resolution, names).values()])
        picks = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
        return training_scaled(images[picks])
    raise ValueError(f"images: expected one of {IMAGE_SETS}, received {kind!r}")


def evaluate_prior(
    prior: object,
    *,
    methods: tuple[str, ...] = ("csgm", "ilo"),
    num_slices: int = 16,
    num_samples: int = 256,
    seed: int = 0,
    images: str = "mni",
    log: object = print,
) -> dict:
    """All validation figures of a 1-channel prior (module docstring): ``{"inversion": {method:
    {...}}, "swd": {...}, "nearest_psnr": {...}}``. The inversions use the held-out ``images``
    (:func:`validation_images`); the sample statistics always compare with the MNI152 training
    slices and validation slices."""
    from sgilo.pipeline.data.mni import mni_slices
    from sgilo.pipeline.data.training import load_training_images

    resolution = int(prior.generator.config.resolution)
    train, _ = load_training_images(["mni-train"], resolution)
    validation = training_scaled(mni_slices("validation", resolution))[:num_slices]
    inverted = validation_images(images, resolution, num_slices, seed)
    samples = generator_samples(prior.generator, num_samples, seed=seed)
    report: dict = {
        "resolution": resolution,
        "validation_slices": len(validation),
        "images": images,
        "inverted_images": len(inverted),
    }
    report["swd"] = {
        "samples_vs_train": sliced_wasserstein(samples, train, seed=seed),
        "validation_vs_train": sliced_wasserstein(validation, train, seed=seed),
    }
    report["nearest_psnr"] = {
        "samples_median": median(nearest_psnr(samples, train)),
        "validation_median": median(nearest_psnr(validation, train)),
    }
    log(f"swd {report['swd']}; nearest-training PSNR {report['nearest_psnr']}")
    report["inversion"] = {}
    for method in methods:
        score = invert(prior, inverted, method, seed=seed)
        report["inversion"][method] = {
            "psnr": score.psnr,
            "psnr_per_slice": score.psnr_per_slice,
            "seconds": score.seconds,
        }
        log(f"inversion {method}: PSNR {score.psnr:.2f} dB in {score.seconds:.0f} s")
    return report


_SET_NAMES = {
    "mni": "MNI validation slices",
    "synth-brain": "synth-brain validation images",
    "ood": "out-of-distribution images",
}


def markdown_report(report: dict) -> str:
    """The figures of :func:`evaluate_prior` as a Markdown table."""
    rows = ["| figure | value | reference |", "|---|---|---|"]
    count = report.get("inverted_images", report["validation_slices"])
    images = _SET_NAMES[report.get("images", "mni")]
    for method, item in report["inversion"].items():
        rows.append(f"| inversion PSNR, {method} ({count} {images}) | {item['psnr']:.2f} dB | — |")
    swd = report["swd"]
    rows.append(
        f"| sliced Wasserstein ×10³, samples vs training | {swd['samples_vs_train']:.1f} | "
        f"validation vs training: {swd['validation_vs_train']:.1f} |"
    )
    near = report["nearest_psnr"]
    rows.append(
        f"| median nearest-training PSNR of samples | {near['samples_median']:.2f} dB | "
        f"validation slices: {near['validation_median']:.2f} dB |"
    )
    return "\n".join(rows)


def comparison_grid(prior: object, count: int = 8, seed: int = 0) -> np.ndarray:
    """Tiles for a sheet: ``count`` training slices (evenly spaced in z) above ``2·count``
    generator samples: ``(3·count, R, R)``."""
    from sgilo.pipeline.data.training import load_training_images

    resolution = int(prior.generator.config.resolution)
    train, _ = load_training_images(["mni-train"], resolution)
    picks = np.linspace(0, len(train) - 1, count).round().astype(int)
    samples = generator_samples(prior.generator, 2 * count, seed=seed)
    return np.concatenate([train[picks], samples])
