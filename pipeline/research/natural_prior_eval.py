"""Validation figures of the shipped ``natural-rgb-32`` prior (models/weights/PROVENANCE.md).

Run from the repository root: ``python -m sgilo.pipeline.research.natural_prior_eval``. Prints

- the CSGM inversion PSNR of 16 validation patches (identity operator, default CSGM),
- the median nearest-training PSNR of 128 samples and of the validation patches (against 2 000
  training patches: a copy detector),

and writes the sample sheet ``docs/images/natural-rgb-32_samples.png`` (two rows of training
patches, then 32 samples, 3× enlarged).
"""

from __future__ import annotations

import json
import time

import numpy as np
import skimage.io
import torch

from sgilo.models.stylegan2.generator import noise_resolution
from sgilo.operators.base import Identity
from sgilo.pipeline.data.natural import natural_train_patches, natural_validation_patches
from sgilo.pipeline.methods import load_prior, solve


def nearest_psnr(images: np.ndarray, references: np.ndarray) -> np.ndarray:
    """PSNR (data range 1) of each image against its closest reference ``(N,)``."""
    a = images.reshape(len(images), -1)
    ref = references.reshape(len(references), -1)
    mse = ((a[:, None, :] - ref[None]) ** 2).mean(-1).min(1)
    return 10 * np.log10(1 / mse)


def main() -> None:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    torch.set_num_threads(1)
    start = time.time()
    prior = load_prior("natural-rgb-32")
    g = prior.generator
    val = natural_validation_patches(32, 16)
    train = natural_train_patches(32, 2000, seed=0)

    res = solve(torch.from_numpy(val), Identity((3, 32, 32)), "csgm", prior=prior, seed=0)
    fit = res.image.clamp(0, 1).numpy()
    inversion = 10 * np.log10(1 / ((fit - val) ** 2).mean(axis=(1, 2, 3)))

    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = torch.randn(128, g.config.style_dim, generator=rng)
        ws = g.mapping(z)[:, None].expand(-1, g.n_latent, -1)
        sizes = (noise_resolution(i) for i in range(g.num_noises))
        noises = [torch.randn(128, 1, r, r, generator=rng) for r in sizes]
        samples = ((g.synthesize(ws, noises) + 1) / 2).clamp(0, 1).numpy()

    report = {
        "inversion_psnr_csgm_mean": float(inversion.mean()),
        "inversion_psnr_per_patch": inversion.round(2).tolist(),
        "nearest_train_psnr_samples_median": float(np.median(nearest_psnr(samples, train))),
        "nearest_train_psnr_validation_median": float(np.median(nearest_psnr(val, train))),
        "seconds": time.time() - start,
    }
    print(json.dumps(report, indent=1))

    tiles = np.concatenate([natural_train_patches(32, 16, seed=1), samples[:32]])
    rows = [
        np.concatenate(list(tiles[i : i + 8].transpose(0, 2, 3, 1)), axis=1)
        for i in range(0, len(tiles), 8)
    ]
    sheet = np.concatenate(rows, axis=0).repeat(3, 0).repeat(3, 1)
    out = "docs/images/natural-rgb-32_samples.png"
    skimage.io.imsave(out, (sheet * 255).round().astype(np.uint8), check_contrast=False)


if __name__ == "__main__":
    main()
