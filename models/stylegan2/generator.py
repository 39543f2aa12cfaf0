"""StyleGAN-2 generator with a pure, splittable synthesis network.

Structure (``L = log2(resolution) − 1`` synthesis blocks, ``n_latent = 2·log2(resolution) − 2``
w+ rows, ``2L − 1`` noise maps):

==========  ===================================  =================  ==============  ===========
block k     layers                               w+ rows            noise indices   output side
==========  ===================================  =================  ==============  ===========
0           ``input`` → ``conv1`` → ``to_rgb1``  0 (conv1), 1 (rgb) 0               4
k ≥ 1       ``convs[2k−2]`` (2× up),             2k−1, 2k,          2k−1, 2k        4·2^k
            ``convs[2k−1]``, ``to_rgbs[k−1]``    2k+1 (rgb)
==========  ===================================  =================  ==============  ===========

The to_rgb of block k and the upsampling conv of block k+1 read the same row 2k+1 (as in the
original network). Noise map i has side ``4·2^((i+1)//2)``.

The output of block k is a :class:`SynthesisState`: the features (B, C_k, r, r) and the running
skip image (B, image_channels, r, r) that the to_rgb layers accumulate; the skip image of the last
block is the generated image (no output non-linearity). :meth:`Generator.synthesize` continues
from any block given BOTH parts, so splitting at any block reproduces the full forward exactly.

Parameter names (the rosinality/stylegan2-pytorch ``g_ema`` layout; a real file loads strictly):

- ``style.{1..n_mlp}.weight`` (D, D), ``style.{i}.bias`` (D,) — ``style.0`` is the PixelNorm
- ``input.input`` (1, C_4, 4, 4)
- ``conv1.conv.weight`` (1, C_4, C_4, 3, 3), ``conv1.conv.modulation.weight`` (C_4, D),
  ``conv1.conv.modulation.bias`` (C_4,), ``conv1.noise.weight`` (1,), ``conv1.activate.bias``
- ``to_rgb1.conv.weight`` (1, C_img, C_4, 1, 1), ``to_rgb1.conv.modulation.{weight,bias}``,
  ``to_rgb1.bias`` (1, C_img, 1, 1)
- ``convs.{2k−2}``: as conv1 plus the buffer ``convs.{2k−2}.conv.blur.kernel`` (4, 4);
  ``convs.{2k−1}``: as conv1 (weights (1, C_r, C_r, 3, 3))
- ``to_rgbs.{k−1}``: as to_rgb1 plus the buffer ``to_rgbs.{k−1}.upsample.kernel`` (4, 4)
- ``noises.noise_{i}`` (1, 1, r_i, r_i) buffers: the fixed noise used by default.

``w_avg`` (the mean of mapping(z), used for truncation; ``latent_avg`` in checkpoints) is a
non-persistent buffer, so it is not part of the state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from sgilo.models.stylegan2.layers import (
    ConstantInput,
    EqualLinear,
    PixelNorm,
    StyledConv,
    ToRGB,
)

#: smallest resolution accepted (tests); the product range is 32 … 1024
MIN_RESOLUTION = 8
MAX_RESOLUTION = 1024


class GeneratorConfig(BaseModel):
    """Architecture of a StyleGAN-2 generator (JSON-able via ``model_dump()``).

    Channel width at resolution r: ``channels[r]`` when the mapping is given, else
    ``clamp(channel_base·channel_multiplier // r, channel_min, channel_max)``; the defaults give
    the original widths (512 up to 32², then 256·m at 64², …, 16·m at 1024²).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution: int = Field(description="output side, a power of two (product: 32 … 1024)")
    style_dim: int = Field(512, ge=1)
    n_mlp: int = Field(8, ge=1)
    lr_mlp: float = Field(0.01, gt=0)
    image_channels: Literal[1, 2, 3] = 3
    channel_multiplier: int = Field(2, ge=1)
    channel_base: int = Field(16384, ge=1)
    channel_max: int = Field(512, ge=1)
    channel_min: int = Field(1, ge=1)
    channels: dict[int, int] | None = None

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, r: int) -> int:
        if r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
            raise ValueError(
                f"resolution must be a power of two in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], "
                f"got {r}"
            )
        return r

    @model_validator(mode="after")
    def _channels_cover_all_blocks(self) -> GeneratorConfig:
        if self.channels is not None:
            needed = self.block_resolutions
            missing = [r for r in needed if r not in self.channels]
            if missing:
                raise ValueError(f"channels lacks resolutions {missing}")
            if any(self.channels[r] < 1 for r in needed):
                raise ValueError("channel widths must be positive")
        if self.channel_min > self.channel_max:
            raise ValueError("channel_min > channel_max")
        return self

    @property
    def log_size(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def num_blocks(self) -> int:
        """Number of synthesis blocks: log2(resolution) − 1."""
        return self.log_size - 1

    @property
    def n_latent(self) -> int:
        """Rows of w+: 2·log2(resolution) − 2."""
        return 2 * self.log_size - 2

    @property
    def num_noises(self) -> int:
        """Noise maps (one per StyledConv): 2·num_blocks − 1."""
        return 2 * self.num_blocks - 1

    @property
    def block_resolutions(self) -> list[int]:
        return [4 * 2**k for k in range(self.num_blocks)]

    def channels_at(self, r: int) -> int:
        """Feature channels at resolution r."""
        if self.channels is not None:
            return self.channels[r]
        c = self.channel_base * self.channel_multiplier // r
        return max(self.channel_min, min(self.channel_max, c))

    def channel_map(self) -> dict[int, int]:
        """Resolution → channels for every block."""
        return {r: self.channels_at(r) for r in self.block_resolutions}


def _feature_layout(device: torch.device) -> torch.memory_format:
    """The memory layout of the features inside :meth:`Generator.run_blocks`: channels-last
    on the CPU, where oneDNN's convolutions run about twice as fast on it as on the usual
    layout (forward and backward of the 16-channel 3×3 convolution at 128², batch 32, 2 cores:
    60 ms against 120), the usual layout elsewhere. The values are the same up to the order of
    the sums."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


class SynthesisState(NamedTuple):
    """Output of a synthesis block: features (B, C_k, r, r) and skip image (B, C_img, r, r)."""

    features: Tensor
    skip: Tensor


def noise_resolution(i: int) -> int:
    """Side of noise map i: 4·2^((i+1)//2)."""
    return 4 * 2 ** ((i + 1) // 2)


class Generator(nn.Module):
    """StyleGAN-2 generator: ``mapping`` (z → w) and a splittable ``synthesize`` (w+ → image).

    Parameters are initialized from the global torch RNG (seed it for reproducibility).
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        d, ch = config.style_dim, config.channel_map()
        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(d, d, lr_mul=config.lr_mlp, activation=True)
                for _ in range(config.n_mlp)
            ],
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, d)
        self.to_rgb1 = ToRGB(ch[4], d, config.image_channels, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(config.num_noises):
            r = noise_resolution(i)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        for k in range(1, config.num_blocks):
            c_in, c_out = ch[4 * 2 ** (k - 1)], ch[4 * 2**k]
            self.convs.append(StyledConv(c_in, c_out, 3, d, upsample=True))
            self.convs.append(StyledConv(c_out, c_out, 3, d))
            self.to_rgbs.append(ToRGB(c_out, d, config.image_channels, upsample=True))
        self.register_buffer("w_avg", torch.zeros(d), persistent=False)

    # ------------------------------------------------------------------ indexing
    @property
    def num_blocks(self) -> int:
        return self.config.num_blocks

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    @property
    def num_noises(self) -> int:
        return self.config.num_noises

    @property
    def style_dim(self) -> int:
        return self.config.style_dim

    @staticmethod
    def block_latent_rows(k: int) -> tuple[int, ...]:
        """w+ rows read by block k: (0, 1) for k = 0, else (2k−1, 2k, 2k+1)."""
        return (0, 1) if k == 0 else (2 * k - 1, 2 * k, 2 * k + 1)

    @staticmethod
    def block_noise_indices(k: int) -> tuple[int, ...]:
        """Noise maps read by block k: (0,) for k = 0, else (2k−1, 2k)."""
        return (0,) if k == 0 else (2 * k - 1, 2 * k)

    @staticmethod
    def block_resolution(k: int) -> int:
        """Side of block k's output: 4·2^k."""
        return 4 * 2**k

    def block_channels(self, k: int) -> int:
        """Feature channels of block k's output."""
        return self.config.channels_at(self.block_resolution(k))

    # ------------------------------------------------------------------ latents and noise
    def mapping(self, z: Tensor) -> Tensor:
        """z: (B, D) → w: (B, D) (PixelNorm, then n_mlp equalized linear + fused leaky ReLU)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, generator: torch.Generator | None = None) -> Tensor:
        """Mean of mapping(z) over n samples z ~ N(0, I): (D,). Does not change the module."""
        z = torch.randn(n, self.style_dim, generator=generator, device=self.w_avg.device)
        return self.mapping(z).mean(dim=0)

    def noise_buffers(self) -> list[Tensor]:
        """The fixed noise maps (the buffers themselves; clone before optimizing)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_noises)]

    def random_noises(
        self, batch: int = 1, generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """Fresh N(0, 1) noise maps [(batch, 1, r_i, r_i)] for i < num_noises."""
        dev = self.w_avg.device
        sides = [noise_resolution(i) for i in range(self.num_noises)]
        return [torch.randn(batch, 1, r, r, generator=generator, device=dev) for r in sides]

    # ------------------------------------------------------------------ synthesis
    def _check_ws(self, ws: Tensor) -> Tensor:
        if ws.dim() == 2:
            ws = ws[:, None, :].expand(-1, self.n_latent, -1)
        if ws.dim() != 3 or ws.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(
                f"ws must be (B, {self.n_latent}, {self.style_dim}) or (B, {self.style_dim}), "
                f"got {tuple(ws.shape)}"
            )
        return ws

    def _noise(self, noises: Sequence[Tensor | None] | None, i: int, batch: int) -> Tensor:
        noise = None if noises is None else noises[i]
        if noise is None:
            return getattr(self.noises, f"noise_{i}")
        r = noise_resolution(i)
        if noise.dim() != 4 or noise.shape[1:] != (1, r, r) or noise.shape[0] not in (1, batch):
            raise ValueError(
                f"noise {i} must be (1 or {batch}, 1, {r}, {r}), got {tuple(noise.shape)}"
            )
        return noise

    def _check_state(self, h: SynthesisState | None, start: int, batch: int) -> SynthesisState:
        if h is None:
            raise ValueError(f"start={start} needs h = (features, skip) of block {start - 1}")
        features, skip = h  # a SynthesisState or any (features, skip) pair
        r, c = self.block_resolution(start - 1), self.block_channels(start - 1)
        want_f, want_s = (batch, c, r, r), (batch, self.config.image_channels, r, r)
        if tuple(features.shape) != want_f or tuple(skip.shape) != want_s:
            raise ValueError(
                f"h of block {start - 1} must have features {want_f} and skip {want_s}, got "
                f"{tuple(features.shape)} and {tuple(skip.shape)}"
            )
        return SynthesisState(features, skip)

    def run_blocks(
        self,
        ws: Tensor,
        noises: Sequence[Tensor | None] | None = None,
        start: int = 0,
        end: int | None = None,
        h: SynthesisState | None = None,
    ) -> SynthesisState:
        """Blocks start … end−1; returns the state after block end−1. Pure (see synthesize)."""
        state = self._blocks(ws, noises, start, end, h)
        # callers (ILO's balls, the score model) see the usual contiguous layout
        return SynthesisState(state.features.contiguous(), state.skip.contiguous())

    def _blocks(
        self,
        ws: Tensor,
        noises: Sequence[Tensor | None] | None,
        start: int,
        end: int | None,
        h: SynthesisState | None,
    ) -> SynthesisState:
        """:meth:`run_blocks` with the features in :func:`_feature_layout` (channels-last on
        the CPU)."""
        ws = self._check_ws(ws)
        end = self.num_blocks if end is None else end
        if not 0 <= start < end <= self.num_blocks:
            raise ValueError(f"need 0 <= start < end <= {self.num_blocks}, got {start}, {end}")
        if noises is not None and len(noises) != self.num_noises:
            raise ValueError(f"noises must hold {self.num_noises} maps, got {len(noises)}")
        batch = ws.shape[0]
        layout = _feature_layout(ws.device)
        if start == 0:
            if h is not None:
                raise ValueError("block 0 starts from the learned constant: h must be None")
            x = self.input(batch).contiguous(memory_format=layout)
            x = self.conv1(x, ws[:, 0], self._noise(noises, 0, batch))
            state = SynthesisState(x, self.to_rgb1(x, ws[:, 1]))
            first = 1
        else:
            state = self._check_state(h, start, batch)
            state = SynthesisState(state.features.contiguous(memory_format=layout), state.skip)
            first = start
        for k in range(first, end):
            up, conv, to_rgb = self.convs[2 * k - 2], self.convs[2 * k - 1], self.to_rgbs[k - 1]
            x = up(state.features, ws[:, 2 * k - 1], self._noise(noises, 2 * k - 1, batch))
            x = conv(x, ws[:, 2 * k], self._noise(noises, 2 * k, batch))
            state = SynthesisState(x, to_rgb(x, ws[:, 2 * k + 1], state.skip))
        return state

    def synthesize(
        self,
        ws: Tensor,
        noises: Sequence[Tensor | None] | None = None,
        start: int = 0,
        end: int | None = None,
        h: SynthesisState | None = None,
    ) -> Tensor | SynthesisState:
        """Run synthesis blocks start … end−1, a pure function of its inputs.

        ws: (B, n_latent, D) w+ (or (B, D), broadcast to every row); only the rows of the blocks
        that run are read. noises: None (the fixed buffers) or a list of num_noises maps
        (1 or B, 1, r_i, r_i), where a None entry means that buffer. h: required when start > 0,
        the :class:`SynthesisState` of block start−1 (features AND skip image).
        Returns the image (B, image_channels, R, R) when end is None or equals num_blocks, else
        the :class:`SynthesisState` of block end−1.
        """
        if end is None or end == self.num_blocks:  # the image alone: no features converted
            return self._blocks(ws, noises, start, end, h).skip.contiguous()
        return self.run_blocks(ws, noises, start, end, h)

    def block_output(
        self, k: int, ws: Tensor, noises: Sequence[Tensor | None] | None = None
    ) -> SynthesisState:
        """h_k: the state after block k starting from the constant (always a SynthesisState)."""
        return self.run_blocks(ws, noises, start=0, end=k + 1)

    def forward(
        self,
        latent: Tensor,
        noises: Sequence[Tensor | None] | None = None,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
    ) -> Tensor:
        """Image (B, image_channels, R, R) from z (B, D) (mapped) or w+ (B, n_latent, D).

        truncation < 1 pulls w+ towards truncation_latent (D,) (default: ``w_avg``).
        """
        if latent.dim() == 2:
            ws = self.mapping(latent)[:, None, :].expand(-1, self.n_latent, -1)
        elif latent.dim() == 3:
            ws = latent
        else:
            raise ValueError(f"latent must be z (B, D) or w+ (B, n, D), got {tuple(latent.shape)}")
        if truncation != 1.0:
            center = self.w_avg if truncation_latent is None else truncation_latent
            ws = center + truncation * (ws - center)
        image = self.synthesize(ws, noises)
        assert isinstance(image, Tensor)
        return image
