"""The styled convolution's epilogue as one autograd function against its plain definition
``leaky_relu(addcmul(shift, o, s))``: values, first and second derivatives, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sgilo.models.stylegan2.epilogue import styled_epilogue


def plain(out, scale, shift, slope=0.2):
    return F.leaky_relu(torch.addcmul(shift, out, scale), slope)


def inputs(shift_batch: int, channels_last: bool):
    torch.manual_seed(0)
    out = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    if channels_last:
        out = out.contiguous(memory_format=torch.channels_last)
    scale = torch.randn(3, 4, 1, 1, dtype=torch.float64)
    shift = torch.randn(shift_batch, 4, 5, 6, dtype=torch.float64)
    return tuple(t.requires_grad_(True) for t in (out, scale, shift))


@pytest.mark.parametrize("shift_batch", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_epilogue_equals_plain_definition(shift_batch, channels_last):
    """Values and every input's gradient; the shift of one sample gets the batch's sum."""
    args = inputs(shift_batch, channels_last)
    y, ref = styled_epilogue(*args, 0.2), plain(*args)
    torch.testing.assert_close(y, ref, rtol=1e-14, atol=1e-14)
    assert (y < 0).any() and (y > 0).any()  # both branches of the activation
    weights = torch.randn_like(ref)
    grads = torch.autograd.grad((y * weights).sum(), args)
    grads_ref = torch.autograd.grad((ref * weights).sum(), args)
    for g, r in zip(grads, grads_ref, strict=True):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_epilogue_second_derivative():
    """``create_graph=True`` goes through the backward (torch's numerical check)."""
    args = inputs(1, channels_last=True)

    def f(out, scale, shift):
        return styled_epilogue(out, scale, shift, 0.2)

    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def test_epilogue_keeps_layout_with_constant_scale_and_shift():
    """Channels-last in, channels-last out; with ``scale`` and ``shift`` constant (a frozen
    generator's) only ``out``'s gradient is computed, equal to the plain one."""
    out, scale, shift = inputs(1, channels_last=True)
    scale = scale.detach()
    shift = shift.detach().contiguous(memory_format=torch.channels_last)
    y = styled_epilogue(out, scale, shift, 0.2)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    (grad,) = torch.autograd.grad(y.square().sum(), out)
    (grad_ref,) = torch.autograd.grad(plain(out, scale, shift).square().sum(), out)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


def test_epilogue_rejects_nonpositive_slope():
    with pytest.raises(ValueError, match="slope must be positive"):
        styled_epilogue(*inputs(1, False), 0.0)
