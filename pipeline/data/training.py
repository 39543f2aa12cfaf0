"""Generator training images: bundled MNI slices, natural-image patches (RGB) and folders.

``load_training_images(sources, size)`` returns ``(images, summary)``: float32 ``(N, size, size)``
in [0, 1] and a JSON-able summary (``channels=3``: RGB ``(N, 3, size, size)``, see "RGB" below).
A source is

- ``"mni-train"``: the bundled MNI152 training slices (:func:`sgilo.pipeline.data.mni.mni_slices`);
  the validation slices are never offered;
- (``"synth-brain"`` is refused here with ValueError: it is generated batch by batch,
  :class:`sgilo.pipeline.data.synth_brain.SynthBrainSampler`; ``sgilo train-gan`` mixes it with
  the images of the sources beside it, :class:`sgilo.pipeline.data.synth_mix.MixedSampler`);
- a folder (searched recursively, hidden files ignored, sorted) or a single file, holding files
  of these kinds, as decided by the one format sniffer
  :func:`sgilo.pipeline.io.formats.sniff_format` (the same that decides ``sgilo reconstruct``'s
  inputs; a file of another kind, k-space included, is skipped with its reason):
  - ``picture``, PNG/JPEG (``.png``, ``.jpg``, ``.jpeg``; via ``skimage.io``; colour → grey with
    ``skimage.color.rgb2gray``, alpha dropped): one image per file;
  - ``nifti`` (``.nii``, ``.nii.gz``): read by :func:`sgilo.pipeline.io.nifti.read_nifti_volumes`
    (the reconstruct reader's checks and input limits; every volume of a 4-D file, a 2-D file as
    one slice, NaN kept), i.e. reoriented to RAS+ and in the display orientation of
    :func:`sgilo.pipeline.io.nifti.to_display` (= :func:`sgilo.pipeline.data.mni.
    axial_display_slice`); every axial slice with more than 5 % non-zero pixels
    (``mni.BRAIN_FRACTION``, NaN counted as 0) is taken, resampled to square pixels when the
    in-plane voxel sizes differ;
  - ``dicom`` (a ``DICM`` prefix or a ``.dcm``/``.ima``/``.dicom`` name): one image per file,
    read by :func:`sgilo.pipeline.io.dicom.read_dicom` (MR, single-frame, RescaleSlope/Intercept
    applied, input limits); in-plane pixels are taken as square;
  - ``npy``, NumPy arrays (``.npy``, real, no pickles): ``(H, W)`` is one image, ``(N, H, W)`` is
    N images (e.g. a stack exported from another pipeline, or ``mni-train`` itself written with
    ``np.save`` for a machine without nilearn).

Every image, whatever its source, goes through the same steps: NaN → 0; zero-padded to a centred
square (:func:`sgilo.pipeline.data.mni.pad_to_square`); resized to ``size``×``size``
(``skimage.transform.resize``, ``anti_aliasing=True``); divided by its own 99.5th percentile (over
all pixels; the maximum when that percentile is 0) and clipped to [0, 1] — so negative values
become 0 (magnitude images are expected). The MNI slices come from ``mni_slices`` already padded,
resized and divided by the volume maximum; the same per-image percentile rule is applied to them
too, which makes them identical to the rule applied to the raw slices (a constant factor cancels),
so all sources share one intensity convention. An all-zero image is skipped.

RGB (``channels=3``, for a natural-image prior; the steps above are the ``channels=1`` rule):

- ``"natural-train"``: ``natural_train_count(size)`` patches of the training photographs,
  :func:`sgilo.pipeline.data.natural.natural_train_patches` with seed 0 (the validation photographs
  are never offered). At most ``NATURAL_TRAIN_PATCHES`` (6000) patches, fewer when they would exceed
  ``NATURAL_TRAIN_MAX_BYTES`` (300 MiB of float32: 6000 at 64², 1600 at 128²). With
  ``channels=1`` it is refused (ValueError): it is an RGB source, not a grey one.
- PNG/JPEG in a folder keep their colour: RGB as is, grey replicated to 3 channels, alpha
  dropped; values are divided by the dtype's maximum (255 for 8-bit, 65535 for 16-bit; a float
  image by its maximum when that exceeds 1) — one factor for all channels, so colours are not
  distorted, and no percentile rule; the picture is centre-cropped to its largest square (not
  zero-padded: black bars are not natural content) and resized to size×size with anti-aliasing.
- MRI sources (``"mni-train"``, NIfTI, DICOM, ``.npy``) are refused: they are grey and belong to
  the 1-channel prior. ``"mni-train"`` raises ValueError; such files inside a folder are skipped
  with that reason (a source left with no image raises ValueError naming the first reason).

Errors: a bad source (missing path, empty folder, nothing readable in it, an unknown ``mni-*``
name) raises ValueError with a one-line message naming it. Individual unreadable files inside a
folder are skipped with a warning and listed in the summary.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sgilo.pipeline.data import mni
from sgilo.pipeline.io.formats import sniff_format
from sgilo.pipeline.io.limits import shown_name

MNI_TRAIN = "mni-train"
#: the on-the-fly synthetic source (:mod:`sgilo.pipeline.data.synth_brain`): not a loaded set
SYNTH_BRAIN = "synth-brain"
#: the default share of loaded images in a batch mixed with ``synth-brain``
#: (:class:`sgilo.pipeline.data.synth_mix.MixedSampler`)
REAL_FRACTION = 0.25
NATURAL_TRAIN = "natural-train"
#: the most natural-train patches generated (seed 0), and their memory cap in bytes (float32)
NATURAL_TRAIN_PATCHES = 6000
NATURAL_TRAIN_MAX_BYTES = 300 * 2**20
#: per-image scaling: this percentile of the resized image maps to 1
PERCENTILE = 99.5
#: the kinds of :func:`sgilo.pipeline.io.formats.sniff_format` read here, by their name in the
#: summary's ``files_by_type``
KIND_NAMES = {"picture": "image", "nifti": "nifti", "dicom": "dicom", "npy": "npy"}


def scale_to_unit(image: np.ndarray) -> np.ndarray | None:
    """image / percentile_99.5(image) clipped to [0, 1] (float32); None for an all-zero image."""
    ref = float(np.percentile(image, PERCENTILE))
    if ref <= 0:
        ref = float(image.max())
    if ref <= 0:
        return None
    return np.clip(image / ref, 0.0, 1.0).astype(np.float32)


def prepare_image(image: np.ndarray, size: int) -> np.ndarray | None:
    """Real (H, W) → float32 (size, size) in [0, 1]: pad to square, resize, percentile-scale."""
    from skimage.transform import resize

    square = mni.pad_to_square(np.nan_to_num(np.asarray(image, dtype=np.float64)))
    if square.shape != (size, size):
        square = resize(square, (size, size), anti_aliasing=True, preserve_range=True)
    return scale_to_unit(square)


def natural_train_count(size: int) -> int:
    """Patches ``"natural-train"`` yields at side ``size``: min(NATURAL_TRAIN_PATCHES, cap)."""
    return max(1, min(NATURAL_TRAIN_PATCHES, NATURAL_TRAIN_MAX_BYTES // (3 * 4 * size * size)))


def _prepare_rgb(pixels: np.ndarray, size: int) -> np.ndarray | None:
    """A PNG/JPEG's pixels (H, W) or (H, W, 3) → float32 (3, size, size) in [0, 1] (RGB rule in
    the module docstring); None for an all-zero image."""
    from skimage.transform import resize

    pixels = np.asarray(pixels)
    if pixels.dtype.kind in "ui":
        image = pixels.astype(np.float64) / float(np.iinfo(pixels.dtype).max)
    else:
        image = np.nan_to_num(pixels.astype(np.float64))
        peak = float(image.max()) if image.size else 0.0
        image = image / peak if peak > 1 else image
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    h, w = image.shape[:2]
    s = min(h, w)
    image = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    if image.shape[:2] != (size, size):
        image = resize(image, (size, size, 3), anti_aliasing=True, preserve_range=True)
    image = np.clip(image, 0.0, 1.0)
    if not image.any():
        return None
    return np.ascontiguousarray(np.moveaxis(image, -1, 0)).astype(np.float32)


def _picture_pixels(path: Path) -> np.ndarray:
    """Stored pixels of a PNG/JPEG, alpha dropped: (H, W) grey or (H, W, 3) RGB."""
    from skimage import io

    pixels = np.asarray(io.imread(path))
    if pixels.ndim == 3 and pixels.shape[-1] in (2, 4):  # grey+alpha, RGBA: drop alpha
        pixels = pixels[..., :-1]
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3):
        raise ValueError(f"unsupported image shape {pixels.shape}")
    return pixels


def _read_picture(path: Path) -> Iterator[np.ndarray]:
    """A PNG/JPEG as one grey image (H, W), float64 (RGB → ``rgb2gray``)."""
    from skimage.color import rgb2gray

    pixels = _picture_pixels(path)
    if pixels.ndim == 3:
        pixels = rgb2gray(pixels.astype(np.float64))
    yield pixels.astype(np.float64)


def _square_pixels(image: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Resample (H, W) with pixel spacing (row, column) so that both spacings equal the smaller."""
    from skimage.transform import resize

    dy, dx = spacing
    if dy <= 0 or dx <= 0 or np.isclose(dy, dx, rtol=1e-3):
        return image
    d = min(dy, dx)
    shape = (max(1, round(image.shape[0] * dy / d)), max(1, round(image.shape[1] * dx / d)))
    return resize(image, shape, anti_aliasing=True, preserve_range=True)


def _read_nifti(path: Path) -> Iterator[np.ndarray]:
    """The slices with enough foreground of every volume, display-oriented, square pixels;
    float64 (H, W), NaN → 0."""
    from sgilo.pipeline.io.nifti import read_nifti_volumes

    for volume in read_nifti_volumes(path, finite=False):
        spacing = (volume.zooms[1], volume.zooms[0])  # rows along y, columns along x
        for display in volume.data:
            image = np.nan_to_num(display.astype(np.float64))
            if np.count_nonzero(image) / image.size > mni.BRAIN_FRACTION:
                yield _square_pixels(image, spacing)


def _read_dicom(path: Path) -> Iterator[np.ndarray]:
    """One DICOM file's pixels (rescale applied), float32 (H, W)."""
    from sgilo.pipeline.io.dicom import read_dicom

    for series in read_dicom(path):
        yield from series.data


def _read_npy(path: Path) -> Iterator[np.ndarray]:
    data = np.load(path, allow_pickle=False)
    if data.dtype.kind not in "uif":
        raise ValueError(f"expected a real array, got dtype {data.dtype}")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"expected (H, W) or (N, H, W), got shape {data.shape}")
    yield from (s.astype(np.float64) for s in data)


_READERS = {"picture": _read_picture, "nifti": _read_nifti, "dicom": _read_dicom, "npy": _read_npy}


def _kind(path: Path) -> str:
    """The file's kind (:func:`sgilo.pipeline.io.formats.sniff_format`), one of
    :data:`KIND_NAMES`; ValueError for any other (k-space data, an unknown file)."""
    kind = sniff_format(path)
    if kind not in KIND_NAMES:
        raise ValueError(f"{kind} k-space data, not an image")
    return kind


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _load_folder(
    source: str, size: int, skipped: list[dict[str, str]], channels: int = 1
) -> tuple[list, dict]:
    root = Path(source).expanduser()
    if not root.exists():
        raise ValueError(
            f"{source}: no such file or folder (a source is '{MNI_TRAIN}' or a folder of "
            "PNG/JPEG, NIfTI or DICOM files)"
        )
    files = _files(root)
    if not files:
        raise ValueError(f"{source}: empty folder (no files)")
    images: list[np.ndarray] = []
    counts = dict.fromkeys(KIND_NAMES.values(), 0)
    n_skipped = 0
    for path in files:
        kind = ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # reader chatter (pydicom, imageio)
                kind = _kind(path)
                if channels == 1:
                    slices = [prepare_image(s, size) for s in _READERS[kind](path)]
                elif kind == "picture":
                    slices = [_prepare_rgb(_picture_pixels(path), size)]
                else:
                    raise ValueError(f"{kind} images are grey MRI data: not used for channels=3")
        except Exception as exc:  # any unreadable file: skip it, report it
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reason = reason.removeprefix(f"{shown_name(path)}: ")[:160]  # the path is listed
            skipped.append({"path": str(path), "reason": reason})
            warnings.warn(f"{path}: skipped ({reason})", stacklevel=3)
            n_skipped += 1
            continue
        kept = [s for s in slices if s is not None]
        if not kept:
            reason = "no usable slice" if kind == "nifti" else "blank image"
            skipped.append({"path": str(path), "reason": reason})
            warnings.warn(f"{path}: skipped ({reason})", stacklevel=3)
            n_skipped += 1
            continue
        images.extend(kept)
        counts[KIND_NAMES[kind]] += 1
    if not images:
        first = skipped[-n_skipped]["reason"] if n_skipped else "none"
        raise ValueError(
            f"{source}: no readable images ({n_skipped} of {len(files)} files skipped; "
            f"first: {first})"
        )
    summary = {
        "images": len(images),
        "files": sum(counts.values()),
        "skipped": n_skipped,
        "files_by_type": counts,
    }
    return images, summary


def load_training_images(
    sources: list[str], size: int, channels: int = 1
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load, square, resize and scale training images from several sources (module docstring).

    Args:
        sources: ``"mni-train"``, ``"natural-train"`` and/or folder (or file) paths; order is
            kept in the output.
        size: output side in pixels (an integer ≥ 8).
        channels: 1 (grey/magnitude images) or 3 (RGB: ``"natural-train"`` and PNG/JPEG only).

    Returns:
        images: float32, (N, size, size) (channels=1) or (N, 3, size, size) (channels=3),
        values in [0, 1].
        summary: ``{"total": N, "size": size, "sources": {source: {"images", "files",
        "skipped", "files_by_type"}}, "skipped": [{"path", "reason"}, ...]}``
        (``files``/``files_by_type`` count the files that gave images), plus ``"channels": 3``
        for RGB.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size: expected an integer >= 8, received {size!r}")
    if isinstance(sources, str) or not sources:
        raise ValueError("sources: expected a non-empty list of 'mni-train' or folder paths")
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels: expected 1 (grey) or 3 (RGB), received {channels!r}")
    chunks: list[np.ndarray] = []
    per_source: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, str]] = []
    for source in sources:
        source = str(source)
        if source in per_source:
            raise ValueError(f"{source}: listed twice")
        if source == NATURAL_TRAIN:
            if channels != 3:
                raise ValueError(
                    f"{source}: RGB natural-image patches need channels=3 (--channels 3); "
                    "a grey prior trains on 'mni-train' or folders"
                )
            from sgilo.pipeline.data.natural import natural_train_patches

            patches = natural_train_patches(int(size), natural_train_count(int(size)), 0)
            summary = {"images": len(patches), "files": 0, "skipped": 0, "files_by_type": {}}
            chunks.append(patches)  # already float32: no stacked copy (up to 300 MiB)
            per_source[source] = summary
            continue
        elif source == MNI_TRAIN and channels == 3:
            raise ValueError(
                f"{source}: MRI slices are grey; channels=3 (RGB) takes '{NATURAL_TRAIN}' or "
                "folders of PNG/JPEG"
            )
        elif source == MNI_TRAIN:
            slices = [scale_to_unit(s) for s in mni.mni_slices("train", int(size))]
            images = [s for s in slices if s is not None]
            summary = {"images": len(images), "files": 0, "skipped": 0, "files_by_type": {}}
        elif source == SYNTH_BRAIN:
            raise ValueError(
                f"{source}: synthetic images are generated on the fly, not loaded: `sgilo "
                f"train-gan --data {SYNTH_BRAIN}` samples them, mixed with loaded sources "
                "given beside it (pipeline/data/synth_brain.py, synth_mix.py)"
            )
        elif source.startswith("mni-") and not Path(source).exists():
            raise ValueError(
                f"{source}: unknown bundled source; only '{MNI_TRAIN}' is offered (the MNI "
                "validation slices are never used for training)"
            )
        elif source.startswith("natural-") and not Path(source).exists():
            raise ValueError(
                f"{source}: unknown bundled source; only '{NATURAL_TRAIN}' is offered (the "
                "validation photographs are never used for training)"
            )
        else:
            images, summary = _load_folder(source, int(size), skipped, int(channels))
        chunks.append(np.stack(images).astype(np.float32))
        per_source[source] = summary
    out = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    summary = {"total": len(out), "size": int(size), "sources": per_source, "skipped": skipped}
    if channels != 1:
        summary = {**summary, "channels": int(channels)}
    return out, summary
