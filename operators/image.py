"""The natural-image forward models of the ILO/SGILO papers, as :class:`LinearOperator` subclasses.

Every operator acts on real images ``x`` of shape ``(B, C, H, W)`` (``C`` is 1 or 3 in practice),
keeps its parameters (mask, filter, sensing matrix, ...) as buffers fixed at construction, and has
a hand-written adjoint. Buffers are created in ``dtype`` (float32 by default); on every call they
are cast to the input's dtype, so a float64 input gives a float64 output. Denoising is
:class:`sgilo.operators.base.Identity`; measurement noise lives in :mod:`sgilo.operators.noise`.
Every one has ``kind == "image"``; ``normal_norm`` is exact for inpainting (``max M² = 1``) and
colorization (``Σ_c w_c²``) and the power iteration for the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sgilo.operators.base import (
    DEFAULT_ITERATIONS,
    LinearOperator,
    OperatorKind,
    real_dtype_of,
    require_finite,
)

ImageShape = tuple[int, int, int]


class ImageOperator(LinearOperator):
    """A natural-image operator of the papers' baseline suite: real images ``(B, C, H, W)``, real
    measurements; ``kind == "image"``."""

    @property
    def kind(self) -> OperatorKind:
        return "image"


# -- validation -----------------------------------------------------------------------------------
def _image_shape(shape: Sequence[int], who: str) -> ImageShape:
    dims = tuple(shape)
    ok = len(dims) == 3 and all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 1 for s in dims
    )
    if not ok:
        raise ValueError(f"{who}: expected an image shape (C, H, W) of positive ints, got {dims}")
    return int(dims[0]), int(dims[1]), int(dims[2])


def _positive_int(value: int, who: str, name: str, low: int = 1, high: int | None = None) -> int:
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{who}: expected {name} an integer {bound}, got {value!r}")
    return int(value)


def _require_real(x: torch.Tensor, who: str) -> None:
    if torch.is_complex(x) or not torch.is_floating_point(x):
        raise ValueError(f"{who}: expected a real floating-point image, got dtype {x.dtype}")


# -- inpainting -----------------------------------------------------------------------------------
def random_pixel_mask(
    shape: Sequence[int], observed_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """A 0/1 float32 mask of ``shape`` (e.g. ``(H, W)``) observing exactly
    ``round(observed_fraction * numel)`` entries chosen uniformly at random."""
    if not 0.0 <= observed_fraction <= 1.0:
        raise ValueError(f"observed_fraction must be in [0, 1], got {observed_fraction!r}")
    numel = math.prod(shape)
    chosen = torch.randperm(numel, generator=generator, device=generator.device).cpu()
    chosen = chosen[: round(observed_fraction * numel)]
    mask = torch.zeros(numel, dtype=torch.float32)
    mask[chosen] = 1.0
    return mask.reshape(tuple(shape))


def box_mask(shape: Sequence[int], box: tuple[int, int, int, int]) -> torch.Tensor:
    """A float32 mask of ``shape = (..., H, W)``: ones everywhere except a removed rectangle.

    ``box = (top, left, height, width)`` in pixels; it must lie inside the image.
    """
    if len(shape) < 2:
        raise ValueError(f"box_mask: expected shape (..., H, W), got {tuple(shape)}")
    height, width = shape[-2], shape[-1]
    top, left, bh, bw = box
    if bh < 1 or bw < 1 or top < 0 or left < 0 or top + bh > height or left + bw > width:
        raise ValueError(
            f"box_mask: expected box (top, left, height, width) of positive size inside a "
            f"{height}x{width} image, got {tuple(box)}"
        )
    mask = torch.ones(tuple(shape), dtype=torch.float32)
    mask[..., top : top + bh, left : left + bw] = 0.0
    return mask


class Inpainting(ImageOperator):
    """``y = M ⊙ x``: keep the observed pixels, zero the rest (self-adjoint).

    ``mask``: 0/1 values, ``(H, W)`` (shared by all ``channels``, default 3) or ``(C, H, W)``.
    Input ``x``: real, ``(B, C, H, W)`` → output real ``(B, C, H, W)``.
    """

    mask: torch.Tensor

    def __init__(
        self, mask: torch.Tensor, channels: int | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        mask = torch.as_tensor(mask)
        if mask.ndim == 2:
            c = 3 if channels is None else _positive_int(channels, "Inpainting", "channels")
            mask = mask.expand(c, *mask.shape)
        elif mask.ndim == 3:
            if channels is not None and channels != mask.shape[0]:
                raise ValueError(
                    f"Inpainting: channels={channels} disagrees with mask of shape "
                    f"{tuple(mask.shape)}"
                )
        else:
            raise ValueError(
                f"Inpainting: expected mask (H, W) or (C, H, W), got {tuple(mask.shape)}"
            )
        if torch.is_complex(mask):
            raise ValueError("Inpainting: expected a real 0/1 mask, got a complex one")
        require_finite(mask.to(torch.float64), "Inpainting mask")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("Inpainting: expected a mask of 0/1 values, got other values")
        super().__init__(mask.shape, mask.shape)
        self.register_buffer("mask", mask.to(dtype).contiguous())

    @classmethod
    def random_pixels(
        cls,
        shape: Sequence[int],
        observed_fraction: float,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ) -> Inpainting:
        """Random pixels of a ``(C, H, W)`` image, the same pixels observed in every channel."""
        c, h, w = _image_shape(shape, "Inpainting.random_pixels")
        return cls(random_pixel_mask((h, w), observed_fraction, generator), channels=c, dtype=dtype)

    @classmethod
    def box(
        cls,
        shape: Sequence[int],
        box: tuple[int, int, int, int],
        dtype: torch.dtype = torch.float32,
    ) -> Inpainting:
        """A ``(C, H, W)`` image with the rectangle ``box = (top, left, height, width)`` removed."""
        c, h, w = _image_shape(shape, "Inpainting.box")
        return cls(box_mask((h, w), box), channels=c, dtype=dtype)

    def num_measurements(self, batch: int) -> torch.Tensor:
        """The observed entries (mask 1) per image, float64 ``(batch,)``."""
        return torch.full((batch,), float((self.mask > 0).sum()), dtype=torch.float64)

    def normal_norm(
        self, batch: int = 1, dtype: torch.dtype | None = None, iterations: int = DEFAULT_ITERATIONS
    ) -> torch.Tensor:
        """Exactly ``max M²`` (``AᴴA = M²``): 1, or 0 for a mask that observes nothing."""
        return self.mask.pow(2).amax().expand(batch).to(real_dtype_of(dtype))

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        _require_real(x, "Inpainting")
        return self.mask.to(x.dtype) * x

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        return self._A(y)


# -- super-resolution -----------------------------------------------------------------------------
def _keys_cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (Matlab/PIL "bicubic")."""
    a = np.abs(t)
    near = 1.5 * a**3 - 2.5 * a**2 + 1.0
    far = -0.5 * a**3 + 2.5 * a**2 - 4.0 * a + 2.0
    return np.where(a <= 1.0, near, np.where(a < 2.0, far, 0.0))


def bicubic_taps(factor: int) -> tuple[np.ndarray, int]:
    """Anti-aliased bicubic filter for downsampling by ``factor``: ``(weights, first_offset)``.

    Output sample ``i`` sits at input coordinate ``c_i = i·f + (f - 1)/2`` (pixel centres
    aligned, as in Matlab's ``imresize``) and equals ``Σ_k w[k] x[i·f + first_offset + k]`` with
    ``w ∝ cubic((j - c_i)/f)`` normalised to sum 1. ``factor = 1`` gives the identity.
    """
    offsets = np.arange(-2 * factor, 3 * factor)
    dist = offsets - (factor - 1) / 2.0
    inside = np.abs(dist) < 2 * factor
    weights = _keys_cubic(dist[inside] / factor)
    offsets = offsets[inside]
    nonzero = np.flatnonzero(weights)
    weights = weights[nonzero[0] : nonzero[-1] + 1]
    return weights / weights.sum(), int(offsets[nonzero[0]])


def _symmetric_index(first: int, stop: int, n: int) -> torch.Tensor:
    """Indices ``first .. stop-1`` folded into ``[0, n)`` by half-sample symmetric reflection."""
    q = np.mod(np.arange(first, stop), 2 * n)
    return torch.from_numpy(np.where(q >= n, 2 * n - 1 - q, q))


class SuperResolution(ImageOperator):
    """``y = D_f x``: anti-aliased bicubic downsampling by an integer factor ``f``.

    Separable: along each of H and W, extend the image by half-sample symmetric reflection, filter
    with the bicubic kernel stretched by ``f`` (:func:`bicubic_taps`), keep every ``f``-th sample;
    Matlab's ``imresize(x, 1/f)``. The reflection is a fixed index map, so the adjoint
    (``conv_transpose1d`` then scatter-add through that map) is exact.
    Input ``x``: real, ``(B, C, H, W)`` with ``f | H`` and ``f | W`` → real ``(B, C, H/f, W/f)``.
    """

    taps: torch.Tensor
    index_h: torch.Tensor
    index_w: torch.Tensor

    def __init__(
        self, shape: Sequence[int], factor: int, dtype: torch.dtype = torch.float32
    ) -> None:
        c, h, w = _image_shape(shape, "SuperResolution")
        f = _positive_int(factor, "SuperResolution", "factor")
        if h % f or w % f:
            raise ValueError(
                f"SuperResolution: expected H and W divisible by factor {f}, got H={h}, W={w}"
            )
        super().__init__((c, h, w), (c, h // f, w // f))
        self.factor = f
        weights, first = bicubic_taps(f)
        last = first + len(weights) - 1  # offset of the last tap
        pad_after = max(0, last - f + 1)
        self.register_buffer("taps", torch.from_numpy(weights).to(dtype))
        self.register_buffer("index_h", _symmetric_index(first, h + pad_after, h))
        self.register_buffer("index_w", _symmetric_index(first, w + pad_after, w))

    def _down(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Filter and subsample the last axis: ``(..., N) -> (..., N/f)``."""
        lead = x.shape[:-1]
        padded = x.index_select(-1, index).reshape(-1, 1, index.numel())
        taps = self.taps.to(x.dtype).view(1, 1, -1)
        return F.conv1d(padded, taps, stride=self.factor).reshape(*lead, -1)

    def _down_adjoint(self, y: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
        """Adjoint of :meth:`_down`: ``(..., N/f) -> (..., N)``."""
        lead = y.shape[:-1]
        taps = self.taps.to(y.dtype).view(1, 1, -1)
        z = F.conv_transpose1d(y.reshape(-1, 1, y.shape[-1]), taps, stride=self.factor)
        z = F.pad(z, (0, index.numel() - z.shape[-1]))
        out = z.new_zeros(z.shape[0], 1, n).index_add_(-1, index, z)
        return out.reshape(*lead, n)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        _require_real(x, "SuperResolution")
        x = self._down(x, self.index_w)
        return self._down(x.transpose(-1, -2), self.index_h).transpose(-1, -2)

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        _require_real(y, "SuperResolution")
        _, h, w = self.ishape
        y = self._down_adjoint(y.transpose(-1, -2), self.index_h, h).transpose(-1, -2)
        return self._down_adjoint(y, self.index_w, w)


# -- compressed sensing ---------------------------------------------------------------------------
class GaussianCompressedSensing(ImageOperator):
    """``y = A vec(x)`` with a dense ``A ∈ R^{m×n}``, ``A_ij ~ N(0, 1/m)`` i.i.d., ``n = C·H·W``.

    Normalisation: ``E_A ‖A x‖² = ‖x‖²``. Meant for small images (``A`` has ``m·n`` entries).
    Input ``x``: real, ``(B, C, H, W)`` → real ``(B, m)``.
    """

    matrix: torch.Tensor

    def __init__(
        self,
        shape: Sequence[int],
        m: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        dims = _image_shape(shape, "GaussianCompressedSensing")
        n = math.prod(dims)
        m = _positive_int(m, "GaussianCompressedSensing", "m", 1, n)
        super().__init__(dims, (m,))
        a = torch.randn(m, n, generator=generator, dtype=torch.float64, device=generator.device)
        self.register_buffer("matrix", (a / math.sqrt(m)).to(dtype))

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        _require_real(x, "GaussianCompressedSensing")
        return x.reshape(x.shape[0], -1) @ self.matrix.to(x.dtype).T

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        _require_real(y, "GaussianCompressedSensing")
        return (y @ self.matrix.to(y.dtype)).reshape(y.shape[0], *self.ishape)


class PartialCirculant(ImageOperator):
    """``y = P_Ω (g ⊛ (s ⊙ vec(x)))``: subsampled circular convolution with random sign flips.

    ``vec(x)`` has length ``n = C·H·W``; ``s ∈ {±1}^n`` random signs; ``g ∈ R^n`` with
    ``g_k ~ N(0, 1/m)``; ``(g ⊛ u)_i = Σ_j g_{(i-j) mod n} u_j`` computed as
    ``irfft(rfft(g)·rfft(u), n)`` over the full length ``n``; ``P_Ω`` keeps the ``m`` rows in the
    random sorted subset ``Ω``. Every row of the implied matrix has ``N(0, 1/m)`` entries, so
    ``E_g ‖A x‖² = ‖x‖²``, as for :class:`GaussianCompressedSensing` (rows are not independent).
    The adjoint is ``s ⊙ (g ⋆ P_Ωᵀ y)``, circular correlation via ``conj(rfft(g))``.
    Input ``x``: real, ``(B, C, H, W)`` → real ``(B, m)``.
    """

    signs: torch.Tensor
    kernel: torch.Tensor
    rows: torch.Tensor

    def __init__(
        self,
        shape: Sequence[int],
        m: int,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        dims = _image_shape(shape, "PartialCirculant")
        n = math.prod(dims)
        m = _positive_int(m, "PartialCirculant", "m", 1, n)
        super().__init__(dims, (m,))
        device = generator.device
        signs = torch.randint(0, 2, (n,), generator=generator, device=device) * 2 - 1
        kernel = torch.randn(n, generator=generator, dtype=torch.float64, device=device)
        rows = torch.randperm(n, generator=generator, device=device)[:m].sort().values
        self.register_buffer("signs", signs.to(dtype))
        self.register_buffer("kernel", (kernel / math.sqrt(m)).to(dtype))
        self.register_buffer("rows", rows)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        _require_real(x, "PartialCirculant")
        n = self.signs.numel()
        u = x.reshape(x.shape[0], n) * self.signs.to(x.dtype)
        g_hat = torch.fft.rfft(self.kernel.to(x.dtype), n=n)
        conv = torch.fft.irfft(torch.fft.rfft(u, n=n, dim=-1) * g_hat, n=n, dim=-1)
        return conv[:, self.rows]

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        _require_real(y, "PartialCirculant")
        n = self.signs.numel()
        full = y.new_zeros(y.shape[0], n)
        full[:, self.rows] = y
        g_hat = torch.fft.rfft(self.kernel.to(y.dtype), n=n)
        corr = torch.fft.irfft(torch.fft.rfft(full, n=n, dim=-1) * g_hat.conj(), n=n, dim=-1)
        return (corr * self.signs.to(y.dtype)).reshape(y.shape[0], *self.ishape)


# -- colorization ---------------------------------------------------------------------------------
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)


class Colorization(ImageOperator):
    """``y = 0.2989 R + 0.5870 G + 0.1140 B`` (Matlab's ``rgb2gray``; the weights sum to 0.9999).

    ``shape`` must be ``(3, H, W)``. Input ``x``: real, ``(B, 3, H, W)`` → real ``(B, 1, H, W)``.
    """

    weights: torch.Tensor

    def __init__(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> None:
        c, h, w = _image_shape(shape, "Colorization")
        if c != 3:
            raise ValueError(f"Colorization: expected an RGB shape (3, H, W), got {tuple(shape)}")
        super().__init__((3, h, w), (1, h, w))
        self.register_buffer("weights", torch.tensor(LUMA_WEIGHTS, dtype=dtype))

    def normal_norm(
        self, batch: int = 1, dtype: torch.dtype | None = None, iterations: int = DEFAULT_ITERATIONS
    ) -> torch.Tensor:
        """Exactly ``Σ_c w_c²`` (per pixel ``AᴴA = w wᵀ``, of rank one)."""
        return self.weights.pow(2).sum().expand(batch).to(real_dtype_of(dtype))

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        _require_real(x, "Colorization")
        return torch.einsum("c,bchw->bhw", self.weights.to(x.dtype), x).unsqueeze(1)

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        _require_real(y, "Colorization")
        return self.weights.to(y.dtype).view(1, 3, 1, 1) * y
