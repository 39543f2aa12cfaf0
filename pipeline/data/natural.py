"""Natural images bundled with scikit-image, as float32 arrays in [0, 1].

Only images whose files ship inside the scikit-image wheel are offered (no download is ever
attempted). ``skimage.data.brain()`` is deliberately absent: it is fetched on demand and fails
offline. Synthetic or binary images (checkerboard, horse, logo, text) are left out too.

Values are the stored 8-bit values divided by 255 (not by each image's maximum). RGB images are
returned channel-first, (3, H, W); ``grayscale=True`` converts them with scikit-image's
luminance ``Y = 0.2125 R + 0.7154 G + 0.0721 B``.

Patches for training and benchmarking an RGB prior (:func:`natural_train_patches`,
:func:`natural_validation_patches`) come from a fixed split **by image** of the bundled RGB
photographs (``colorwheel`` is synthetic and left out; ``cat`` is the same picture as ``chelsea``):

- training (``TRAINING_IMAGES``): astronaut, hubble_deep_field, immunohistochemistry, retina,
  rocket;
- validation (``VALIDATION_IMAGES``): chelsea, coffee — never used for training.

The grey photographs (camera, coins, moon, brick, grass, gravel) are skipped, not replicated: an
RGB prior that learned grey pictures as typical would undermine the colorization baseline.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "TRAINING_IMAGES",
    "VALIDATION_IMAGES",
    "natural_image",
    "natural_image_names",
    "natural_train_patches",
    "natural_validation_patches",
]

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


# ---------------------------------------------------------------------------------------------
# RGB patches: a fixed split by image

#: RGB photographs whose patches train the natural-image prior
TRAINING_IMAGES: tuple[str, ...] = (
    "astronaut",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)
#: RGB photographs held out for validation / benchmarks (disjoint from ``TRAINING_IMAGES``)
VALIDATION_IMAGES: tuple[str, ...] = ("chelsea", "coffee")
#: a random training crop whose pixel standard deviation is below this is redrawn (up to
#: ``FLAT_RETRIES`` times): retina's black corners and empty sky carry no texture
FLAT_STD = 0.02
FLAT_RETRIES = 10
#: the largest crop side of a training patch, in multiples of the patch side
MAX_CROP_FACTOR = 4.0
#: crop sides of the validation patches, in multiples of the patch side (clipped to the image)
VALIDATION_CROP_FACTORS: tuple[float, ...] = (2.0, 4.0)


def _rgb_uint8(name: str) -> np.ndarray:
    """The stored photograph, uint8 (H, W, 3)."""
    import skimage.data

    raw = np.asarray(getattr(skimage.data, name)())
    if raw.dtype != np.uint8 or raw.ndim != 3 or raw.shape[-1] != 3:  # pragma: no cover
        raise ValueError(f"{name}: expected 8-bit RGB pixels, got {raw.dtype} {raw.shape}")
    return raw


def _check_size_count(size: int, count: int) -> None:
    for label, value, low in (("size", size, 4), ("count", count, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{label}: expected an integer >= {low}, received {value!r}")


def _crop_resized(image: np.ndarray, top: int, left: int, side: int, size: int) -> np.ndarray:
    """image[top:top+side, left:left+side] / 255, resized to (3, size, size) (bilinear with
    anti-aliasing, ``torch.nn.functional.interpolate(antialias=True)``), clipped to [0, 1]."""
    import torch
    import torch.nn.functional as F

    crop = image[top : top + side, left : left + side]
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255.0
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x[0].clamp_(0.0, 1.0).numpy()


def natural_train_patches(size: int, count: int, seed: int = 0) -> np.ndarray:
    """Random RGB patches of the training photographs (``TRAINING_IMAGES``), for an RGB prior.

    For each patch (with ``numpy.random.default_rng(seed)``): an image uniformly among the
    training images; a square crop side s log-uniform in [size, min(4·size, short side)]
    (``MAX_CROP_FACTOR``) and a uniform position; the crop (stored value / 255) resized to
    size×size with anti-aliasing; flipped left–right with probability 1/2. A crop with pixel
    standard deviation < ``FLAT_STD`` is redrawn (at most ``FLAT_RETRIES`` times).

    Args:
        size: patch side in pixels (≥ 4).
        count: number of patches (≥ 0).
        seed: the patches are a pure function of (size, count, seed).

    Returns:
        float32 (count, 3, size, size) in [0, 1].
    """
    _check_size_count(size, count)
    size, count = int(size), int(count)
    images = [_rgb_uint8(name) for name in TRAINING_IMAGES]
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, size, size), dtype=np.float32)
    for i in range(count):
        image = images[int(rng.integers(len(images)))]
        h, w = image.shape[:2]
        hi = min(MAX_CROP_FACTOR * size, min(h, w))
        lo = min(float(size), hi)
        for _ in range(FLAT_RETRIES + 1):
            side = int(round(float(np.exp(rng.uniform(np.log(lo), np.log(hi))))))
            side = max(1, min(side, h, w))
            top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
            patch = _crop_resized(image, top, left, side, size)
            if patch.std() >= FLAT_STD:
                break
        out[i] = patch[:, :, ::-1] if rng.random() < 0.5 else patch
    return out


def _grid_positions(extent: int, side: int, n: int) -> list[int]:
    """n crop offsets spread evenly over [0, extent − side]."""
    return [int(round(v)) for v in np.linspace(0, extent - side, n)]


def natural_validation_patches(size: int, count: int) -> np.ndarray:
    """Deterministic RGB patches of the validation photographs (``VALIDATION_IMAGES``).

    Groups are (image, crop side) for each validation image and each crop side
    ``f·size`` with f in ``VALIDATION_CROP_FACTORS`` (clipped to the image's short side). Group
    g holds k = ⌈count / G⌉ crops at evenly spaced positions of a grid of ⌈√k⌉ × ⌈√k⌉ over the
    image, of which k are taken evenly spaced in row-major order; each crop (value / 255) is
    resized to size×size with anti-aliasing, without flips. The patches interleave the groups
    (patch i belongs to group i mod G), so any prefix is spread over both images and scales.
    No randomness: a benchmark slice is reproducible from (size, count) alone.

    Returns:
        float32 (count, 3, size, size) in [0, 1].
    """
    _check_size_count(size, count)
    size, count = int(size), int(count)
    groups = [
        (_rgb_uint8(name), factor)
        for name in VALIDATION_IMAGES
        for factor in VALIDATION_CROP_FACTORS
    ]
    k = -(-count // len(groups))
    n = max(1, int(np.ceil(np.sqrt(k))))
    per_group: list[list[np.ndarray]] = []
    for image, factor in groups:
        h, w = image.shape[:2]
        side = int(min(round(factor * size), h, w))
        cells = [
            (t, lft) for t in _grid_positions(h, side, n) for lft in _grid_positions(w, side, n)
        ]
        chosen = [cells[int(j)] for j in np.round(np.linspace(0, len(cells) - 1, k))] if k else []
        per_group.append([_crop_resized(image, t, lft, side, size) for t, lft in chosen])
    out = np.empty((count, 3, size, size), dtype=np.float32)
    for i in range(count):
        out[i] = per_group[i % len(groups)][i // len(groups)]
    return out
