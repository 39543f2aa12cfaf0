"""Score models on StyleGAN-2 latents for SGILO: VP-SDE, ε-networks, the model, training, data.

- :mod:`sgilo.models.score.sde` — the VP-SDE (β(t) = 0.1 + 19.9·t), its kernel and ε ↔ score.
- :mod:`sgilo.models.score.network` — MLPScoreNet (z-like (B, n, D)) and ConvScoreNet ((B, C, r,
  r)).
- :mod:`sgilo.models.score.model` — ScoreModel (eps/score/denoise/sgilo_step/sample in original
  coordinates, normalization buffers) and its checkpoint format.
- :mod:`sgilo.models.score.train` — denoising score matching, resumable bit for bit.
- :mod:`sgilo.models.score.sources` — training data: GAN latents (z or block outputs) or a tensor.
"""

from sgilo.models.score.model import (
    ScoreCheckpointError,
    ScoreModel,
    load_score_model,
    save_score_model,
)
from sgilo.models.score.network import (
    ConvScoreNet,
    ConvScoreNetConfig,
    MLPScoreNet,
    MLPScoreNetConfig,
    build_network,
    default_network_config,
    network_config_from_dict,
)
from sgilo.models.score.sde import VPSDE
from sgilo.models.score.sources import (
    GANLatentSource,
    TensorSource,
    gan_latent_source,
    split_block_tensor,
    tensor_source,
)
from sgilo.models.score.train import ScoreTrainConfig, estimate_normalization, train_score

__all__ = [
    "VPSDE",
    "ConvScoreNet",
    "ConvScoreNetConfig",
    "GANLatentSource",
    "MLPScoreNet",
    "MLPScoreNetConfig",
    "ScoreCheckpointError",
    "ScoreModel",
    "ScoreTrainConfig",
    "TensorSource",
    "build_network",
    "default_network_config",
    "estimate_normalization",
    "gan_latent_source",
    "load_score_model",
    "network_config_from_dict",
    "save_score_model",
    "split_block_tensor",
    "tensor_source",
    "train_score",
]
