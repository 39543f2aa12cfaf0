"""Image grids for sample sheets: tiles in [0, 1] on a white canvas, saved as 8-bit PNG.

Grey tiles ``(n, r, r)`` give a grey canvas and PNG; RGB tiles ``(n, 3, r, r)`` (channel-first,
as the networks output them) give an RGB canvas ``(H, W, 3)`` and an RGB PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def tile_grid(tiles: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """float32 ``(rows·(r+pad)+pad, cols·(r+pad)+pad)`` canvas of ``tiles`` ``(n, r, r)`` in
    [0, 1], row-major, separated by ``pad`` white pixels; RGB tiles ``(n, 3, r, r)`` give an
    ``(…, …, 3)`` canvas."""
    tiles = np.asarray(tiles, dtype=np.float32)
    rgb = tiles.ndim == 4 and tiles.shape[1] == 3
    if not (tiles.ndim == 3 or rgb) or cols < 1:
        raise ValueError(
            f"expected tiles (n, r, r) or (n, 3, r, r) and cols >= 1, got {tiles.shape}, {cols}"
        )
    if rgb:
        tiles = np.moveaxis(tiles, 1, -1)  # (n, h, w, 3)
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / cols)
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad) + tiles.shape[3:]
    canvas = np.ones(shape, dtype=np.float32)
    for i, tile in enumerate(tiles):
        y, x = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        canvas[y : y + h, x : x + w] = np.clip(tile, 0, 1)
    return canvas


def save_grid(path: str | Path, tiles: np.ndarray, cols: int, pad: int = 2) -> Path:
    """Write :func:`tile_grid` of ``tiles`` as an 8-bit grey (or RGB) PNG; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = tile_grid(tiles, cols, pad)
    Image.fromarray(np.round(canvas * 255).astype(np.uint8)).save(path)
    return path
