"""The linear-operator contract every forward model follows.

A :class:`LinearOperator` maps a batch of signals ``x`` of shape ``(B, *ishape)`` to measurements
``A x`` of shape ``(B, *oshape)``. The leading batch axis (slices of a volume, images of a batch)
is always present and always free: parameters such as masks and coil maps are buffers fixed at
construction, and may carry their own leading batch axis of size ``B`` (one per slice) or none
(shared by every slice).

Every operator supplies ``A`` and ``A_adjoint``; ``.H`` is the adjoint as an operator of its own,
``A @ B`` composes, ``normal`` applies ``A^H A``. Calling an operator never changes it.
:func:`adjoint_error` is the self-test ``<A x, y> = <x, A^H y>`` used for every operator in the
test-suite.

An operator also says what solvers ask about, so that no solver needs to know its class (as
DeepInverse's ``LinearPhysics``): its :attr:`~LinearOperator.kind` (``"mri"``, ``"image"`` or
``"generic"``), its Cartesian :attr:`~LinearOperator.sampling_mask`,
:attr:`~LinearOperator.coil_maps` and non-Cartesian :attr:`~LinearOperator.trajectory` (each
``None`` where it has none), :meth:`~LinearOperator.num_measurements`,
:meth:`~LinearOperator.sampled_fraction`, the fully sampled
:meth:`~LinearOperator.calibration_region`, :meth:`~LinearOperator.normal_norm` (``‖AᴴA‖``) and
whether it :attr:`~LinearOperator.runs_on_cpu_only`. The defaults below describe an operator with
none of these (every entry of ``y`` a measurement, the power iteration for the norm); subclasses
override what they know.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from sgilo.operators.power_iteration import DEFAULT_ITERATIONS, power_iteration, seeded_start

Shape = tuple[int, ...]
#: what an operator models: MRI acquisition, a natural-image task of the papers, or neither
OperatorKind = Literal["mri", "image", "generic"]


class LinearOperator(torch.nn.Module):
    """Base class: a linear map ``(B, *ishape) -> (B, *oshape)``.

    Subclasses implement :meth:`_A` and :meth:`_AH` and set ``ishape``, ``oshape``
    and ``complex_input``/``complex_output`` (whether the spaces are complex). Shapes are checked on
    every call, so a wrong input fails loudly instead of broadcasting silently.
    """

    ishape: Shape
    oshape: Shape
    complex_input: bool = False
    complex_output: bool = False

    def __init__(self, ishape: Sequence[int], oshape: Sequence[int]) -> None:
        super().__init__()
        self.ishape = tuple(int(s) for s in ishape)
        self.oshape = tuple(int(s) for s in oshape)

    # -- the two maps ----------------------------------------------------------------------------
    def _A(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _AH(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator: ``x`` of shape ``(B, *ishape)`` to ``(B, *oshape)``."""
        _check_shape(self, x, self.ishape, "input")
        return self._A(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint: ``y`` of shape ``(B, *oshape)`` to ``(B, *ishape)``."""
        _check_shape(self, y, self.oshape, "adjoint input")
        return self._AH(y)

    def A_columns(self, x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``A x`` on the last-axis entries ``columns`` ``(L,)`` (long) of ``y`` only:
        ``(B, *oshape[:-1], L)``, equal to ``A(x)[..., columns]`` (the Cartesian MRI operators
        compute no other column of k-space). Losses over the sampled columns of a Cartesian mask
        use it."""
        _check_shape(self, x, self.ishape, "input")
        return self._A_columns(x, columns)

    def _A_columns(self, x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        return self._A(x).index_select(-1, columns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        _check_shape(self, x, self.ishape, "input")
        return self._normal(x)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return self._AH(self._A(x))

    def residual_gradient(self, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``z ↦ Aᴴ(A z − y)`` for fixed data ``y`` ``(B, *oshape)``: the gradient of
        ``½‖A z − y‖²``, formed with the residual ``A z − y`` (not ``AᴴA z − Aᴴ y``, whose
        rounding reaches the null space of ``A``). Operators that can prepare ``y`` once for a
        cheaper form override it (the Cartesian MRI operators with a column mask)."""
        return lambda z: self.A_adjoint(self.A(z) - y)

    @property
    def H(self) -> LinearOperator:
        """The adjoint ``A^H`` as an operator (``A.H.H`` is ``A``)."""
        return Adjoint(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        """Composition ``(self @ other)(x) = self(other(x))``."""
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return Composed(self, other)

    def extra_repr(self) -> str:
        return f"ishape={self.ishape}, oshape={self.oshape}"

    # -- what solvers ask about (overridden by the operators that know more) ----------------------
    @property
    def kind(self) -> OperatorKind:
        """``"mri"`` (:mod:`sgilo.operators.mri`), ``"image"`` (the natural-image tasks of
        :mod:`sgilo.operators.image` and real denoising) or ``"generic"``."""
        return "generic"

    @property
    def sampling_mask(self) -> torch.Tensor | None:
        """The real Cartesian k-space mask ``M``, ``(H, W)`` shared or ``(B, H, W)`` per slice
        (insert a coil axis, ``unsqueeze(-3)``, to broadcast it against multi-coil k-space);
        ``None`` for an operator that does not sample a Cartesian grid."""
        return None

    def slice_masks(self, batch: int) -> torch.Tensor | None:
        """:attr:`sampling_mask` expanded to ``(batch, H, W)`` (a view), or ``None``."""
        mask = self.sampling_mask
        return None if mask is None else mask.expand(batch, *mask.shape[-2:])

    @property
    def coil_maps(self) -> torch.Tensor | None:
        """Complex coil sensitivities ``S``, ``(C, H, W)`` or ``(B, C, H, W)``; ``None`` for an
        operator without coils (single-coil MRI, natural images)."""
        return None

    @property
    def num_coils(self) -> int:
        """``C`` of :attr:`coil_maps` (1 without maps)."""
        maps = self.coil_maps
        return 1 if maps is None else int(maps.shape[-3])

    @property
    def trajectory(self) -> torch.Tensor | None:
        """Non-Cartesian k-space coordinates, real ``(K, 2)`` in sigpy units; ``None`` else."""
        return None

    @property
    def runs_on_cpu_only(self) -> bool:
        """True when the operator computes on the CPU whatever its buffers' device (sigpy's
        NUFFT): a solver must not move it to an accelerator."""
        return False

    def num_measurements(self, batch: int) -> torch.Tensor:
        """Measurements per slice, float64 ``(batch,)``: every entry of ``y`` (``prod(oshape)``)
        unless the operator knows that some are structurally zero (a Cartesian mask: sampled
        locations × coils)."""
        mask = self.slice_masks(batch)
        if mask is None:
            return torch.full((batch,), float(math.prod(self.oshape)), dtype=torch.float64)
        count = (mask > 0).reshape(batch, -1).sum(dim=1).cpu().to(torch.float64)
        return count * self.num_coils

    def sampled_fraction(self, batch: int) -> torch.Tensor:
        """Per-coil measurements per unknown, float64 ``(batch,)`` on the CPU:
        ``num_measurements / (num_coils · prod(ishape))``; for Cartesian MRI the fraction of the
        k-space grid that is sampled, for ``K`` non-Cartesian samples ``K / (H W)``."""
        unknowns = self.num_coils * math.prod(self.ishape)
        return self.num_measurements(batch) / unknowns

    def calibration_region(self, batch: int) -> torch.Tensor | None:
        """Bool ``(batch, W)``: per slice the contiguous run of fully sampled k-space columns
        around the centre column ``W // 2`` (all False when that column is not fully sampled);
        ``None`` for an operator without a Cartesian mask."""
        mask = self.slice_masks(batch)
        if mask is None:
            return None
        return torch.stack([fully_sampled_centre(mask[b]) for b in range(batch)])

    def normal_norm(
        self,
        batch: int = 1,
        dtype: torch.dtype | None = None,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> torch.Tensor:
        """``‖AᴴA‖₂`` (the largest eigenvalue of ``AᴴA``, i.e. ``‖A‖₂²``) per slice, real
        ``(batch,)`` on the operator's device. This default runs ``iterations`` power iterations
        (:func:`sgilo.operators.power_iteration.power_iteration`) from the seeded start
        ``seeded_start((batch, *ishape), dtype)``; ``dtype`` defaults to the default float dtype
        (or its complex counterpart for a complex input space). Operators that know the value
        analytically return it instead."""
        if dtype is None:
            dtype = torch.get_default_dtype()
            if self.complex_input:
                dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        start = seeded_start((batch, *self.ishape), dtype, self._device())
        return power_iteration(self.normal, start, iterations)

    def _device(self) -> torch.device:
        """The device of the operator's buffers (the CPU without any)."""
        for buffer in self.buffers():
            return buffer.device
        return torch.device("cpu")


def fully_sampled_centre(mask: torch.Tensor) -> torch.Tensor:
    """``(W,)`` bool: the contiguous run of fully sampled columns (every row > 0) of a real
    ``(H, W)`` mask around the centre column ``W // 2``; all False when that column is not fully
    sampled."""
    full = (mask > 0).all(dim=0)
    width = full.shape[0]
    window = torch.zeros_like(full)
    centre = width // 2
    if not bool(full[centre]):
        return window
    lo = hi = centre
    while lo > 0 and bool(full[lo - 1]):
        lo -= 1
    while hi < width - 1 and bool(full[hi + 1]):
        hi += 1
    window[lo : hi + 1] = True
    return window


def _check_shape(op: LinearOperator, x: torch.Tensor, shape: Shape, what: str) -> None:
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{type(op).__name__}: expected {what} of shape (B, {', '.join(map(str, shape))}), "
            f"got {tuple(x.shape)}"
        )


class Adjoint(LinearOperator):
    """``A^H`` of a given operator."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.oshape, op.ishape)
        self.op = op
        self.complex_input, self.complex_output = op.complex_output, op.complex_input

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return self.op._AH(x)

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        return self.op._A(y)

    @property
    def H(self) -> LinearOperator:
        return self.op

    @property
    def runs_on_cpu_only(self) -> bool:
        return self.op.runs_on_cpu_only


class Composed(LinearOperator):
    """``outer ∘ inner``; the inner output shape must be the outer input shape."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        if inner.oshape != outer.ishape:
            raise ValueError(
                f"cannot compose {type(outer).__name__} (input {outer.ishape}) after "
                f"{type(inner).__name__} (output {inner.oshape})"
            )
        super().__init__(inner.ishape, outer.oshape)
        self.outer, self.inner = outer, inner
        self.complex_input, self.complex_output = inner.complex_input, outer.complex_output

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.A(self.inner.A(x))

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.A_adjoint(self.outer.A_adjoint(y))

    @property
    def runs_on_cpu_only(self) -> bool:
        return self.outer.runs_on_cpu_only or self.inner.runs_on_cpu_only


class Identity(LinearOperator):
    """``A = I`` on ``(B, *shape)`` (denoising)."""

    def __init__(self, shape: Sequence[int], complex_data: bool = False) -> None:
        super().__init__(shape, shape)
        self.complex_input = self.complex_output = complex_data

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        return y

    @property
    def kind(self) -> OperatorKind:
        """``"image"`` for real denoising of a ``(C, H, W)`` image, else ``"generic"``."""
        return "image" if not self.complex_input and len(self.ishape) == 3 else "generic"

    def normal_norm(
        self,
        batch: int = 1,
        dtype: torch.dtype | None = None,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> torch.Tensor:
        """``‖I‖ = 1`` exactly."""
        return torch.ones(batch, dtype=real_dtype_of(dtype))


def real_dtype_of(dtype: torch.dtype | None) -> torch.dtype:
    """The real dtype of ``dtype`` (float64 for complex128, …); the default dtype for ``None``."""
    if dtype is None:
        return torch.get_default_dtype()
    return torch.empty(0, dtype=dtype).real.dtype


def _random(shape: Sequence[int], is_complex: bool, generator: torch.Generator) -> torch.Tensor:
    if is_complex:
        return torch.randn(*shape, dtype=torch.complex128, generator=generator)
    return torch.randn(*shape, dtype=torch.float64, generator=generator)


def adjoint_error(op: LinearOperator, batch: int = 2, seed: int = 0) -> float:
    """Relative adjoint mismatch ``|<A x, y> - <x, A^H y>| / (‖A x‖ ‖y‖)`` in double precision.

    The operator must already hold float64/complex128 buffers (``op.double()`` does not convert
    complex buffers, so build test operators from double-precision inputs).
    """
    g = torch.Generator().manual_seed(seed)
    x = _random((batch, *op.ishape), op.complex_input, g)
    y = _random((batch, *op.oshape), op.complex_output, g)
    with torch.no_grad():
        ax = op.A(x)
        ahy = op.A_adjoint(y)
    lhs = torch.vdot(ax.reshape(-1).to(y.dtype), y.reshape(-1))
    rhs = torch.vdot(x.reshape(-1), ahy.reshape(-1).to(x.dtype))
    scale = ax.norm() * y.norm()
    return float((lhs - rhs).abs() / scale)


def require_complex(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a complex tensor."""
    if not torch.is_complex(x):
        raise ValueError(f"{name} must be complex (torch.complex64/128), got dtype {x.dtype}")


def require_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got NaN or Inf values")
