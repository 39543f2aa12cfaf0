r"""ESPIRiT coil-sensitivity estimation from a rectangular calibration region.

Implements the eigenvalue approach of Uecker et al., "ESPIRiT - an eigenvalue approach to
autocalibrating parallel MRI: where SENSE meets GRAPPA", MRM 71:990-1001 (2014), for one set of
maps, with a calibration region that may be a rectangle (fastMRI column masks fully sample all
rows of only a few centre columns, which ``sigpy.mri.app.EspiritCalib``'s square ``calib_width``
cannot use).

Conventions (the fastMRI / sigpy ones): k-space is centred, DC at ``(H // 2, W // 2)``, and the
image is the centred orthonormal inverse FFT
``fftshift(ifft2(ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))``.

Algorithm, for a calibration block ``y`` of shape ``(C, n_r, n_c)`` (rows limited to ``max_rows``
centred on ``H // 2``) and kernel ``(k_h, k_w)`` with ``k <= (n + 1) // 2`` per axis:

1. Calibration (Hankel) matrix ``A`` of shape ``((n_r - k_h + 1)(n_c - k_w + 1), C k_h k_w)``:
   one row per kernel-sized patch position ``p``, ``A[p, (c, q)] = y_c(p + q)``.
2. SVD ``A = U \Sigma V^H`` (via the eigendecomposition of ``A^H A``); keep the ``K`` rows
   ``v_k`` of ``V^H`` with ``\sigma_k > \mathrm{threshold} \cdot \sigma_\max``. They span (an
   estimate of) the row space of ``A``, so the projection ``P = \sum_k v_k v_k^H`` leaves every
   patch of every ``S_c m``-consistent k-space unchanged.
3. Since a patch of such k-space at image location ``x`` is ``u_x[c, q] = S_c(x) e^{-2\pi i
   \langle q, x - x_0\rangle / N}``, ``P u_x = u_x`` becomes, after demodulating and summing
   over kernel positions, the per-pixel eigenvalue problem

   .. math::  \mathcal{G}(x) S(x) = S(x), \qquad
       \mathcal{G}_{cd}(x) = \frac{1}{k_h k_w} \sum_k h_{k,c}(x)\, \overline{h_{k,d}(x)},\quad
       h_{k,c}(x) = \sum_q v_k[c, q]\, e^{2\pi i \langle q, x - x_0\rangle / N},

   i.e. ``\mathcal{G} = \frac{HW}{k_h k_w} \sum_k g_k g_k^H`` with ``g_k`` the centred orthonormal
   inverse FFT of kernel ``k`` zero-padded to the full ``(H, W)`` grid (``x_0 = (H//2, W//2)``).
   Writing ``\sum_k h_{k,c} \bar h_{k,d}`` as the transform of the kernel cross-correlation
   ``R_{cd}(\delta) = \sum_k \sum_q v_k[c, q + \delta] \overline{v_k[d, q]}`` (support
   ``(2k_h - 1) \times (2k_w - 1)``) needs only ``C^2`` small correlations and one separable
   DFT to the full grid, instead of ``K C`` full-size FFTs:
   ``\mathcal{G}_{cd}(x) = \frac{1}{k_h k_w}\sum_\delta R_{cd}(\delta)
   e^{2\pi i \langle\delta, x - x_0\rangle / N}``.
4. Per pixel the Hermitian ``C \times C`` matrix ``\mathcal{G}(x)`` has eigenvalues in ``[0, 1]``;
   the eigenvector of the largest is the map (unit norm over coils, so ``\sum_c |S_c|^2 = 1``).
   Maps are zeroed where that eigenvalue is below ``crop`` (outside the object) and their phase
   is referred to coil 0: ``S \leftarrow S\, \overline{S_0} / |S_0|``.

Kernel size: with fewer patch shifts than kernel taps along an axis (``n - k + 1 < k``) the row
space of ``A`` misses part of the signal subspace, the top eigenvalue falls well below 1 inside
the object and ``crop`` blanks it (a 4-wide kernel on 5 columns cropped ~77% of a Shepp-Logan
object); hence the cap ``k <= (n + 1) // 2`` (5 columns -> 3 wide), not ``n - 1``.

Objects that reach the readout edges (:func:`readout_padding`). The DFT makes every coil image
periodic: where the object is cut by the top and bottom rows, ``S_c m`` jumps from its value on
one edge to that on the other, a jump of the *map* that no single smooth map explains. The
eigenvalue drops near those rows, ``crop`` blanks object there and the maps nearby are wrong; with
8 birdcage coils at 4x, CG-SENSE on a head filling the field of view fell from 23 dB (true maps) to
9-10 dB. When every row of the calibration columns is sampled (column masks: the readout is fully
sampled), the coil images along the readout are known exactly line by line, so they can be
embedded in a field of view twice as tall with zeros outside (inverse FFT along rows, zero-pad,
FFT): the object then ends in zeros, a jump of the *image*, which a smooth map does explain. The
maps are estimated on that grid (``max_rows`` doubled, the same k-space extent) and cut back to
the original rows. It is applied only when the object reaches the edges (the row profile of the
calibration image at the outer ``EDGE_ROWS`` rows above ``EDGE_LEVEL`` of its peak: at most
0.023 (the noise, at 20 dB SNR) for objects inside the field of view, at least 0.5 for heads cut
by it, on the tuning images of :mod:`sgilo.pipeline.research.espirit_edges` and the OOD suite's
images), because for heads inside the field of view padding cost 0.3-1.5 dB of CG-SENSE PSNR
(the abdomen phantom gained 0.2-0.5). The phase-encode direction cannot be treated so (its
lines are undersampled): objects that wrap along it still need the two-set ("soft-SENSE") maps
of the paper, which this module does not estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sgilo.operators.fft import centred_fft_axis

__all__ = [
    "EDGE_LEVEL",
    "EDGE_ROWS",
    "calibration_region",
    "espirit",
    "estimate_maps",
    "readout_padding",
]

#: outer rows (each edge) whose calibration-image level decides :func:`readout_padding`
EDGE_ROWS = 4
#: pad the readout when the calibration image's row profile there exceeds this fraction of its peak
EDGE_LEVEL = 0.15


def _single_thread_blas() -> AbstractContextManager[object]:
    """Limit BLAS/LAPACK to one thread for the small dense problems here, if threadpoolctl exists.

    The matrices are tiny (``C k_h k_w`` square, and ``H W`` separate ``C x C`` eigenproblems), so
    threads buy nothing; on a busy machine OpenBLAS's spinning threads were measured to turn a
    0.25 s call into 6-13 s.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only a speed guard
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _resolve(sl: slice, n: int, what: str) -> tuple[int, int]:
    if not isinstance(sl, slice):
        raise ValueError(f"calib {what} must be a slice, got {type(sl).__name__}")
    start, stop, step = sl.indices(n)
    if step != 1:
        raise ValueError(f"calib {what} slice must have step 1, got {step}")
    return start, max(stop, start)


def espirit(
    kspace: np.ndarray,
    calib: tuple[slice, slice],
    *,
    kernel: tuple[int, int] = (6, 6),
    threshold: float = 0.02,
    crop: float = 0.95,
    max_rows: int = 24,
    pad_readout: bool | None = None,
) -> np.ndarray:
    """ESPIRiT sensitivity maps of one slice from a (possibly rectangular) calibration region.

    Args:
        kspace: complex ``(C, H, W)`` centred multi-coil k-space of one slice.
        calib: ``(row slice, column slice)`` of the fully sampled region. Rows are limited to the
            ``max_rows`` rows centred on ``H // 2``.
        kernel: ``(k_h, k_w)`` kernel size, shrunk per axis to at most ``(n + 1) // 2`` for a
            region ``n`` samples long (so at least as many patch shifts as taps; 5 columns ->
            3-wide kernels, 24 rows -> up to 12).
        threshold: keep singular vectors with ``sigma > threshold * sigma_max``.
        crop: zero the maps where the largest eigenvalue is below this.
        max_rows: the most calibration rows used.
        pad_readout: estimate on a field of view twice as tall (module docstring); ``None``
            decides by :func:`readout_padding`. Needs a calibration region spanning every row
            (else ``ValueError`` when ``True``; ``None`` then means no padding).

    Returns:
        complex64 ``(C, H, W)`` maps, ``sum_c |S_c|^2 = 1`` where not cropped, 0 where cropped,
        phase relative to coil 0.

    Raises:
        ValueError: non-complex or non-3-D k-space, bad ``calib``/``kernel``/``max_rows``, or a
            calibration region of fewer than 3 rows or 3 columns.
    """
    kspace = np.asarray(kspace)
    if not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be complex, got dtype {kspace.dtype}")
    if kspace.ndim != 3:
        raise ValueError(f"kspace must be (C, H, W), got shape {kspace.shape}")
    n_coils, h, w = kspace.shape
    if not isinstance(calib, tuple) or len(calib) != 2:
        raise ValueError(f"calib must be a (row slice, column slice) tuple, got {calib!r}")
    if len(kernel) != 2 or min(int(kernel[0]), int(kernel[1])) < 1:
        raise ValueError(f"kernel must be two positive ints, got {kernel!r}")
    if max_rows < 3:
        raise ValueError(f"max_rows must be >= 3, got {max_rows}")

    r0, r1 = _resolve(calib[0], h, "row")
    c0, c1 = _resolve(calib[1], w, "column")
    lo = h // 2 - max_rows // 2
    r0, r1 = max(r0, lo), min(r1, lo + max_rows)
    n_r, n_c = max(r1 - r0, 0), max(c1 - c0, 0)
    if n_c < 3 or n_r < 3:
        raise ValueError(
            f"calibration region needs at least 3 rows and 3 columns, got {n_r} rows x {n_c} "
            f"columns (calib={calib!r}, max_rows={max_rows}, shape={kspace.shape})"
        )
    # At least as many patch shifts as kernel taps per axis (n - k + 1 >= k). With fewer, the
    # row space of the calibration matrix misses part of the signal subspace, the top eigenvalue
    # drops well below 1 inside the object and `crop` blanks most of it: on a 5-column region
    # a 4-wide kernel (2 shifts) crops ~77% of a Shepp-Logan object, a 3-wide one none of it.
    full_rows = calib[0].indices(h)[:2] == (0, h)
    if pad_readout is None:
        pad_readout = full_rows and readout_padding(kspace, calib[1])
    if pad_readout:
        if not full_rows:
            raise ValueError("pad_readout needs a calibration region that spans every row")
        top = h - h // 2  # row of the original image's first row on the 2H grid (centres align)
        maps = espirit(
            _pad_rows(kspace, top),
            (slice(None), calib[1]),
            kernel=kernel,
            threshold=threshold,
            crop=crop,
            max_rows=2 * max_rows,
            pad_readout=False,
        )
        return np.ascontiguousarray(maps[:, top : top + h])
    kh = min(int(kernel[0]), (n_r + 1) // 2)
    kw = min(int(kernel[1]), (n_c + 1) // 2)

    # 1. Calibration matrix: rows = patch positions, columns = (coil, ky, kx).
    block = kspace[:, r0:r1, c0:c1].astype(np.complex128)
    patches = sliding_window_view(block, (kh, kw), axis=(1, 2))  # (C, pr, pc, kh, kw)
    mat = patches.transpose(1, 2, 0, 3, 4).reshape(-1, n_coils * kh * kw)

    # 2. Signal subspace: A = U diag(sigma) V^H, from the Hermitian A^H A = V diag(sigma^2) V^H
    # (C kh kw square). Same V and sigma as an SVD; the kept sigma > 0.02 sigma_max are far above
    # the squared condition number's float64 floor, and it is cheaper than zgesdd.
    with _single_thread_blas():
        lam, vec = np.linalg.eigh(mat.conj().T @ mat)
    sv = np.sqrt(np.clip(lam[::-1], 0.0, None))  # descending singular values
    vh = vec[:, ::-1].conj().T  # rows v_k of V^H
    if sv.size == 0 or sv[0] == 0:
        return np.zeros(kspace.shape, dtype=np.complex64)
    kernels = vh[sv > threshold * sv[0]].reshape(-1, n_coils, kh, kw)  # (K, C, kh, kw)

    # 3. Kernel cross-correlation R_cd(delta) by zero-padded FFT (no wrap-around at 2k - 1).
    lh, lw = 2 * kh - 1, 2 * kw - 1
    spec = np.fft.fft2(kernels, s=(lh, lw))  # (K, C, lh, lw)
    # corr[c, d, dy % lh, dx % lw] = R_cd(dy, dx)
    corr = np.fft.ifft2(np.einsum("kcij,kdij->cdij", spec, spec.conj()))
    dy = np.rint(np.fft.fftfreq(lh, 1.0 / lh))
    dx = np.rint(np.fft.fftfreq(lw, 1.0 / lw))
    ey = np.exp(2j * np.pi * np.outer(np.arange(h) - h // 2, dy) / h)  # (H, lh)
    ex = np.exp(2j * np.pi * np.outer(np.arange(w) - w // 2, dx) / w)  # (W, lw)
    tmp = np.einsum("cdij,xj->cdix", corr, ex)
    gram = np.einsum("yi,cdix->yxcd", ey, tmp) / (kh * kw)  # (H, W, C, C)
    gram = 0.5 * (gram + gram.conj().swapaxes(-1, -2))  # exact Hermitian symmetry for eigh

    # 4. Top eigenvector per pixel, crop, phase reference to coil 0.
    with _single_thread_blas():
        evals, evecs = np.linalg.eigh(gram)
    maps = evecs[..., -1]  # (H, W, C), unit norm
    top = evals[..., -1]
    ref = maps[..., :1]
    mag = np.abs(ref)
    phase = np.divide(ref.conj(), mag, out=np.ones_like(ref), where=mag > 0)
    maps = maps * phase * (top >= crop)[..., None]
    return np.ascontiguousarray(maps.transpose(2, 0, 1)).astype(np.complex64)


def _pad_rows(kspace: np.ndarray, top: int) -> np.ndarray:
    """``(C, H, W)`` k-space of the same coil images embedded at rows ``top…top+H-1`` of a
    field of view ``2H`` rows tall with zeros elsewhere: ``(C, 2H, W)`` complex128. Samples at
    the original rows' spatial frequencies keep their values (times ``sqrt(2)``, the orthonormal
    scaling of a longer FFT; the maps are normalized, so it does not matter)."""
    c, h, w = kspace.shape
    big = np.zeros((c, 2 * h, w), dtype=np.complex128)
    big[:, top : top + h] = centred_fft_axis(kspace, -2, inverse=True)
    return centred_fft_axis(big, -2)


def readout_padding(kspace: np.ndarray, columns: slice) -> bool:
    """Whether the object reaches the top or bottom rows (module docstring).

    Args:
        kspace: complex ``(C, H, W)`` centred k-space of one slice.
        columns: the calibration columns (every row of them sampled).

    Returns:
        ``True`` when ``max(p[:EDGE_ROWS], p[-EDGE_ROWS:]) > EDGE_LEVEL * max(p)`` for the row
        profile ``p(y) = (sum_c sum_x |I_c(y, x)|^2)^(1/2)`` of the image ``I_c`` of the
        calibration columns alone (full resolution along the readout), computed by Parseval
        from the hybrid space ``(y, k_x)`` without the FFT along columns.
    """
    block = np.asarray(kspace)[:, :, columns].astype(np.complex128)
    hybrid = centred_fft_axis(block, -2, inverse=True)
    profile = np.sqrt((np.abs(hybrid) ** 2).sum(axis=(0, 2)))
    if profile.size < 2 * EDGE_ROWS + 1 or profile.max() <= 0:
        return False
    edge = max(profile[:EDGE_ROWS].max(), profile[-EDGE_ROWS:].max())
    return bool(edge > EDGE_LEVEL * profile.max())


def calibration_region(mask: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Fully sampled centre region of a sampling mask.

    Args:
        mask: ``(W,)`` bool column mask (all rows of a sampled column are sampled), or a 2-D
            mask broadcastable to ``shape`` (e.g. ``(H, W)`` or ``(1, W)``).
        shape: ``(H, W)`` of the k-space grid.

    Returns:
        ``(row slice, column slice)``: for a column mask all rows and the contiguous sampled
        run of columns containing ``W // 2``; for a 2-D mask the largest-area fully sampled
        rectangle containing ``(H // 2, W // 2)``.

    Raises:
        ValueError: wrong mask shape/rank or an unsampled centre.
    """
    h, w = (int(s) for s in shape)
    m = np.asarray(mask).astype(bool)
    if m.ndim == 1:
        if m.shape[0] != w:
            raise ValueError(f"column mask must have length W={w}, got {m.shape}")
        m = np.broadcast_to(m[None, :], (h, w))
    elif m.ndim == 2:
        try:
            m = np.broadcast_to(m, (h, w))
        except ValueError as exc:
            raise ValueError(f"mask of shape {m.shape} does not fit k-space {(h, w)}") from exc
    else:
        raise ValueError(f"mask must be 1-D (W,) or 2-D (H, W), got shape {m.shape}")
    cy, cx = h // 2, w // 2
    if not m[cy, cx]:
        raise ValueError(f"k-space centre ({cy}, {cx}) is not sampled by the mask")

    # Columns whose centre row is sampled, contiguous around cx.
    row = m[cy]
    left = cx
    while left > 0 and row[left - 1]:
        left -= 1
    right = cx + 1
    while right < w and row[right]:
        right += 1
    cols = m[:, left:right]  # (H, n) all True on row cy
    # Per column, the contiguous run of sampled rows containing cy: [top, bot).
    above = cols[:cy][::-1]
    below = cols[cy:]
    n_up = np.where(above.all(axis=0), cy, np.argmin(above, axis=0))
    n_dn = np.where(below.all(axis=0), h - cy, np.argmin(below, axis=0))
    top, bot = cy - n_up, cy + n_dn
    # Rectangle columns [a, b] with a <= cx <= b: rows = [max top, min bot).
    k = cx - left
    top_l = np.maximum.accumulate(top[: k + 1][::-1])[::-1]  # max over a..k
    bot_l = np.minimum.accumulate(bot[: k + 1][::-1])[::-1]
    top_r = np.maximum.accumulate(top[k:])  # max over k..b
    bot_r = np.minimum.accumulate(bot[k:])
    t = np.maximum(top_l[:, None], top_r[None, :])
    b = np.minimum(bot_l[:, None], bot_r[None, :])
    width = (np.arange(k, len(top))[None, :] - np.arange(k + 1)[:, None]) + 1
    area = width * (b - t)
    ia, ib = np.unravel_index(np.argmax(area), area.shape)
    return slice(int(t[ia, ib]), int(b[ia, ib])), slice(left + int(ia), left + k + int(ib) + 1)


def estimate_maps(
    kspace: np.ndarray,
    mask: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    **kw: object,
) -> np.ndarray:
    """ESPIRiT maps slice by slice.

    Args:
        kspace: complex ``(slices, C, H, W)`` centred k-space.
        mask: column mask ``(W,)`` or 2-D mask (see :func:`calibration_region`), shared by all
            slices.
        progress: called with ``(done, slices)`` after each slice.
        **kw: keyword arguments of :func:`espirit` (``kernel``, ``threshold``, ``crop``,
            ``max_rows``).

    Returns:
        complex64 ``(slices, C, H, W)`` maps.
    """
    kspace = np.asarray(kspace)
    if kspace.ndim != 4:
        raise ValueError(f"kspace must be (slices, C, H, W), got shape {kspace.shape}")
    calib = calibration_region(mask, kspace.shape[-2:])
    out = np.empty(kspace.shape, dtype=np.complex64)
    for i, ksl in enumerate(kspace):
        out[i] = espirit(ksl, calib, **kw)  # type: ignore[arg-type]
        if progress:
            progress(i + 1, len(kspace))
    return out
