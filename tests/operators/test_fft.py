"""The centred transforms (operators/fft.py): the one-axis numpy transform agrees with the 2-D
torch ones, and the even-size checkerboard path with the shifted definition."""

import numpy as np
import pytest
import torch

from sgilo.operators.fft import centred_fft_axis, fft2c, ifft2c


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
