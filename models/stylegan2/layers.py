"""StyleGAN-2 building blocks in pure PyTorch (no compiled extensions).

Every layer keeps the parameter and buffer names of the de-facto PyTorch StyleGAN-2 checkpoint
layout (rosinality/stylegan2-pytorch), so that a generator assembled from them loads such files
with ``strict=True``:

- :class:`EqualLinear`: ``weight`` (out, in), ``bias`` (out,)
- :class:`EqualConv2d`: ``weight`` (out, in, k, k), optional ``bias`` (out,)
- :class:`FusedLeakyReLU`: ``bias`` (C,)
- :class:`Blur` / :class:`Upsample`: ``kernel`` buffer (4, 4)
- :class:`ModulatedConv2d`: ``weight`` (1, out, in, k, k), ``modulation.{weight,bias}``,
  ``blur.kernel`` when it upsamples
- :class:`NoiseInjection`: ``weight`` (1,)
- :class:`StyledConv`: ``conv.*``, ``noise.weight``, ``activate.bias``
- :class:`ToRGB`: ``conv.*``, ``bias`` (1, C_img, 1, 1), ``upsample.kernel`` when it upsamples
- :class:`ConstantInput`: ``input`` (1, C, 4, 4)

Equalized learning rate: weights are stored as N(0, 1/lr_mul²) and scaled at run time by
``lr_mul / sqrt(fan_in)``; biases are stored divided by ``lr_mul``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgilo.models.stylegan2.epilogue import styled_epilogue

#: StyleGAN-2's resampling filter (binomial, separable)
BLUR_KERNEL: tuple[int, ...] = (1, 3, 3, 1)
#: gain of the fused leaky ReLU, keeping the activations' second moment
LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2


def make_kernel(taps: Sequence[float]) -> Tensor:
    """2-D separable filter from 1-D taps, normalized to sum 1: float32, (K, K)."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    k2 = k[:, None] * k[None, :]
    return k2 / k2.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)):
    """Upsample by zero insertion, pad, filter (FIR, per channel), downsample by striding.

    x: (B, C, H, W); kernel: (K, K). Output side: ``(H·up + pad0 + pad1 − K) // down + 1``.
    The filter is applied as a convolution (kernel flipped), as in the original operator.
    Upsampling without downsampling runs as a strided transposed convolution
    (:func:`_upsample_fir`), which skips the inserted zeros.
    """
    if min(pad) < 0:
        raise ValueError(f"negative padding is not supported, got {pad}")
    if up > 1 and down == 1:
        return _upsample_fir(x, kernel, up, pad)
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    weight = torch.flip(kernel, (0, 1)).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    if pad[0] == pad[1]:  # the convolution's own zero padding: no padded copy of x
        return F.conv2d(x, weight, stride=down, padding=pad[0], groups=c)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    return F.conv2d(x, weight, stride=down, groups=c)


def _upsample_fir(x: Tensor, kernel: Tensor, up: int, pad: tuple[int, int]) -> Tensor:
    """:func:`upfirdn2d` with ``down = 1`` as a per-channel transposed convolution of stride
    ``up``: ``t[n] = Σ_i x[i] k[n − up·i]``, length ``(H − 1)·up + K`` per axis, is the
    zero-inserted signal convolved with ``k``; the padded operator's output is
    ``out[m] = t[m + K − 1 − pad0]`` for ``m < H·up + pad0 + pad1 − K + 1``, a crop of ``t`` (or a
    zero border where the padding exceeds the kernel). The same values up to rounding at a
    fraction of the cost: the zeros are never multiplied (on the 2-core CPU 2 ms instead of
    61 ms forward and backward for the ``(32, 1, 64, 64)`` skip images of the 128² generator)."""
    c = x.shape[1]
    kh, kw = kernel.shape
    weight = kernel.to(x.dtype)[None, None].expand(c, 1, kh, kw)
    out = F.conv_transpose2d(x, weight, stride=up, groups=c)
    # F.pad with negative widths crops: left = pad0 − (K − 1), right = up + pad1 − K
    return F.pad(out, (pad[0] - kw + 1, up + pad[1] - kw, pad[0] - kh + 1, up + pad[1] - kh))


def _channels_last(x: Tensor) -> bool:
    """Whether ``x`` (B, C, H, W) is stored channels-last and not also contiguous."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def fused_leaky_relu(x: Tensor, bias: Tensor, slope: float = LRELU_SLOPE) -> Tensor:
    """``√2 · leaky_relu(x + bias, slope)``; x: (B, C, ...), bias: (C,)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return F.leaky_relu(x + bias.view(shape), slope) * LRELU_GAIN


class PixelNorm(nn.Module):
    """Normalize each vector to unit root-mean-square: (B, D) → (B, D)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class FusedLeakyReLU(nn.Module):
    """Bias then ``√2 · leaky_relu(·, 0.2)``; holds ``bias`` (C,)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Equalized-lr linear layer, optionally followed by the fused leaky ReLU.

    y = x · (W·lr_mul/√in)ᵀ + b·lr_mul; x: (B, in) → y: (B, out).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return out if bias is None else fused_leaky_relu(out, bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Equalized-lr 2-D convolution: (B, in, H, W) → (B, out, H', W')."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding
        )


class Blur(nn.Module):
    """FIR low-pass with padding (used around strided/transposed convs); ``kernel`` (4, 4)."""

    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_KERNEL) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2× FIR upsampling of an image: (B, C, H, W) → (B, C, 2H, 2W); ``kernel`` (4, 4)."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(BLUR_KERNEL) * factor**2)
        p = len(BLUR_KERNEL) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (StyleGAN-2), optionally upsampling 2×.

    With s = modulation(w) (B, in) (affine, bias initialized to 1) and W' = W/√(in·k²):
    y_b = conv(x_b, W' · s_b) · d_b, d_b[o] = (Σ_{i,kk} (W'[o,i,kk] s_b[i])² + 1e-8)^{-1/2} when
    demodulating (else d = 1). Implemented by scaling the input channels and output channels, which
    equals the per-sample grouped convolution. Upsampling: transposed conv (stride 2) then blur.
    x: (B, in, H, W), style: (B, style_dim) → (B, out, H·u, W·u) with u = 2 if upsample else 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(BLUR_KERNEL) - factor) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
        )
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def convolve(self, x: Tensor, style: Tensor) -> tuple[Tensor, Tensor | None]:
        """The convolution of the modulated input and the demodulation factors apart:
        ``(conv(x ⊙ s, W'), d)``, ``d`` (B, out) or ``None`` without demodulation, so that a
        caller can fold ``d`` into what follows (:class:`StyledConv`)."""
        s = self.modulation(style)  # (B, in)
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        if self.kernel_size == 1 and not self.upsample:
            # a 1×1 convolution is a per-sample matrix product over the channels:
            # (B, out, in) @ (B, in, H·W), the style folded into the (small) weight
            b, _, h, w = x.shape
            mixed = weight[None, :, :, 0, 0] * s[:, None, :]
            if x.is_contiguous(memory_format=torch.channels_last):  # (B, H·W, in) as stored
                pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, self.in_channels)
                out = torch.matmul(pixels, mixed.transpose(1, 2))
                out = out.view(b, h, w, self.out_channels).permute(0, 3, 1, 2)
            else:
                out = torch.matmul(mixed, x.reshape(b, self.in_channels, h * w))
                out = out.view(b, self.out_channels, h, w)
        elif self.upsample:
            x = x * s[:, :, None, None]
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0)
            out = self.blur(out)
        else:
            out = F.conv2d(x * s[:, :, None, None], weight, padding=self.kernel_size // 2)
        if not self.demodulate:
            return out, None
        w2 = weight.pow(2).sum(dim=(2, 3))  # (out, in)
        return out, torch.rsqrt(s.pow(2) @ w2.t() + 1e-8)  # (B, out)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        out, d = self.convolve(x, style)
        return out if d is None else out * d[:, :, None, None]


class NoiseInjection(nn.Module):
    """x + strength · noise with a learned scalar strength ``weight`` (1,), initialized to 0.

    x: (B, C, H, W); noise: (B or 1, 1, H, W).
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight * noise


class StyledConv(nn.Module):
    """Modulated conv → noise injection → fused leaky ReLU (with bias).

    x: (B, in, H, W), style: (B, style_dim), noise: (B or 1, 1, H', W') → (B, out, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, style_dim, demodulate=True, upsample=upsample
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        # √2·lrelu(conv·d + a·noise + b) = lrelu(conv·(√2 d) + √2(a·noise + b)): the
        # demodulation, noise, bias and gain in two passes over the features instead of five
        # (and four backward, epilogue.py)
        out, d = self.conv.convolve(x, style)
        bias = (self.activate.bias * LRELU_GAIN).view(1, -1, 1, 1)
        shift = (self.noise.weight * LRELU_GAIN) * noise + bias
        # the output takes the features' layout (channels-last on the CPU, generator.py), not
        # the layout of the (1 or B, C, H, W) shift
        if _channels_last(out):
            shift = shift.contiguous(memory_format=torch.channels_last)
        return styled_epilogue(out, (d * LRELU_GAIN)[:, :, None, None], shift, LRELU_SLOPE)


class ToRGB(nn.Module):
    """1×1 modulated conv (no demodulation) + bias, plus the 2×-upsampled previous skip image.

    x: (B, in, H, W), style: (B, style_dim), skip: (B, C_img, H/2, W/2) or None
    → (B, C_img, H, W).
    """

    def __init__(
        self, in_channels: int, style_dim: int, image_channels: int, upsample: bool = True
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channels, image_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, image_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            if not hasattr(self, "upsample"):
                raise ValueError("this ToRGB layer has no upsampler; it takes no skip image")
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned constant ``input`` (1, C, size, size), repeated over the batch → (B, C, s, s)."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)
