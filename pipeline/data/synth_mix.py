"""Synthetic brain images mixed with loaded ones: ``train-gan --data synth-brain --data SRC``.

A prior trained on :mod:`~sgilo.pipeline.data.synth_brain` alone has the variety of real scans but
has seen the template's own axial T1 slices only among many other planes and contrasts; a prior
trained on those slices alone knows nothing else. :class:`MixedSampler` draws each image of a batch
from the loaded set with probability ``real_fraction`` (uniformly, with replacement, as
:class:`sgilo.models.stylegan2.train_step.TensorSampler` does) and else from the synthetic sampler,
so one run trades the two on purpose.

Every random choice comes from the generator the trainer passes in (a CPU generator, the
:data:`~sgilo.models.stylegan2.train.BatchSampler` protocol), in a fixed order (a real/synthetic
flag per row, an index per row, then the synthetic batch's seed), so ``train-gan --resume``
replays exactly. The synthetic batch is rendered at the full batch size and its real rows
replaced: fixed shapes on a GPU, at the cost of rendering ``real_fraction`` of the images for
nothing.
"""

from __future__ import annotations

import torch

from sgilo.models.stylegan2.train_step import check_reals
from sgilo.pipeline.data.synth_brain import SynthBrainSampler
from sgilo.pipeline.data.training import REAL_FRACTION

__all__ = ["REAL_FRACTION", "MixedSampler"]


class MixedSampler:
    """``sampler(batch, generator)`` → float32 ``(batch, 1, R, R)`` in [0, 1] on the synthetic
    sampler's device: row ``i`` is a uniformly drawn loaded image with probability
    ``real_fraction``, else a synthetic one.

    Args:
        synth: the synthetic sampler (its resolution ``R``).
        images: the loaded images, ``(N, R, R)`` or ``(N, 1, R, R)``, values in [0, 1].
        real_fraction: the probability that a row is a loaded image, in [0, 1].
    """

    def __init__(
        self, synth: SynthBrainSampler, images: torch.Tensor, real_fraction: float = REAL_FRACTION
    ) -> None:
        if not 0.0 <= float(real_fraction) <= 1.0:
            raise ValueError(f"real_fraction: expected a value in [0, 1], received {real_fraction}")
        x = torch.as_tensor(images, dtype=torch.float32)
        if x.dim() == 3:
            x = x[:, None]
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != (synth.size, synth.size):
            raise ValueError(
                f"loaded images: expected (N, {synth.size}, {synth.size}) magnitudes to mix with "
                f"synth-brain, received {tuple(x.shape)}"
            )
        if len(x) == 0:
            raise ValueError("loaded images: none to mix with synth-brain")
        self.synth = synth
        self.real_fraction = float(real_fraction)
        self.images = check_reals(x, None, synth.size).to(synth.volume.data.device)

    def __call__(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        real = torch.rand(batch, generator=generator) < self.real_fraction  # (batch,)
        index = torch.randint(len(self.images), (batch,), generator=generator)
        synthetic = self.synth(batch, generator)  # (batch, 1, R, R)
        device = synthetic.device
        chosen = self.images[index.to(device)]
        return torch.where(real.to(device)[:, None, None, None], chosen, synthetic)
