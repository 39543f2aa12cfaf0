"""Residual StyleGAN-2 discriminator (for training the generator).

Image (B, C_img, R, R) → 1×1 conv → residual blocks halving the side down to 4×4 → minibatch
standard deviation (one extra feature map) → 3×3 conv → linear → linear → logits (B, 1).

Parameter names follow the rosinality/stylegan2-pytorch ``d`` layout:
``convs.0.0.weight``, ``convs.0.1.bias`` (from-RGB); ``convs.{j}.conv1.{0.weight,1.bias}``,
``convs.{j}.conv2.{0.kernel,1.weight,2.bias}``, ``convs.{j}.skip.{0.kernel,1.weight}`` (residual
block j ≥ 1, side R/2^(j−1) → R/2^j); ``final_conv.{0.weight,1.bias}``;
``final_linear.{0,1}.{weight,bias}``.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from sgilo.models.stylegan2.generator import MAX_RESOLUTION, MIN_RESOLUTION, GeneratorConfig
from sgilo.models.stylegan2.layers import (
    BLUR_KERNEL,
    Blur,
    EqualConv2d,
    EqualLinear,
    FusedLeakyReLU,
)


class DiscriminatorConfig(BaseModel):
    """Discriminator architecture; widths follow the generator's rule (see GeneratorConfig)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution: int
    image_channels: int = Field(3, ge=1, le=3)
    channel_multiplier: int = Field(2, ge=1)
    channel_base: int = Field(16384, ge=1)
    channel_max: int = Field(512, ge=1)
    channel_min: int = Field(1, ge=1)
    channels: dict[int, int] | None = None
    stddev_group: int = Field(4, ge=1)

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, r: int) -> int:
        if r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
            raise ValueError(f"resolution must be a power of two in [8, 1024], got {r}")
        return r

    @classmethod
    def matching(cls, g: GeneratorConfig, **overrides: int) -> DiscriminatorConfig:
        """The discriminator with the same resolution, image channels and widths as ``g``."""
        fields = dict(
            resolution=g.resolution,
            image_channels=g.image_channels,
            channel_multiplier=g.channel_multiplier,
            channel_base=g.channel_base,
            channel_max=g.channel_max,
            channel_min=g.channel_min,
            channels=g.channels,
        )
        return cls(**(fields | overrides))

    def channels_at(self, r: int) -> int:
        if self.channels is not None:
            return self.channels[r]
        c = self.channel_base * self.channel_multiplier // r
        return max(self.channel_min, min(self.channel_max, c))


class ConvLayer(nn.Sequential):
    """[blur →] equalized conv (stride 2 when downsampling) [→ fused leaky ReLU].

    (B, in, H, W) → (B, out, H/s, W/s), s = 2 if downsample else 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR_KERNEL) - 2) + (kernel_size - 1)
            layers.append(Blur(pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(
                in_channels, out_channels, kernel_size, stride, padding, bias and not activate
            )
        )
        if activate:
            layers.append(FusedLeakyReLU(out_channels))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """(conv3×3 → down-conv3×3) + down-conv1×1 skip, scaled by 1/√2: (B, in, H, W) → (B, out, H/2,
    W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(
            in_channels, out_channels, 1, downsample=True, bias=False, activate=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


def minibatch_stddev(x: Tensor, group: int) -> Tensor:
    """Append the mean over features of the within-group std: (B, C, H, W) → (B, C+1, H, W).

    The group size is the largest divisor of B not above ``group``; sample b belongs to the group
    of the samples b' ≡ b (mod B/group).
    """
    b, c, h, w = x.shape
    g = max(d for d in range(1, min(b, group) + 1) if b % d == 0)
    y = x.reshape(g, b // g, c, h, w)
    std = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # (B/g, C, H, W)
    feat = std.mean(dim=(1, 2, 3), keepdim=True)  # (B/g, 1, 1, 1)
    return torch.cat([x, feat.repeat(g, 1, h, w)], dim=1)


class Discriminator(nn.Module):
    """x: (B, C_img, R, R) → logits (B, 1) (real > fake under the non-saturating loss)."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        r = config.resolution
        c_in = config.channels_at(r)
        blocks: list[nn.Module] = [ConvLayer(config.image_channels, c_in, 1)]
        while r > 4:
            c_out = config.channels_at(r // 2)
            blocks.append(ResBlock(c_in, c_out))
            c_in, r = c_out, r // 2
        self.convs = nn.Sequential(*blocks)
        c4 = config.channels_at(4)
        self.final_conv = ConvLayer(c_in + 1, c4, 3)
        self.final_linear = nn.Sequential(
            EqualLinear(c4 * 4 * 4, c4, activation=True), EqualLinear(c4, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.config
        want = (cfg.image_channels, cfg.resolution, cfg.resolution)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"expected images (B, {want[0]}, {want[1]}, {want[2]}), got {tuple(x.shape)}"
            )
        out = minibatch_stddev(self.convs(x), cfg.stddev_group)
        out = self.final_conv(out)
        return self.final_linear(out.flatten(1))
