"""Data consistency that lets a generative image deviate sparsely: ``x = x̂ + ν``.

A generator's image ``x̂`` (after CSGM, ILO or SGILO) is wrong wherever the anatomy lies outside
the generator's range: a lesion, a fold the training set never showed, fine cortex a small prior
cannot draw. Exact data consistency (:func:`sgilo.pipeline.solvers.consistency.data_consistency`)
puts the measured k-space back but leaves the unmeasured k-space of ``x̂`` as it is, so at 4×
undersampling such errors stay, and a sparsity prior beats the generator there. Following the
sparse-deviation model of Dhar, Grover & Ermon ("Modeling sparse deviations for compressed
sensing using generative models", ICML 2018), the final step instead solves

    x = argmin_x ½‖A x − y‖² + λ ‖Ψ (x − x̂)‖₁ ,    λ = λ_rel · s,

i.e. ``x = x̂ + ν`` with ν the ℓ1-wavelet reconstruction (Daubechies-4, cycle spinning, FISTA:
:func:`sgilo.pipeline.solvers.classical.l1_wavelet` with ``center=x̂``) of the residual data
``y − A x̂``; ``s`` is the data scale of ``y``
(:func:`sgilo.pipeline.solvers.classical.data_scale`), so ``λ_rel`` means what it means for the
classical ℓ1-wavelet. Small λ approaches exact data consistency (the residual is fitted freely in
the measured k-space, 0 elsewhere); large λ keeps ``x̂``. The deviation is explicit and bounded
by the measurements: where ``y`` says nothing,
ν is only what its sparsity allows.

How far to trust the model image depends on how much was measured, so the default ``"auto"``
sets ``λ_rel`` per slice from its per-coil sampled fraction ``f``
(:func:`sgilo.pipeline.solvers.sampling.interpolate_by_fraction`: the value at ``f = 1/8``, the
value at ``f = 1/4``, geometric in between, constant outside), per kind of data (single- or
multi-coil),
from :data:`DEFAULT_DC_WAVELET`. The anchors were chosen on MNI training slices
(docs/GENERATIVE_TUNING.md, "Sparse deviations in the final data consistency"): the more
undersampled, the larger λ (the more the model image is kept). ``0`` selects exact data
consistency.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from sgilo.operators.base import LinearOperator
from sgilo.pipeline.solvers.classical import coil_kind, l1_wavelet
from sgilo.pipeline.solvers.sampling import interpolate_by_fraction, sampled_fraction

#: relative λ of the sparse-deviation step per kind of data: (at 8×, at 4×) sampled fractions
#: 1/8 and 1/4, chosen on MNI training slices
DEFAULT_DC_WAVELET = {"single-coil": (0.003, 0.001), "multi-coil": (0.003, 0.0003)}

#: a config value: a relative λ ≥ 0 (0: exact data consistency) or "auto"
DCWaveletSetting = Annotated[float, Field(ge=0)] | Literal["auto"]


def resolve_dc_wavelet(setting: float | str, op: LinearOperator, batch: int) -> torch.Tensor:
    """The ``(B,)`` float64 relative λ the final step uses on each of ``batch`` slices:
    ``setting`` when it is a number, else the default for the kind of data ``op`` models at each
    slice's sampled fraction."""
    if setting != "auto":
        return torch.full((batch,), float(setting), dtype=torch.float64)
    at_8x, at_4x = DEFAULT_DC_WAVELET[coil_kind(op)]
    return interpolate_by_fraction(sampled_fraction(op, batch), at_8x, at_4x)


def sparse_deviation(
    x: torch.Tensor,
    y: torch.Tensor,
    op: LinearOperator,
    lam: float | torch.Tensor,
    iterations: int = 100,
) -> torch.Tensor:
    """``x̂ + ν`` of the module docstring for a complex ``x`` ``(B, H, W)`` in the units of ``y``;
    ``lam`` relative (> 0; a number, or ``(B,)``: one per slice); ``iterations`` FISTA
    iterations. Returns complex ``(B, H, W)``. FISTA runs in ``x``'s precision: complex64 for
    a float32 generator's image (more would only carry the generator's rounding further)."""
    dtype = x.dtype if x.dtype in (torch.complex64, torch.complex128) else torch.complex128
    return l1_wavelet(y, op, lam=lam, iterations=iterations, center=x, dtype=dtype).image.to(
        x.dtype
    )
