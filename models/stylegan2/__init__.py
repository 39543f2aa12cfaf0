"""StyleGAN-2 in pure PyTorch: generator with a splittable synthesis, discriminator, checkpoints.

See :mod:`sgilo.models.stylegan2.generator` for the block / w+ row / noise indexing and the
checkpoint key layout, and :mod:`sgilo.models.stylegan2.checkpoint` for the file format.
"""

from sgilo.models.stylegan2.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    LatentStats,
    fit_latent_stats,
    gaussianized_to_w,
    infer_config,
    load_generator,
    save_generator,
)
from sgilo.models.stylegan2.discriminator import Discriminator, DiscriminatorConfig
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig, SynthesisState

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "Discriminator",
    "DiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "LatentStats",
    "SynthesisState",
    "fit_latent_stats",
    "gaussianized_to_w",
    "infer_config",
    "load_generator",
    "save_generator",
]
