"""The final step of a latent solver applied to a finished latent fit's model images.

The prior-fit check (:mod:`sgilo.pipeline.prior_fit`) and the research scripts that follow it
run a generative method without its final data-consistency step, then apply that step
themselves, to the same model images, with other data: the fitted samples (to predict held-out
ones) and every sample (for the output). These are the pieces they share: every chain's model
image of a result, the step on each, and the generator's resolution that the output's trusted
band (:mod:`sgilo.pipeline.solvers.trusted_band`) needs.
"""

from __future__ import annotations

import torch

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers.base import ReconResult
from sgilo.pipeline.solvers.consistency import finish_model_image


def chains_of(model: ReconResult) -> torch.Tensor:
    """Every chain's model image ``(K, B, H, W)`` of a latent fit (``K = 1`` without chains)."""
    chains = getattr(model, "samples", None)
    if chains is None or not chains.numel():
        chains = model.image[None]
    return chains


def finish_chains(
    model: ReconResult,
    config: object,
    y: torch.Tensor,
    op: LinearOperator,
    resolution: int | None = None,
) -> torch.Tensor:
    """The final step (:func:`sgilo.pipeline.solvers.consistency.finish_model_image`) with
    ``y``, ``op`` applied to every chain's model image: ``(K, B, H, W)``, ``K = 1`` for a result
    without chains; on ``y``'s device (the model images come back from the prior's device, the
    final step runs on the data's). ``resolution``: the generator's, for the output's trusted
    band; the predictions of held-out samples leave it out (``None``), since they judge the
    whole model image."""
    chains = chains_of(model).to(y.device)
    return torch.stack([finish_model_image(x, y, op, config, resolution) for x in chains])


def generator_resolution(prior: object) -> int | None:
    """The generator's resolution ``R`` of a loaded prior (``None`` if it has none)."""
    generator = getattr(prior, "generator", None)
    config = getattr(generator, "config", None)
    resolution = getattr(config, "resolution", None)
    return None if resolution is None else int(resolution)
