"""Samples through the latent prior: GAN sample → score-model denoising of a block output → image.

For ``n`` latents z ~ N(0, I): ``w = mapping(z)``, ``h_k = block_output(k, w)`` (features and skip
image), then ``steps`` applications of the score model's one-step denoiser at time ``t``,
``features ← D(features, t)`` (Tweedie's E[h_0 | h_t]), and the rest of the generator from block
``k + 1`` on with the (unchanged) skip image: ``x = G_{>k}(h_k')``. Returned beside the plain GAN
samples so the effect of the prior can be seen side by side (docs/ALGORITHMS.md §4, "Generation").
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgilo.models.score.model import ScoreModel
from sgilo.models.stylegan2.generator import Generator, SynthesisState


@torch.no_grad()
def prior_refined_samples(
    generator: Generator,
    score_model: ScoreModel,
    block: int,
    n: int,
    t: float = 0.05,
    steps: int = 3,
    rng: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(plain, refined)`` generator outputs ``(n, C_img, R, R)`` for the same latents and noise
    (the generator's fixed noise buffers); ``block`` must be the block the score model covers."""
    if not 0 <= block < generator.num_blocks - 1:
        raise ValueError(f"block must be in [0, {generator.num_blocks - 1}), got {block}")
    rng = rng or torch.Generator().manual_seed(0)
    device = generator.w_avg.device
    z = torch.randn(n, generator.config.style_dim, generator=rng).to(device)
    ws = generator.mapping(z)
    h = generator.block_output(block, ws)
    if tuple(h.features.shape[1:]) != tuple(score_model.data_shape):
        raise ValueError(
            f"the score model covers samples of shape {tuple(score_model.data_shape)}, but block "
            f"{block} outputs features of shape {tuple(h.features.shape[1:])}"
        )
    features = h.features
    for _ in range(steps):
        features = score_model.denoise(features, t)
    plain = generator.synthesize(ws, start=block + 1, h=h)
    refined = generator.synthesize(ws, start=block + 1, h=SynthesisState(features, h.skip))
    return plain, refined
