"""A styled convolution's epilogue as one autograd function: ``y = lrelu(shift + o ⊙ s)``.

After its convolution, a StyleGAN-2 layer scales each sample's output channels by the
demodulation factors, adds noise and bias, and applies the leaky ReLU with its gain
(:class:`sgilo.models.stylegan2.layers.StyledConv` folds the gain into ``s`` and ``shift``):

    y = lrelu_α(shift + o ⊙ s),    o (B, C, H, W), s (B, C, 1, 1), shift (1 or B, C, H, W).

Written with ``torch.addcmul`` and ``F.leaky_relu`` the backward pass takes five passes over the
``(B, C, H, W)`` features: the leaky ReLU's, then ``addcmul``'s ``∂/∂o = g ⊙ s`` and
``∂/∂s = Σ_hw g ⊙ (o · value)``, which first multiplies ``o`` by its scalar ``value`` (1 here) in
a pass of its own. :func:`styled_epilogue` computes the same gradients,

    g_z = g_y ⊙ (1 if y > 0 else α),    ∂/∂o = g_z ⊙ s,    ∂/∂s = Σ_hw g_z ⊙ o,
    ∂/∂shift = g_z summed to shift's shape,

in four, with the activation's derivative read from the output ``y`` (its sign is the input's,
as ``α > 0``), which the next layer keeps anyway, so the pre-activation is not stored. On the
CPU the generator's features at 128² are far larger than the caches and these passes run at the
memory's bandwidth: one forward and backward pass of the shipped prior at batch 16 took 3.5 ms
per image with the plain operations and 3.4 with this function (docs/SPEED.md §20). The
backward is made of differentiable operations, so a second derivative (``create_graph=True``)
goes through it too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class _StyledEpilogue(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, out: Tensor, scale: Tensor, shift: Tensor, slope: float) -> Tensor:
        y = F.leaky_relu_(torch.addcmul(shift, out, scale), slope)
        ctx.save_for_backward(y, out, scale)
        ctx.slope = slope
        ctx.shift_shape = shift.shape
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        y, out, scale = ctx.saved_tensors
        grad_z = torch.ops.aten.leaky_relu_backward(grad, y, ctx.slope, True)
        need_out, need_scale, need_shift, _ = ctx.needs_input_grad
        grad_out = grad_z * scale if need_out else None
        grad_scale = (grad_z * out).sum(dim=(2, 3), keepdim=True) if need_scale else None
        grad_shift = grad_z.sum_to_size(ctx.shift_shape) if need_shift else None
        return grad_out, grad_scale, grad_shift, None


def styled_epilogue(out: Tensor, scale: Tensor, shift: Tensor, slope: float) -> Tensor:
    """``lrelu_slope(shift + out ⊙ scale)`` (module docstring): ``out`` (B, C, H, W), ``scale``
    (B, C, 1, 1), ``shift`` broadcasting to ``out`` (1 or B, C, H, W); ``slope > 0``. The result
    has ``shift + out ⊙ scale``'s memory layout."""
    if slope <= 0:
        raise ValueError(f"slope must be positive (the backward reads the output), got {slope}")
    return _StyledEpilogue.apply(out, scale, shift, slope)
