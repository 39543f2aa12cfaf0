r"""Coil maps for objects that fill the phase-encode field of view: a joint image-and-map fit.

One set of ESPIRiT maps (:mod:`sgilo.pipeline.espirit`) is a smooth *periodic* function of the
image position, calibrated from a few centre columns. Where the object reaches the phase-encode
edges, the coil images jump from one edge's coil value to the other's across the periodic
boundary; no smooth periodic map explains that, the maps are wrong for about a kernel's reach
from both edges, and every SENSE reconstruction with them loses several dB
(:mod:`sgilo.pipeline.coil_map_check` flags such slices). The calibration columns alone cannot
repair this (a non-periodic map has no compact k-space kernel), but all measured samples can:

.. math:: \min_{m,\ \theta}\ \sum_c \| M \odot F\,(m \odot B\theta_c) - y_c \|_2^2,

with the image ``m`` free per pixel and each coil's map ``s_c = Bθ_c`` in the span of the
``K × K`` lowest-order separable DCT-II functions ``B`` (:func:`dct_basis`): smooth, and not
periodic (a cosine series extends evenly across each edge, so ``s_c(0)`` and ``s_c(N-1)`` are
unrelated). The problem is bilinear; :func:`refine_maps` solves it by alternating exact steps
from the ESPIRiT maps:

1. ``m`` = CG-SENSE with the current maps (:func:`sgilo.pipeline.solvers.classical.cg_sense`,
   ``cg_iterations`` steps);
2. ``θ_c`` = linear least squares with ``m`` fixed: ``G θ_c ≈ y_c`` over the measured samples, with
   the design matrix ``G = [M ⊙ F(m ⊙ b_k)]_k`` shared by all coils (``K²`` FFTs and a ``K² × K²``
   solve per slice), a Tikhonov term ``10⁻⁶ · mean(diag GᴴG)`` against exact singularity;

until the relative decrease of the data residual ``‖Gθ − y‖² / ‖y‖²`` of a round falls below
``min_decrease`` (or ``max_rounds``). The maps are then normalized per pixel
(``Σ_c |s_c|² = 1``), referred to coil 0's phase and cut to a support, as ESPIRiT's own are, so
that the reconstruction is zero where there is no object.

**The support.** ESPIRiT's ``crop`` mask follows its eigenvalue, which drops at the same
periodic jump that makes these slices wrong: on heads that fill the field of view it blanks
object pixels near the edges and corners (from a few dozen pixels to a quarter of the image).
A pixel with no map and bright object signal is worse than a lost pixel: its signal must be
explained by others, and the image gets streaks and holes (ℓ1-wavelet 4–14 dB below the same
maps on the whole field of view, 8-coil 4×). So the support is ESPIRiT's extended by the object:
after the last round, CG-SENSE with the maps on the whole field of view gives ``m``, and every
pixel where the magnitude of ``m`` averaged over a 5 × 5 box reaches :data:`SUPPORT_LEVEL` (0.2)
of the slice's 99th percentile of it joins (:func:`object_support`; the complex image is averaged,
so that noise does not let air in at low SNR). Air, whose image is noise
and aliasing, stays out. The rounds themselves keep ESPIRiT's support (image updates on the
whole field of view gained 0.3–0.9 dB on tuning heads at 4×, lost 0.2 at 8× and lost on the
ISMRMRD generator's phantom: docs/CLASSICAL_TUNING.md, "The support of refined maps").

Tuned (2026-12-05) on slices no benchmark scores: 12 synthetic heads with skull in a 150–170 mm
field of view (:func:`sgilo.pipeline.data.synth_brain.synth_brain_batch`, seeds 40 and 41; 8 of
them reach the phase-encode edges), 8 birdcage coils at 4× and 8×, 20/30/40 dB SNR
(``python -m sgilo.pipeline.research.map_refine_tuning``; docs/CLASSICAL_TUNING.md, "Coil maps
for objects that fill the phase-encode field of view"). With the true image in step 1, 8 × 8 DCT
maps came within 0.3–1.2 dB of the true maps' CG-SENSE PSNR (12 × 12: within 0.15; three slices,
4×). Alternating from ESPIRiT, ℓ1-wavelet with the refined maps came within 0.15 dB of the true
maps at 4× (+3.3 to +5.9 dB over ESPIRiT's); at 8× the joint problem
has about as many unknowns as measurements, the residual falls below that of the true maps within
a few rounds (overfit), and the fit recovered about half of the loss (+1.3 to +1.4 dB, 1.2 dB
short) with 6 × 6 functions (8 × 8: +0.6 to +0.9). 40 CG steps per round were worse at 8×, 20
enough at 4×. Only slices that :func:`sgilo.pipeline.coil_map_check.edge_fraction` flags are
refined: inside the field of view ESPIRiT's maps are right (the fit cost 0.2–0.9 dB there in a
first trial).

The model assumes an object that ends at the field of view. A real acquisition of a larger object
folds it over (wrap), which one set of maps of either kind cannot explain; in a simulation of
that (4 heads 0, 8 or 16 columns wider than the field of view on each side, folded; 4× and 8×),
the refined maps gave CG-SENSE the better image in all 24 cases and ℓ1-wavelet in 23. A
held-out k-space check before replacing ESPIRiT's maps (four folds of the outer columns,
CG-SENSE's prediction error with either maps) was tried and not kept: it rejected the
refinement where it had gained (0.6–0.8 dB; 2.0 dB on an out-of-distribution file) and accepted
it where it had lost (docs/CLASSICAL_TUNING.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sgilo.operators.fft import fft2c
from sgilo.operators.mri import MultiCoilMRI
from sgilo.pipeline.coil_map_check import EDGE_LEVEL, edge_fraction

#: DCT functions per axis of the map model (``K``) at accelerations up to :data:`BASIS_SPLIT`
MAP_BASIS = 8
#: ... and above it, where the measurements support fewer map coefficients
MAP_BASIS_HIGH = 6
#: the acceleration (sampled fraction ``1 / R``) that separates the two basis sizes
BASIS_SPLIT = 6.0
#: CG-SENSE steps of the image update
CG_ITERATIONS = 20
#: at most this many alternations
MAX_ROUNDS = 24
#: stop when a round lowers the relative data residual by less than this fraction
MIN_DECREASE = 0.01
#: the object's support (:func:`object_support`): a pixel whose smoothed magnitude reaches this
#: fraction of the slice's robust peak belongs to the object; its box width and the peak's quantile
SUPPORT_LEVEL = 0.2
SUPPORT_BOX = 5
SUPPORT_QUANTILE = 0.99
#: the Tikhonov weight of the map fit, relative to the mean diagonal of ``GᴴG``
RIDGE = 1e-6
#: :func:`checked_maps` refines at most this many basis-image elements (slices × K² × H × W) at
#: once: the design matrices of 2²⁵ complex64 elements take 256 MB (two slices of 640 × 368)
CHUNK_ELEMENTS = 2**25


@dataclass(frozen=True)
class Refinement:
    """What :func:`refine_maps` did to one slice: the alternations it ran and the relative
    data residual ``‖Gθ − y‖² / ‖y‖²`` after each."""

    rounds: int
    residuals: tuple[float, ...]


def dct_basis(n: int, k: int) -> np.ndarray:
    """The ``k`` lowest-order orthonormal DCT-II functions on ``n`` points: float64 ``(k, n)``,
    row ``a`` proportional to ``cos(π a (i + ½) / n)``."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    i = np.arange(n)
    rows = np.cos(math.pi * np.arange(k)[:, None] * (i + 0.5) / n)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _map_basis(h: int, w: int, k: int) -> torch.Tensor:
    """Separable basis ``(k², H, W)`` complex64."""
    basis = np.einsum("ah,bw->abhw", dct_basis(h, min(k, h)), dct_basis(w, min(k, w)))
    return torch.from_numpy(basis.reshape(-1, h, w)).to(torch.complex64)


def _fit(
    y: torch.Tensor, sampled: torch.Tensor, image: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 for a batch: maps ``(S, C, H, W)`` (unnormalized) and relative residuals ``(S,)``.

    ``y`` ``(S, C, H, W)``, ``sampled`` bool ``(H, W)``, ``image`` ``(S, H, W)``."""
    k = basis.shape[0]
    design = fft2c(basis[None] * image[:, None])[..., sampled]  # (S, K, n)
    data = y[..., sampled]  # (S, C, n)
    gram = design.conj() @ design.transpose(1, 2)  # (S, K, K) = GᴴG
    ridge = RIDGE * gram.diagonal(dim1=1, dim2=2).real.mean(1).clamp_min(1e-30)
    gram = gram + ridge[:, None, None] * torch.eye(k, dtype=gram.dtype)
    rhs = design.conj() @ data.transpose(1, 2)  # (S, K, C) = Gᴴy
    theta = torch.linalg.solve(gram, rhs)
    fitted = theta.transpose(1, 2) @ design  # (S, C, n)
    residual = (fitted - data).abs().pow(2).sum((1, 2)) / data.abs().pow(2).sum((1, 2)).clamp_min(
        1e-30
    )
    maps = torch.einsum("skc,khw->schw", theta, basis)
    return maps, residual


def _normalize(maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Unit coil norm per pixel, coil 0's phase removed, zero outside ``support``."""
    norm = maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    maps = torch.where(norm > 0, maps / norm.clamp_min(1e-30), torch.zeros_like(maps))
    ref = maps[:, :1]
    phase = torch.where(
        ref.abs() > 0, ref.conj() / ref.abs().clamp_min(1e-30), torch.ones_like(ref)
    )
    return maps * phase * support[:, None]


def object_support(image: torch.Tensor, level: float = SUPPORT_LEVEL) -> torch.Tensor:
    """Where the object is: bool ``(S, H, W)``, the pixels of ``image`` (complex ``(S, H, W)``)
    where the magnitude of its average over a :data:`SUPPORT_BOX` square is at least ``level``
    times the slice's :data:`SUPPORT_QUANTILE` quantile of it (a robust peak). The complex
    image is averaged, not its magnitude: noise averages out (the object's phase is smooth),
    while the average of ``|noise|`` stays at its mean and lets air in at low SNR."""
    parts = torch.view_as_real(image.to(torch.complex64)).permute(0, 3, 1, 2)  # (S, 2, H, W)
    mean = torch.nn.functional.avg_pool2d(
        parts, SUPPORT_BOX, stride=1, padding=SUPPORT_BOX // 2, count_include_pad=False
    )
    smooth = mean.pow(2).sum(1).sqrt()  # |box average of m|: noise averages out, not |m|'s bias
    peak = torch.quantile(smooth.flatten(1), SUPPORT_QUANTILE, dim=1)
    return smooth >= level * peak[:, None, None]


def well_sampled(mask: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> bool:
    """Whether ``mask`` (``(W,)`` or ``(H, W)``, on a grid of ``shape``) samples at least
    ``1 / BASIS_SPLIT`` of k-space: then the measurements support :data:`MAP_BASIS` functions
    (:func:`basis_size`) and a held-out split its own maps (:mod:`sgilo.pipeline.split_maps`)."""
    m = np.asarray(mask.cpu() if torch.is_tensor(mask) else mask, dtype=np.float64) > 0
    return float(np.broadcast_to(m, shape).mean()) * BASIS_SPLIT >= 1


def refine_maps(
    kspace: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    maps: np.ndarray | torch.Tensor,
    *,
    basis: int = MAP_BASIS,
    cg_iterations: int = CG_ITERATIONS,
    max_rounds: int = MAX_ROUNDS,
    min_decrease: float = MIN_DECREASE,
    whole_field: bool = False,
    support_level: float | None = SUPPORT_LEVEL,
) -> tuple[np.ndarray, list[Refinement]]:
    """Smooth non-periodic maps fitted jointly with the image (module docstring).

    Args:
        kspace: complex ``(S, C, H, W)`` centred k-space, zero where not sampled.
        mask: the sampling pattern shared by the slices: ``(W,)`` columns or ``(H, W)``.
        maps: complex ``(S, C, H, W)`` starting maps (ESPIRiT's).
        basis: DCT functions per axis.
        cg_iterations: CG-SENSE steps per image update.
        max_rounds: at most this many alternations.
        min_decrease: stop a slice when a round lowers its residual by less than this fraction.
        whole_field: the image updates use the maps on the whole field of view (``True``, tried
            and not kept: docs/CLASSICAL_TUNING.md) or on ESPIRiT's support (``False``).
        support_level: the maps are cut to ESPIRiT's support extended by the object
            (:func:`object_support` at this level); ``None``: ESPIRiT's support alone.

    Returns:
        complex64 ``(S, C, H, W)`` maps and one :class:`Refinement` per slice.
    """
    from sgilo.pipeline.solvers.classical import cg_sense

    y = torch.as_tensor(kspace)
    start = torch.as_tensor(maps)
    if y.ndim != 4 or start.shape != y.shape:
        raise ValueError(
            f"kspace and maps must both be (S, C, H, W), got {tuple(y.shape)}, {tuple(start.shape)}"
        )
    y, start = y.to(torch.complex64), start.to(torch.complex64)
    s, _, h, w = y.shape
    mask_t = torch.as_tensor(mask).float()
    sampled = torch.broadcast_to(mask_t > 0, (h, w))
    if not bool(sampled.any()):
        raise ValueError("the mask samples nothing")
    grid = _map_basis(h, w, basis)
    espirit_support = start.abs().sum(1) > 0  # (S, H, W)
    support = torch.ones_like(espirit_support) if whole_field else espirit_support
    current = start.clone()
    residuals: list[list[float]] = [[] for _ in range(s)]
    active = list(range(s))
    for _ in range(max_rounds):
        if not active:
            break
        idx = torch.tensor(active)
        op = MultiCoilMRI(current[idx] * support[idx, None], mask_t)
        image = cg_sense(y[idx], op, iterations=cg_iterations).image
        fitted, residual = _fit(y[idx], sampled, image, grid)
        current[idx] = fitted
        still = []
        for j, slice_index in enumerate(active):
            history = residuals[slice_index]
            value = float(residual[j])
            history.append(value)
            if len(history) < 2 or history[-2] - value >= min_decrease * history[-2]:
                still.append(slice_index)
        active = still
    support = espirit_support
    if support_level is not None:
        everywhere = _normalize(current, torch.ones_like(espirit_support))
        image = cg_sense(y, MultiCoilMRI(everywhere, mask_t), iterations=cg_iterations).image
        support = support | object_support(image, support_level)
    out = _normalize(current, support).numpy().astype(np.complex64)
    return out, [Refinement(len(r), tuple(r)) for r in residuals]


@dataclass(frozen=True)
class MapCheck:
    """The per-slice check of estimated coil maps: the fraction of the phase-encode edge columns
    they cover (:func:`sgilo.pipeline.coil_map_check.edge_fraction`) and the alternations of
    :func:`refine_maps` that slice got (0: not refined)."""

    edge_fraction: list[float]
    refined_rounds: list[int]

    def record(self) -> dict[str, list]:
        """The ``run.json`` fields: ``maps_edge_fraction`` and ``maps_refined_rounds``."""
        return {
            "maps_edge_fraction": self.edge_fraction,
            "maps_refined_rounds": self.refined_rounds,
        }


def basis_size(mask: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> int:
    """:data:`MAP_BASIS`, or :data:`MAP_BASIS_HIGH` when ``mask`` (``(W,)`` or ``(H, W)``, on a
    grid of ``shape``) samples less than ``1 / BASIS_SPLIT`` of k-space (:func:`well_sampled`)."""
    return MAP_BASIS if well_sampled(mask, shape) else MAP_BASIS_HIGH


def checked_maps(
    kspace: np.ndarray,
    mask: np.ndarray,
    maps: np.ndarray,
    *,
    level: float = EDGE_LEVEL,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, MapCheck]:
    """ESPIRiT ``maps`` ``(S, C, H, W)`` with the slices that reach the phase-encode edges
    (edge fraction above ``level``) replaced by :func:`refine_maps`'s, fitted to ``kspace``
    ``(S, C, H, W)`` sampled with ``mask`` (in chunks of slices, :data:`CHUNK_ELEMENTS`); and
    what was done. ``log`` gets a line before the refinement starts and one per chunk."""
    fractions = edge_fraction(maps)
    rounds = [0] * len(fractions)
    flagged = [k for k, f in enumerate(fractions) if f > level]
    if not flagged:
        return maps, MapCheck(fractions, rounds)
    kspace = np.asarray(kspace)
    out = np.array(maps, dtype=np.complex64, copy=True)
    h, w = kspace.shape[-2:]
    size = basis_size(mask, (h, w))
    chunk = max(1, CHUNK_ELEMENTS // (size * size * h * w))
    if log is not None:
        log(
            f"the coil maps of {len(flagged)} of {len(fractions)} slice(s) reach the phase-encode "
            "edges: refining them by a joint image-and-map fit"
        )
    for start in range(0, len(flagged), chunk):
        part = flagged[start : start + chunk]
        if log is not None and start:
            log(f"coil maps refined on {start} of {len(flagged)} slice(s)")
        refined, info = refine_maps(kspace[part], mask, out[part], basis=size)
        out[part] = refined
        for k, r in zip(part, info, strict=True):
            rounds[k] = r.rounds
    return out, MapCheck(fractions, rounds)
