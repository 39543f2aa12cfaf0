"""Named StyleGAN-2 architectures: the shipped priors' generators, one source for the command line
and the docs.

``GeneratorConfig()``'s own defaults are the original StyleGAN-2 widths (style dimension 512,
``channel_base`` 16384, up to 512 channels: ~30 M parameters at 128²), too big to train on a CPU.
The shipped priors (models/weights/PROVENANCE.md) use a small architecture of ~0.9 M parameters:
style dimension 128 and widths ``clamp(2·512 / r, 16, 128)`` at side ``r``. ``sgilo train-gan``
takes its defaults from :data:`TRAIN_GAN_PRESET`; a test checks each preset against the
configuration stored in the shipped checkpoint.
"""

from __future__ import annotations

from sgilo.models.stylegan2.generator import GeneratorConfig

#: the widths of the shipped priors: ~0.9 M parameters, about 10 images/s on a 2-core CPU
_SMALL = {"style_dim": 128, "channel_base": 512, "channel_max": 128, "channel_min": 16}

#: shipped prior name → the architecture of its generator
PRESETS: dict[str, GeneratorConfig] = {
    "brain-t1-128": GeneratorConfig(resolution=128, image_channels=1, **_SMALL),
    "natural-rgb-32": GeneratorConfig(resolution=32, image_channels=3, **_SMALL),
}

#: the preset whose values are ``sgilo train-gan``'s defaults
TRAIN_GAN_PRESET = "brain-t1-128"


def preset(name: str) -> GeneratorConfig:
    """The generator architecture named ``name`` (a key of :data:`PRESETS`)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
