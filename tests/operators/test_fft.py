"""The centred transforms (operators/fft.py): the one-axis numpy transform agrees with the 2-D
torch ones, and the even-size checkerboard path with the shifted definition."""

import numpy as np
import pytest
import torch

from sgilo.operators.fft import centred_fft_axis, fft1c, fft2c, fft2c_columns, ifft1c, ifft2c


def test_one_axis_transform_composes_to_fft2c_and_inverts():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6)) + 1j * rng.standard_normal((2, 7, 6))  # odd and even
    both = centred_fft_axis(centred_fft_axis(x, -2), -1)
    np.testing.assert_allclose(both, fft2c(torch.from_numpy(x)).numpy(), atol=1e-12)
    for axis in (-2, -1):
        back = centred_fft_axis(centred_fft_axis(x, axis), axis, inverse=True)
        np.testing.assert_allclose(back, x, atol=1e-12)
    # the DC sample sits at n // 2
    ones = centred_fft_axis(np.ones(7), 0)
    assert np.argmax(np.abs(ones)) == 7 // 2


@pytest.mark.parametrize("shape", [(8, 6), (10, 12), (7, 6), (6, 7), (5, 5)])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.float32])
def test_checkerboard_path_equals_the_shifted_definition(shape, dtype):
    """Even sizes modulate by ±1 instead of shifting (module docstring); odd sizes shift."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, *shape, generator=g, dtype=dtype)
    dims = (-2, -1)
    forward = torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims
    )
    inverse = torch.fft.fftshift(
        torch.fft.ifft2(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims
    )
    tol = 1e-6 if dtype in (torch.complex64, torch.float32) else 1e-14
    torch.testing.assert_close(fft2c(x), forward, rtol=tol, atol=tol)
    torch.testing.assert_close(ifft2c(x), inverse, rtol=tol, atol=tol)
    assert fft2c(x).dtype == forward.dtype
    # the DC sample of a constant image stays at (H // 2, W // 2)
    k = fft2c(torch.ones(*shape, dtype=torch.complex128)).abs()
    assert divmod(int(k.argmax()), shape[1]) == (shape[0] // 2, shape[1] // 2)


@pytest.mark.parametrize("shape", [(8, 6), (16, 12), (7, 6), (6, 7)])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_columns_of_the_transform_equal_those_of_the_full_one(shape, dtype):
    """``fft2c_columns`` (the FFT along H on the kept columns only) is ``fft2c(x)[..., cols]``,
    in value and in its gradient; odd sizes take the full transform."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, *shape, generator=g, dtype=dtype).requires_grad_(True)
    columns = torch.tensor([0, 2, shape[1] // 2, shape[1] - 1])
    tol = 1e-6 if dtype == torch.complex64 else 1e-13
    part = fft2c_columns(x, columns)
    full = fft2c(x)[..., columns]
    torch.testing.assert_close(part, full, rtol=tol, atol=tol)
    weights = torch.randn(part.shape, generator=g, dtype=dtype)
    (grad_part,) = torch.autograd.grad((part * weights).real.sum(), x)
    (grad_full,) = torch.autograd.grad((full * weights).real.sum(), x)
    torch.testing.assert_close(grad_part, grad_full, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(8, 6), (7, 6), (6, 7), (5, 5)])
def test_one_axis_torch_transforms_compose_to_fft2c_and_invert(shape):
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.complex128)
    torch.testing.assert_close(fft1c(fft1c(x, -1), -2), fft2c(x), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ifft1c(ifft1c(x, -2), -1), ifft2c(x), rtol=1e-13, atol=1e-13)
    for dim in (-2, -1):
        torch.testing.assert_close(ifft1c(fft1c(x, dim), dim), x, rtol=1e-13, atol=1e-13)
        expected = centred_fft_axis(x.numpy(), dim)
        np.testing.assert_allclose(fft1c(x, dim).numpy(), expected, atol=1e-12)
