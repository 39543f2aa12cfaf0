"""Natural images bundled with scikit-image, as float32 arrays in [0, 1].

Only images whose files ship inside the scikit-image wheel are offered (no download is ever
attempted). ``skimage.data.brain()`` is deliberately absent: it is fetched on demand and fails
offline. Synthetic or binary images (checkerboard, horse, logo, text) are left out too.

Values are the stored 8-bit values divided by 255 (not by each image's maximum). RGB images are
returned channel-first, (3, H, W); ``grayscale=True`` converts them with scikit-image's
luminance ``Y = 0.2125 R + 0.7154 G + 0.0721 B``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["natural_image", "natural_image_names"]

_NAMES: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
)


def natural_image_names() -> tuple[str, ...]:
    """Names accepted by ``natural_image`` (bundled ``skimage.data`` loaders), sorted."""
    return _NAMES


def _center_square(image: np.ndarray) -> np.ndarray:
    """Central S×S crop, S = min(H, W), of an (H, W, ...) array."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top : top + s, left : left + s]


def natural_image(name: str, size: int | None = None, grayscale: bool = False) -> np.ndarray:
    """A bundled scikit-image photograph scaled to [0, 1].

    out = stored / 255, optionally reduced to luminance, center-cropped to the largest square and
    resized to size×size (``skimage.transform.resize`` with anti-aliasing).

    Args:
        name: one of ``natural_image_names()``.
        size: if given (≥ 1), crop to a centred square and resize to (size, size); if None, keep
            the native shape.
        grayscale: convert RGB images to luminance; grayscale images are returned unchanged.

    Returns:
        float32 in [0, 1]; (H, W) for grayscale images (or ``grayscale=True``), else (3, H, W).
    """
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    if name not in _NAMES:
        raise ValueError(f"name: expected one of {', '.join(_NAMES)}; received {name!r}")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1
    ):
        raise ValueError(f"size: expected None or an integer >= 1, received {size!r}")
    raw = np.asarray(getattr(skimage.data, name)())
    if raw.dtype != np.uint8:  # pragma: no cover - every listed image is stored as 8-bit
        raise ValueError(f"{name}: expected 8-bit pixels, received dtype {raw.dtype}")
    image = raw.astype(np.float64) / 255.0  # (H, W) or (H, W, 3)
    if image.ndim == 3 and grayscale:
        image = rgb2gray(image)
    if size is not None:
        image = _center_square(image)
        out_shape = (int(size), int(size)) + image.shape[2:]
        if image.shape != out_shape:
            image = resize(image, out_shape, anti_aliasing=True, preserve_range=True)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if image.ndim == 3:
        image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    return image
