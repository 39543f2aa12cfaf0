"""The one-axis numpy transform agrees with the 2-D torch ones (operators/fft.py)."""

import numpy as np
import torch

from sgilo.operators.fft import centred_fft_axis, fft2c


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
