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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Shape = tuple[int, ...]


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        return self.A_adjoint(self.A(x))

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


class Identity(LinearOperator):
    """``A = I`` on ``(B, *shape)`` (denoising)."""

    def __init__(self, shape: Sequence[int], complex_data: bool = False) -> None:
        super().__init__(shape, shape)
        self.complex_input = self.complex_output = complex_data

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _AH(self, y: torch.Tensor) -> torch.Tensor:
        return y


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
