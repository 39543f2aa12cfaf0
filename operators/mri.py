"""MRI forward models: single-coil and SENSE multi-coil, Cartesian and non-Cartesian.

All act on complex images ``x`` of shape ``(B, H, W)`` (``B`` slices) and are differentiable in
torch. Cartesian k-space stays on the full grid with zeros where nothing was sampled (the fastMRI
layout); the FFT is :func:`sgilo.operators.fft.fft2c` (centred, orthonormal).

- :class:`SingleCoilMRI`:      ``y = M ⊙ F x``,                     y: ``(B, H, W)``
- :class:`MultiCoilMRI`:       ``y_c = M ⊙ F (S_c ⊙ x)``,          y: ``(B, C, H, W)``
- :class:`NonCartesianMRI`:    ``y_c = N_k (S_c ⊙ x)``,            y: ``(B, C, K)`` or ``(B, K)``

``M`` is a real sampling mask (0/1, or weights), ``S_c`` coil sensitivities, ``N_k`` sigpy's
Kaiser–Bessel NUFFT at the k-space coordinates ``k`` (sigpy units: cycles per field of view,
in ``[-N/2, N/2)``). The Cartesian operators equal ``sigpy.mri.linop.Sense(maps, weights=M)``
for a 0/1 mask, and the non-Cartesian one ``sigpy.mri.linop.Sense(maps, coord=k)``.

Each says what the solvers ask about (:class:`sgilo.operators.base.LinearOperator`): ``kind`` is
``"mri"``; ``sampling_mask`` is ``M`` (``None`` for non-Cartesian), ``coil_maps`` is ``S`` (``None``
for single-coil), ``trajectory`` is ``k`` (``None`` for Cartesian); ``normal_norm`` is analytic
for the Cartesian operators (below) and the power iteration for the NUFFT, which alone
``runs_on_cpu_only``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sgilo.operators.base import (
    DEFAULT_ITERATIONS,
    LinearOperator,
    OperatorKind,
    real_dtype_of,
    require_complex,
    require_finite,
)
from sgilo.operators.fft import column_normal, fft1c, fft2c, fft2c_columns, ifft1c, ifft2c
from sgilo.operators.sigpy_bridge import apply_sigpy_linop


def _as_mask(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Validate a sampling mask for k-space of spatial shape ``(H, W)``.

    Accepts a column mask ``(W,)``, a 2-D mask ``(H, W)`` or one mask per slice ``(B, H, W)``;
    returns a real tensor that broadcasts against ``(..., H, W)``.
    """
    mask = torch.as_tensor(mask)
    if torch.is_complex(mask):
        raise ValueError(f"sampling mask must be real (0/1 or weights), got dtype {mask.dtype}")
    h, w = shape
    if mask.ndim == 1:
        if mask.shape[0] != w:
            raise ValueError(
                f"column mask length must equal the k-space width {w}, got {mask.shape[0]}"
            )
        mask = mask.reshape(1, w).expand(h, w)
    elif mask.ndim in (2, 3):
        if tuple(mask.shape[-2:]) != (h, w):
            raise ValueError(
                f"sampling mask must have spatial shape ({h}, {w}) to match k-space, "
                f"got {tuple(mask.shape)}"
            )
    else:
        raise ValueError(
            f"sampling mask must be (W,), (H, W) or (B, H, W), got {tuple(mask.shape)}"
        )
    mask = mask.to(torch.get_default_dtype() if not mask.is_floating_point() else mask.dtype)
    require_finite(mask, "sampling mask")
    if bool((mask < 0).any()):
        raise ValueError("sampling mask must be non-negative")
    return mask.contiguous()


def _check_batch(op: LinearOperator, buffer: torch.Tensor, x: torch.Tensor, ndim: int) -> None:
    """A per-slice buffer (leading axis) must match the batch of ``x``."""
    if buffer.ndim == ndim and buffer.shape[0] != x.shape[0]:
        raise ValueError(
            f"{type(op).__name__}: operator holds {buffer.shape[0]} per-slice parameters "
            f"but got a batch of {x.shape[0]}"
        )


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.complex128 else torch.float32


def _by_column(mask: torch.Tensor) -> bool:
    """Whether a real ``(…, H, W)`` mask is the same in every row (a Cartesian column mask, one
    per slice): then ``AᴴA`` needs transforms along ``W`` only (:func:`column_normal`)."""
    return bool((mask == mask[..., :1, :]).all())


def _mask_peak(mask: torch.Tensor, batch: int, dtype: torch.dtype | None) -> torch.Tensor:
    """``max M²`` per slice of a real ``(H, W)`` or ``(B, H, W)`` mask: ``(batch,)``, in the real
    dtype of ``dtype`` (the mask's own for ``None``)."""
    peak = mask.pow(2).amax(dim=(-2, -1)).expand(batch)
    return peak.to(peak.dtype if dtype is None else real_dtype_of(dtype))


class SingleCoilMRI(LinearOperator):
    """Single-coil Cartesian MRI: ``y = M ⊙ F x``.

    x: complex ``(B, H, W)`` → y: complex ``(B, H, W)`` (zeros where not sampled).
    ``mask``: real ``(W,)`` (columns), ``(H, W)`` or ``(B, H, W)``.
    Adjoint: ``x = F^H (M ⊙ y)``.
    """

    complex_input = complex_output = True

    def __init__(self, mask: torch.Tensor, shape: tuple[int, int] | None = None) -> None:
        mask = torch.as_tensor(mask)
        if shape is None:
            if mask.ndim < 2:
                raise ValueError("a column mask (W,) needs the k-space shape (H, W) as `shape`")
            shape = (int(mask.shape[-2]), int(mask.shape[-1]))
        shape = (int(shape[0]), int(shape[1]))
        super().__init__(shape, shape)
        self.register_buffer("mask", _as_mask(mask, shape))
        self._columns_only = _by_column(self.mask)

    @property
    def kind(self) -> OperatorKind:
        return "mri"

    @property
    def sampling_mask(self) -> torch.Tensor:
        """``M``, real ``(H, W)`` or ``(B, H, W)``."""
        return self.mask

    def normal_norm(
        self, batch: int = 1, dtype: torch.dtype | None = None, iterations: int = DEFAULT_ITERATIONS
    ) -> torch.Tensor:
        """Exactly ``max M²`` per slice (``AᴴA = Fᴴ M² F`` with ``F`` unitary): 1 for a 0/1 mask
        that samples anything."""
        return _mask_peak(self.mask, batch, dtype)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        require_complex(x, "image")
        _check_batch(self, self.mask, x, 3)
        return self.mask.to(_real_dtype(x.dtype)) * fft2c(x)

    def _A_columns(self, x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``(M ⊙ F x)[..., columns]``, computing only those columns of ``F x``."""
        require_complex(x, "image")
        _check_batch(self, self.mask, x, 3)
        mask = self.mask.index_select(-1, columns).to(_real_dtype(x.dtype))
        return mask * fft2c_columns(x, columns)

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        require_complex(y, "k-space")
        _check_batch(self, self.mask, y, 3)
        return ifft2c(self.mask.to(_real_dtype(y.dtype)) * y)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        """``Fᴴ M² F x``; 1-D transforms along ``W`` for a column mask."""
        if not self._columns_only:
            return super()._normal(x)
        require_complex(x, "image")
        _check_batch(self, self.mask, x, 3)
        return column_normal(x, self.mask[..., :1, :].to(_real_dtype(x.dtype)).pow(2))

    def residual_gradient(self, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``z ↦ Fᴴ M (M F z − y)``; for a column mask with ``y`` taken once along ``H``
        (``Fᴴ M = F_Wᴴ M F_Hᴴ``), so each call runs 1-D transforms along ``W`` only."""
        if not self._columns_only:
            return super().residual_gradient(y)
        require_complex(y, "k-space")
        _check_batch(self, self.mask, y, 3)
        columns = ifft1c(y, -2)

        def gradient(z: torch.Tensor) -> torch.Tensor:
            mask = self.mask[..., :1, :].to(_real_dtype(z.dtype))
            return ifft1c(mask * (mask * fft1c(z, -1) - columns), -1)

        return gradient


def _as_maps(maps: torch.Tensor) -> torch.Tensor:
    maps = torch.as_tensor(maps)
    if not torch.is_complex(maps):
        raise ValueError(f"coil maps must be complex, got dtype {maps.dtype}")
    if maps.ndim not in (3, 4):
        raise ValueError(
            f"coil maps must have shape (C, H, W) or (B, C, H, W), got {tuple(maps.shape)}"
        )
    require_finite(maps, "coil maps")
    return maps.contiguous()


class MultiCoilMRI(LinearOperator):
    """Multi-coil SENSE Cartesian MRI: ``y_c = M ⊙ F (S_c ⊙ x)``.

    x: complex ``(B, H, W)`` → y: complex ``(B, C, H, W)``.
    ``maps``: complex ``(C, H, W)`` shared by all slices, or ``(B, C, H, W)`` one set per slice.
    ``mask``: real ``(W,)``, ``(H, W)`` or ``(B, H, W)``.
    Adjoint: ``x = Σ_c conj(S_c) ⊙ F^H (M ⊙ y_c)``.
    """

    complex_input = complex_output = True

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor) -> None:
        maps = _as_maps(maps)
        shape = (int(maps.shape[-2]), int(maps.shape[-1]))
        mask = _as_mask(mask, shape)
        if mask.ndim == 3 and maps.ndim == 4 and mask.shape[0] != maps.shape[0]:
            raise ValueError(
                f"per-slice mask has {mask.shape[0]} slices but coil maps have {maps.shape[0]}"
            )
        super().__init__(shape, (int(maps.shape[-3]), *shape))
        self.register_buffer("maps", maps)
        # (…, 1, H, W): broadcast over coils
        self.register_buffer("mask", mask.unsqueeze(-3))
        self._columns_only = _by_column(mask)

    @property
    def kind(self) -> OperatorKind:
        return "mri"

    @property
    def sampling_mask(self) -> torch.Tensor:
        """``M``, real ``(H, W)`` or ``(B, H, W)`` (the same for every coil)."""
        return self.mask[..., 0, :, :]

    @property
    def coil_maps(self) -> torch.Tensor:
        """``S``, complex ``(C, H, W)`` or ``(B, C, H, W)``."""
        return self.maps

    def normal_norm(
        self, batch: int = 1, dtype: torch.dtype | None = None, iterations: int = DEFAULT_ITERATIONS
    ) -> torch.Tensor:
        """The bound ``max M² · max_r Σ_c |S_c(r)|²`` per slice (``‖M F‖ ≤ max M`` and
        ``‖S‖² = max_r Σ_c |S_c(r)|²``): equal to ``‖AᴴA‖`` for a fully sampled mask, and an upper
        bound otherwise, tight within a percent for smooth maps and a fully sampled centre (0.996
        by the power iteration for 8 birdcage coils at 4×; exactly 1 where the coils are few
        enough that an image can hide in the sampled columns). It is 1 for normalised maps
        (``Σ_c |S_c|² = 1`` inside the object, as ESPIRiT's) and a 0/1 mask. Step sizes need
        an upper bound, and the data-consistency weight is relative to it."""
        power = self.maps.abs().pow(2).sum(dim=-3).amax(dim=(-2, -1)).expand(batch)
        power = power.to(power.dtype if dtype is None else real_dtype_of(dtype))
        return _mask_peak(self.mask[..., 0, :, :], batch, power.dtype) * power

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        require_complex(x, "image")
        _check_batch(self, self.maps, x, 4)
        _check_batch(self, self.mask, x, 4)
        coil_images = self.maps.to(x.dtype) * x.unsqueeze(1)
        return self.mask.to(_real_dtype(x.dtype)) * fft2c(coil_images)

    def _A_columns(self, x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``(M ⊙ F (S_c ⊙ x))[..., columns]``, computing only those columns of k-space."""
        require_complex(x, "image")
        _check_batch(self, self.maps, x, 4)
        _check_batch(self, self.mask, x, 4)
        coil_images = self.maps.to(x.dtype) * x.unsqueeze(1)
        mask = self.mask.index_select(-1, columns).to(_real_dtype(x.dtype))
        return mask * fft2c_columns(coil_images, columns)

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        require_complex(y, "k-space")
        _check_batch(self, self.maps, y, 4)
        _check_batch(self, self.mask, y, 4)
        coil_images = ifft2c(self.mask.to(_real_dtype(y.dtype)) * y)
        return (self.maps.to(y.dtype).conj() * coil_images).sum(dim=1)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_c S_cᴴ Fᴴ M² F (S_c x)``; 1-D transforms along ``W`` for a column mask."""
        if not self._columns_only:
            return super()._normal(x)
        require_complex(x, "image")
        _check_batch(self, self.maps, x, 4)
        _check_batch(self, self.mask, x, 4)
        maps = self.maps.to(x.dtype)
        weights = self.mask[..., :1, :].to(_real_dtype(x.dtype)).pow(2)
        coil_images = column_normal(maps * x.unsqueeze(1), weights)
        return (maps.conj() * coil_images).sum(dim=1)

    def residual_gradient(self, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``z ↦ Σ_c S_cᴴ Fᴴ M (M F (S_c z) − y_c)``; for a column mask with ``y`` taken once along
        ``H``, so each call runs 1-D transforms along ``W`` only."""
        if not self._columns_only:
            return super().residual_gradient(y)
        require_complex(y, "k-space")
        _check_batch(self, self.maps, y, 4)
        _check_batch(self, self.mask, y, 4)
        columns = ifft1c(y, -2)

        def gradient(z: torch.Tensor) -> torch.Tensor:
            maps = self.maps.to(z.dtype)
            mask = self.mask[..., :1, :].to(_real_dtype(z.dtype))
            residual = mask * fft1c(maps * z.unsqueeze(1), -1) - columns
            return (maps.conj() * ifft1c(mask * residual, -1)).sum(dim=1)

        return gradient


class NonCartesianMRI(LinearOperator):
    """Non-Cartesian MRI through sigpy's NUFFT: ``y_c = N_k (S_c ⊙ x)``.

    x: complex ``(B, H, W)`` → y: complex ``(B, C, K)`` with maps, ``(B, K)`` without (single
    coil). ``coord``: real ``(K, 2)`` (or ``(..., 2)``, flattened to ``K`` samples), sigpy units
    (cycles/FOV; the first column indexes H, the second W). ``maps``: complex ``(C, H, W)`` or
    ``(B, C, H, W)``; ``None`` for single-coil (then ``image_shape`` is required).
    Adjoint: ``x = Σ_c conj(S_c) ⊙ N_k^H y_c``. The NUFFT runs in numpy on the CPU (sigpy) and is
    differentiated through :mod:`sgilo.operators.sigpy_bridge`.
    """

    complex_input = complex_output = True

    def __init__(
        self,
        coord: torch.Tensor,
        maps: torch.Tensor | None = None,
        image_shape: tuple[int, int] | None = None,
    ) -> None:
        coord = torch.as_tensor(coord)
        if torch.is_complex(coord) or coord.ndim < 2 or coord.shape[-1] != 2:
            raise ValueError(f"coord must be real with shape (..., 2), got {tuple(coord.shape)}")
        require_finite(coord, "k-space coordinates")
        coord = coord.reshape(-1, 2).to(torch.float64)
        if maps is not None:
            maps = _as_maps(maps)
            shape = (int(maps.shape[-2]), int(maps.shape[-1]))
            if image_shape is not None and tuple(image_shape) != shape:
                raise ValueError(f"image_shape {tuple(image_shape)} differs from maps {shape}")
        elif image_shape is None:
            raise ValueError("single-coil NonCartesianMRI needs image_shape=(H, W)")
        else:
            shape = (int(image_shape[0]), int(image_shape[1]))
        limits = torch.tensor(shape, dtype=torch.float64) / 2
        if bool((coord.abs() > limits + 1e-9).any()):
            raise ValueError(
                f"coord must lie in [-N/2, N/2] per axis for an image of shape {shape}, "
                f"got a range of [{coord.min().item():.3g}, {coord.max().item():.3g}]"
            )
        k = int(coord.shape[0])
        oshape = (k,) if maps is None else (int(maps.shape[-3]), k)
        super().__init__(shape, oshape)
        self.register_buffer("coord", coord)
        self.register_buffer("maps", maps)
        self._nufft_cache: dict[tuple[int, ...], object] = {}

    @property
    def kind(self) -> OperatorKind:
        return "mri"

    @property
    def coil_maps(self) -> torch.Tensor | None:
        """``S``, complex ``(C, H, W)`` or ``(B, C, H, W)``; ``None`` for single-coil."""
        return self.maps

    @property
    def trajectory(self) -> torch.Tensor:
        """``k``, float64 ``(K, 2)``."""
        return self.coord

    @property
    def runs_on_cpu_only(self) -> bool:
        """sigpy's NUFFT runs in numpy."""
        return True

    def _nufft(self, ishape: tuple[int, ...]) -> object:
        import sigpy as sp

        if ishape not in self._nufft_cache:
            self._nufft_cache[ishape] = sp.linop.NUFFT(list(ishape), self.coord.cpu().numpy())
        return self._nufft_cache[ishape]

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        require_complex(x, "image")
        if self.maps is None:
            return apply_sigpy_linop(self._nufft(tuple(x.shape)), x)
        _check_batch(self, self.maps, x, 4)
        coil_images = self.maps.to(x.dtype) * x.unsqueeze(1)
        coil_images = coil_images.expand(x.shape[0], *coil_images.shape[1:]).contiguous()
        return apply_sigpy_linop(self._nufft(tuple(coil_images.shape)), coil_images)

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        require_complex(y, "k-space")
        b = y.shape[0]
        if self.maps is None:
            return apply_sigpy_linop(self._nufft((b, *self.ishape)).H, y)
        _check_batch(self, self.maps, y, 4)
        coil_images = apply_sigpy_linop(self._nufft((b, self.oshape[0], *self.ishape)).H, y)
        return (self.maps.to(y.dtype).conj() * coil_images).sum(dim=1)
