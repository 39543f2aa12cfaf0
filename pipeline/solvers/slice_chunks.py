"""The ℓ1-wavelet and TV solvers' batches on the CPU, in chunks of slices that stay in cache.

A first-order solver touches its whole batch every iteration; on the CPU a batch whose k-space
outgrows the caches runs slower per slice than a few slices at a time (docs/SPEED.md §9, §10,
§16). :func:`in_chunks` runs a solve on chunks of at most :data:`L1_CHUNK_BYTES` of k-space and
concatenates the slices; the result does not depend on the chunks (every slice has its own λ,
step and mask; tests/pipeline/test_wavelet.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sgilo.operators.base import LinearOperator
from sgilo.operators.mri import MultiCoilMRI, SingleCoilMRI
from sgilo.pipeline.solvers.base import Progress
from sgilo.pipeline.split_maps import RefinedMapsMRI

#: on the CPU the ℓ1-wavelet and TV solvers run at most this many bytes of k-space (slices ×
#: coils × pixels × the solve's complex item size) at a time: a working set that stays in cache
#: is faster than one batch (8 coils, 16 slices at 128², complex128: ℓ1-wavelet 0.57 s per slice
#: in chunks of 2 slices, 1.45 in one batch; docs/SPEED.md §9, §10); 4 MiB is 2 such slices in
#: complex128 and 4 in complex64 (docs/SPEED.md §16)
L1_CHUNK_BYTES = 2**22


def in_chunks(
    data: torch.Tensor,
    op: LinearOperator,
    solve: Callable[[list[int], LinearOperator], torch.Tensor],
    callback: Progress | None = None,
    label: str = "",
    dtype: torch.dtype = torch.complex128,
) -> torch.Tensor:
    """``solve(index, sub_op)`` on chunks of the slices of ``data`` ``(B, *op.oshape)`` —
    ``sub_op`` the operator on the slices ``index`` — concatenated along the batch: on the CPU
    chunks of at most :data:`L1_CHUNK_BYTES` of k-space in the solve's ``dtype`` (at least one
    slice), else (a GPU, or non-Cartesian data) one chunk. ``callback(done, B, label)`` after
    each chunk."""
    batch = data.shape[0]
    masks = op.slice_masks(batch)  # None for non-Cartesian data: one chunk
    per_slice = max(1, data[0].numel() * dtype.itemsize)
    chunk = max(1, min(batch, L1_CHUNK_BYTES // per_slice))
    if masks is None or data.device.type != "cpu":  # a GPU wants the whole batch
        chunk = batch
    out = []
    for first in range(0, batch, chunk):
        index = list(range(first, min(batch, first + chunk)))
        assert masks is not None or chunk == batch
        out.append(solve(index, op if chunk == batch else slice_operator(op, masks, index)))
        if callback:
            callback(index[-1] + 1, batch, label)
    return torch.cat(out)


def slice_operator(op: LinearOperator, masks: torch.Tensor, index: list[int]) -> LinearOperator:
    """The Cartesian ``op`` on the slices ``index`` of its batch (``masks`` its per-slice
    masks ``(B, H, W)``)."""
    maps = op.coil_maps
    if maps is None:
        return SingleCoilMRI(masks[index])
    refit = getattr(op, "map_refit", None)
    if refit is not None:  # keep the record of refined maps (pipeline/split_maps.py)
        return RefinedMapsMRI(maps[index], masks[index], refit.take(index))
    return MultiCoilMRI(maps if maps.ndim == 3 else maps[index], masks[index])
