"""The torch wavelet transform against PyWavelets/sigpy, and the batched ℓ1-wavelet FISTA against
sigpy's operators run slice by slice.

Measured when written (torch 2.13, sigpy 0.1.27, PyWavelets 1.9): coefficients, ``ΨᴴΨx`` and the
shrinkage ``Ψᴴ soft(Ψ x)`` agree with sigpy's ``Wavelet`` to 2e-15 (relative 6e-16) for 128²,
64×48, 33×29, 6×6 and 5×40 complex128 images.
"""

from __future__ import annotations

import numpy as np
import pytest
import sigpy as sp
import sigpy.mri as mr
import torch

from sgilo.operators.masks import column_mask
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.algorithms.wavelet import Wavelet2D, max_level, soft_threshold
from sgilo.pipeline.algorithms.wavelet_least_squares import wavelet_l1_least_squares
from sgilo.pipeline.experiment import make_operator
from sgilo.pipeline.simulate import simulate_acquisition
from sgilo.pipeline.solvers.classical import _sigpy_start, cycle_shifts

SHAPES = [(128, 128), (64, 48), (33, 29), (6, 6), (5, 40)]


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_coefficients_are_sigpys(shape):
    """The same multiset of coefficients as sigpy's ``Wavelet`` (PyWavelets' ``wavedecn``, zero
    mode, most levels, an odd side padded at its start): sorted moduli equal, sigpy's array
    holding only padding zeros beyond them."""
    x = _image(shape)
    ours = Wavelet2D(shape)(torch.from_numpy(x)[None])
    ours = np.sort(np.abs(np.concatenate([c.numpy().ravel() for c in ours])))
    ref = np.sort(np.abs(sp.linop.Wavelet(shape, wave_name="db4")(x).ravel()))
    assert np.all(ref[: ref.size - ours.size] == 0)
    np.testing.assert_allclose(ours, ref[ref.size - ours.size :], rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", SHAPES)
def test_shrinkage_is_sigpys_and_the_adjoint_inverts(shape):
    """``Ψᴴ Ψ x = x`` (an isometry) and ``Ψᴴ soft(Ψ x)`` equals sigpy's ``psi.H(soft(psi(x)))``:
    so the adjoint is PyWavelets' ``waverecn`` (layout-free comparisons)."""
    x = _image(shape, seed=1)
    psi = Wavelet2D(shape)
    c = psi(torch.from_numpy(x)[None])
    np.testing.assert_allclose(psi.adjoint(c)[0].numpy(), x, rtol=0, atol=1e-13)
    ours = psi.adjoint([soft_threshold(v, 0.7) for v in c])[0].numpy()
    ref_op = sp.linop.Wavelet(shape, wave_name="db4")
    ref = ref_op.H(sp.soft_thresh(0.7, ref_op(x)))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    assert np.abs(ours - x).max() > 0.1  # the threshold did something


@pytest.mark.parametrize("name", ["haar", "db2", "coif1", "sym5"])
@pytest.mark.parametrize("shape", [(33, 29), (64, 40)])
def test_adjoint_is_the_transpose_for_other_wavelets(name, shape):
    """The adjoint's polyphase form holds for any even filter length (2, 4, 6, 10 taps here): the
    dot-product test ``⟨Ψ x, c⟩ = ⟨x, Ψᴴ c⟩`` and ``Ψᴴ Ψ = I``, in float64."""
    psi = Wavelet2D(shape, name=name)
    x = torch.from_numpy(_image(shape, seed=2))[None]
    c = [torch.randn_like(v) for v in psi(x)]
    left = sum((u * v.conj()).sum() for u, v in zip(psi(x), c, strict=True))
    right = (x * psi.adjoint(c).conj()).sum()
    torch.testing.assert_close(left, right, rtol=1e-12, atol=0)
    # sym5's tabulated taps are orthogonal to about 1e-12 only (the transposed-convolution form
    # gave the same 1.4e-12)
    torch.testing.assert_close(psi.adjoint(psi(x)), x, rtol=0, atol=1e-11)


def test_batch_and_real_images_and_levels():
    """Slices of a batch are transformed independently, real images stay real, and the level
    is PyWavelets' ``dwtn_max_level`` (0: the identity)."""
    import pywt

    x = torch.from_numpy(np.stack([_image((32, 32), s) for s in range(3)]))
    psi = Wavelet2D((32, 32))
    batch = psi(x)
    for b in range(3):
        alone = psi(x[b : b + 1])
        for u, v in zip(batch, alone, strict=True):
            torch.testing.assert_close(u[b : b + 1], v, rtol=0, atol=0)
    real = psi(x.real)
    assert all(not c.is_complex() for c in real)
    torch.testing.assert_close(real[0], batch[0].real, rtol=0, atol=1e-14)
    for n in (5, 7, 13, 14, 28, 100, 128, 256):
        assert max_level(n, 8) == pywt.dwt_max_level(n, 8), n
    assert Wavelet2D((6, 6)).level == 0
    torch.testing.assert_close(Wavelet2D((6, 6))(x[:, :6, :6])[0], x[:, :6, :6])


def test_bad_arguments():
    with pytest.raises(ValueError, match="not orthogonal"):
        Wavelet2D((32, 32), name="bior2.2")
    with pytest.raises(ValueError, match="level"):
        Wavelet2D((32, 32), level=-1)
    psi = Wavelet2D((32, 32))
    with pytest.raises(ValueError, match="coefficient tensors"):
        psi.adjoint(psi(torch.zeros(1, 32, 32))[:-1])


def _sigpy_fista(y, maps, mask, lam, x0, iterations, shifts):
    """The reference: FISTA with sigpy's ``Sense`` and ``Wavelet`` for one slice, shifted by
    numpy's ``roll`` (what the solver did before it was batched in torch)."""
    a = mr.linop.Sense(maps, weights=mask)
    psi = sp.linop.Wavelet(a.ishape, wave_name="db4")
    state = np.random.get_state()  # noqa: NPY002 - MaxEig draws its start from the global state
    np.random.seed(0)  # noqa: NPY002
    try:
        step = 1 / sp.app.MaxEig(a.N, dtype=np.complex128, show_pbar=False).run()
    finally:
        np.random.set_state(state)  # noqa: NPY002
    x = z = x0
    theta = 1.0
    for k in range(iterations):
        v = z - step * a.H(a(z) - y)
        s = shifts[k]
        c = sp.soft_thresh(step * lam, psi(np.roll(v, s, axis=(0, 1))))
        x_next = np.roll(psi.H(c), (-s[0], -s[1]), axis=(0, 1))
        theta_next = (1 + np.sqrt(1 + 4 * theta * theta)) / 2
        z = x_next + ((theta - 1) / theta_next) * (x_next - x)
        x, theta = x_next, theta_next
    return x


def test_batched_fista_is_sigpys_slice_by_slice():
    """Two different 8-coil slices in one batch, each with its own λ and step: the torch FISTA
    with cycle spinning equals sigpy's operators run per slice to rounding (measured 3e-15
    relative after 12 iterations)."""
    rng = np.random.default_rng(4)
    mags = np.abs(_image((2, 48, 48), seed=5)) * (rng.random((1, 48, 48)) > 0.3)
    acq = simulate_acquisition(
        mags, acceleration=4, center_fraction=0.08, num_coils=8, snr_db=30.0, seed=2
    )
    y, op = make_operator(acq)
    y = y.to(torch.complex128)
    x0 = op.A_adjoint(y).to(torch.complex128)
    lam = torch.tensor([0.05, 0.002], dtype=torch.float64)
    iterations = 12
    shifts = cycle_shifts(iterations)
    seen: list[int] = []
    ours = wavelet_l1_least_squares(
        y,
        op,
        lam,
        x0,
        iterations,
        start=_sigpy_start((48, 48)).expand(2, 48, 48),
        shifts=shifts,
        on_iteration=seen.append,
    )
    assert seen == list(range(1, iterations + 1))
    mask = np.broadcast_to(acq.mask, (48, 48)).astype(np.float64)
    for b in range(2):
        maps = np.asarray(acq.maps[b] if acq.maps.ndim == 4 else acq.maps, dtype=np.complex128)
        ref = _sigpy_fista(
            y[b].numpy(), maps, mask, float(lam[b]), x0[b].numpy(), iterations, shifts
        )
        scale = np.abs(ref).max()
        assert np.abs(ours[b].numpy() - ref).max() < 1e-10 * scale, b
        assert np.abs(ref - x0[b].numpy()).max() > 1e-2 * scale  # it moved from the start


@pytest.mark.parametrize("coils", [None, 4])
@pytest.mark.parametrize(
    ("method", "inner"),
    [
        ("l1_wavelet", "wavelet_l1_least_squares"),
        ("total_variation", "anisotropic_tv_least_squares"),
    ],
)
def test_chunks_of_slices_give_the_batch_result(coils, method, inner, monkeypatch):
    """On the CPU the ℓ1-wavelet and TV solvers run slices in chunks that fit in cache
    (``L1_CHUNK_BYTES``): chunks of one slice, and of 2 + 1, with per-slice masks and (for
    multi-coil data) per-slice maps and λ, give what one batch gives."""
    import sgilo.pipeline.solvers.classical as classical
    import sgilo.pipeline.solvers.slice_chunks as slice_chunks

    h = w = 48
    phantom = np.abs(sp.shepp_logan((h, w)))
    mags = np.stack([phantom, 0.5 * phantom.T, np.roll(phantom, 5, axis=0)])
    x = torch.from_numpy(mags * np.exp(0.3j * np.arange(w) / w)).to(torch.complex64)
    masks = torch.from_numpy(
        np.stack([column_mask("random", w, 0.08, 4, seed=s) for s in (1, 2, 3)])
    ).float()
    masks = masks[:, None, :].expand(3, h, w).contiguous()
    assert not torch.equal(masks[0], masks[1])  # a mask per slice
    if coils is None:
        op = SingleCoilMRI(masks)
    else:
        acq = simulate_acquisition(mags, acceleration=4, center_fraction=0.08, num_coils=coils)
        maps = torch.from_numpy(np.asarray(acq.maps)).to(torch.complex64)
        maps = torch.stack([maps, maps.roll(3, dims=-1), maps.conj()])  # maps per slice
        op = MultiCoilMRI(maps, masks)
    y = op.A(x)
    lam = torch.tensor([0.01, 0.03, 0.002])
    calls: list[int] = []
    solver = getattr(classical, inner)
    reconstruct = getattr(classical, method)

    def counted(data, *args, **kwargs):
        calls.append(data.shape[0])
        return solver(data, *args, **kwargs)

    monkeypatch.setattr(classical, inner, counted)
    batch = reconstruct(y, op, lam=lam, iterations=12).image
    assert calls == [3]
    per_slice = h * w * (1 if coils is None else coils) * torch.complex128.itemsize
    for chunk, sizes in ((1, [1, 1, 1]), (2, [2, 1])):
        calls.clear()
        monkeypatch.setattr(slice_chunks, "L1_CHUNK_BYTES", chunk * per_slice)
        chunked = reconstruct(y, op, lam=lam, iterations=12).image
        assert calls == sizes
        torch.testing.assert_close(chunked, batch, rtol=0, atol=1e-10)
    assert not torch.allclose(batch[0], batch[1])
    # the limit is in bytes: the room of one complex128 slice holds two complex64 ones
    calls.clear()
    monkeypatch.setattr(slice_chunks, "L1_CHUNK_BYTES", per_slice)
    reconstruct(y, op, lam=lam, iterations=2, dtype=torch.complex64)
    assert calls == [2, 1]


def test_needs_a_shift_per_iteration():
    op_y = torch.zeros(1, 16, 16, dtype=torch.complex128)
    with pytest.raises(ValueError, match="shifts"):
        wavelet_l1_least_squares(op_y, None, 0.1, op_y, 5, start=op_y, shifts=cycle_shifts(4))


@pytest.mark.parametrize("dtype", [torch.complex128, torch.float64, torch.complex64])
@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 31, 40), (2, 5, 6)])
def test_shrink_equals_thresholding_the_coefficient_list(dtype, shape):
    """``shrink`` against the adjoint of the soft-thresholded coefficient list, with one
    threshold per image (a swapped real/imaginary pairing or a band left unshrunk shows), on
    odd sides and on an image too small for any level (``J = 0``)."""
    torch.manual_seed(0)
    psi = Wavelet2D(shape[-2:])
    x = torch.randn(*shape, dtype=dtype)
    t = torch.tensor([0.0, 0.4, 1.5][: shape[0]], dtype=x.real.dtype)
    coefficients = psi(x)
    shrunk = [soft_threshold(c, t.reshape(-1, *[1] * (c.dim() - 1))) for c in coefficients]
    expected = psi.adjoint(shrunk)
    out = psi.shrink(x, t)
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)
    torch.testing.assert_close(out[0], x[0], rtol=tol, atol=tol)  # t = 0: Ψᴴ Ψ = I
    assert (out[1:] - x[1:]).abs().max() > 0.1  # the others really shrunk
    torch.testing.assert_close(psi.shrink(x, 0.4)[1], out[1], rtol=tol, atol=tol)  # a number
