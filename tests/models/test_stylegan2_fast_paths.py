"""The generator's faster CPU forms against the plain definitions they replace, in float64:
upsampling FIR by a strided transposed convolution (no zero insertion), the blur with the
convolution's own padding, the 1×1 modulated convolution as a matrix product, and the
channels-last feature layout of the synthesis. Each must give the same values and gradients (to
rounding) as the definition, on shapes and pads the 128² generator does not use as well."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sgilo.models.stylegan2 import Generator, GeneratorConfig
from sgilo.models.stylegan2 import generator as generator_module
from sgilo.models.stylegan2.layers import ModulatedConv2d, upfirdn2d


def zero_insertion_upfirdn(x, kernel, up, pad):
    """The definition: insert ``up − 1`` zeros after each sample, pad, correlate with the
    flipped kernel, per channel."""
    b, c, h, w = x.shape
    z = x.new_zeros(b, c, h * up, w * up)
    z[..., ::up, ::up] = x
    z = F.pad(z, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, (0, 1))[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(z, weight, groups=c)


def assert_same_with_gradients(fast, reference, inputs):
    out, ref = fast(*inputs), reference(*inputs)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(ref)
    grads = torch.autograd.grad((out * weights).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * weights).sum(), inputs)
    for g, r in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("up", "pad", "side"),
    [(2, (2, 1), 5), (2, (1, 1), 6), (2, (0, 0), 4), (3, (2, 2), 4), (2, (5, 4), 3)],
)
def test_upsampling_fir_equals_zero_insertion(up, pad, side):
    """Asymmetric kernel (a flip or an off-by-one in the crop shows), pads below, at and above
    ``K − 1`` (the last: a zero border around the transposed convolution's output)."""
    torch.manual_seed(0)
    kernel = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, side, side + 1, dtype=torch.float64, requires_grad=True)

    def fast(x, k):
        return upfirdn2d(x, k, up=up, pad=pad)

    def reference(x, k):
        return zero_insertion_upfirdn(x, k, up, pad)

    assert_same_with_gradients(fast, reference, (x, kernel))


@pytest.mark.parametrize("pad", [(1, 1), (2, 2), (2, 1)])
def test_blur_padding_equals_padded_copy(pad):
    torch.manual_seed(1)
    kernel = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    assert_same_with_gradients(
        lambda x, k: upfirdn2d(x, k, pad=pad),
        lambda x, k: zero_insertion_upfirdn(x, k, 1, pad),
        (x, kernel),
    )


@pytest.mark.parametrize("demodulate", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_one_by_one_modulated_conv_equals_grouped_conv(demodulate, channels_last):
    """The 1×1 case (ToRGB) as a matrix product, from either feature layout, against the
    per-sample modulated weight in a grouped convolution."""
    torch.manual_seed(2)
    b, cin, cout, r = 3, 5, 2, 6
    m = ModulatedConv2d(cin, cout, 1, 7, demodulate=demodulate).double()
    x = torch.randn(b, cin, r, r + 2, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    style = torch.randn(b, 7, dtype=torch.float64, requires_grad=True)

    def reference(x, style):
        w = m.weight * m.scale * m.modulation(style)[:, None, :, None, None]  # (B, out, in, 1, 1)
        if demodulate:
            w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
        out = F.conv2d(x.reshape(1, b * cin, r, r + 2), w.reshape(b * cout, cin, 1, 1), groups=b)
        return out.reshape(b, cout, r, r + 2)

    assert_same_with_gradients(m, reference, (x, style))


def test_channels_last_synthesis_equals_contiguous(monkeypatch):
    """The synthesis with channels-last features (the CPU's) gives the image, the block states
    and the latents' gradients of the usual layout; and the states it returns are contiguous."""
    torch.manual_seed(3)
    config = GeneratorConfig(
        resolution=32, style_dim=16, n_mlp=2, image_channels=2, channel_base=128, channel_max=16
    )
    g = Generator(config).double()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    ws = torch.randn(3, g.n_latent, g.style_dim, dtype=torch.float64, requires_grad=True)

    def run():
        image = g.synthesize(ws)
        state = g.run_blocks(ws, end=2)
        tail = g.synthesize(ws, start=2, h=state)
        (grad,) = torch.autograd.grad((image * image.detach()).sum() + tail.sum(), ws)
        return image, state, tail, grad

    assert generator_module._feature_layout(ws.device) == torch.channels_last
    seen = []  # the layout the convolutions of the last block get: the point of the change
    hook = g.convs[-1].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    fast = run()
    hook.remove()
    assert seen and all(seen)
    monkeypatch.setattr(generator_module, "_feature_layout", lambda device: torch.contiguous_format)
    plain = run()
    image, state, tail, grad = fast
    expected = (plain[0], *plain[1], plain[2], plain[3])
    for a, b in zip((image, *state, tail, grad), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert fast[1].features.is_contiguous() and fast[1].skip.is_contiguous()
