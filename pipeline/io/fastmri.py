"""fastMRI-format HDF5: read k-space studies, write k-space inputs and submission reconstructions.

On disk (fastMRI's layout):

- ``kspace``: complex, ``(slices, H, W)`` single-coil or ``(slices, coils, H, W)`` multi-coil;
  ``W`` (the last axis) is the phase-encode direction that column masks select.
- optional ``mask``: ``(W,)`` 0/1 or bool (test-set style) with attributes ``acceleration`` and
  ``num_low_frequency``; optional ``reconstruction_rss`` / ``reconstruction_esc`` targets
  ``(slices, H', W')``, ``ismrmrd_header`` and coil maps ``sens_maps``.
- submissions: ``reconstruction``, float32 magnitude ``(slices, H, W)``.

Every bad input raises :class:`~sgilo.pipeline.io.types.InputError` with a one-line message naming
the file. Writers are atomic: the file appears complete under its final name or not at all.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sgilo.operators.masks import Seed, column_mask, seed_from_name
from sgilo.pipeline.io.atomic import atomic_path
from sgilo.pipeline.io.limits import check_dataset_size, check_file, current_limits, shown_name
from sgilo.pipeline.io.types import InputError, KSpaceStudy

MAX_GRID = 4096
MAX_COILS = 128
MAX_SLICES = 2048
#: most bytes of an XML header (``ismrmrd_header``, ISMRMRD's ``xml``) read
MAX_HEADER_BYTES = 16 * 2**20
MAPS_DATASETS = ("sens_maps", "maps", "sensitivity_maps")
_FIELD_ATTRS = ("acceleration", "num_low_frequency", "num_low_frequencies")


def _error(path: Path, what: str) -> InputError:
    """An InputError whose message is one line: ``<file name>: <what>``."""
    return InputError(f"{shown_name(path)}: {' '.join(what.split())}")


# ----------------------------------------------------------------------------- reading


def read_fastmri(path: str | os.PathLike[str]) -> KSpaceStudy:
    """Read a fastMRI-format k-space file.

    Returns a study with ``kspace`` complex64 ``(slices, coils, H, W)`` (``coils = 1`` for
    single-coil input). The sampling mask is the ``mask`` dataset if there is one; otherwise it
    is detected from columns that are exactly zero in every slice, coil and row. Zero columns
    only at the two edges of an otherwise fully sampled grid are zero-padding (as in fastMRI's
    raw knee data), not undersampling: such a study is fully sampled (``mask is None``).
    ``acceleration`` / ``num_low_frequencies`` come from the file's attributes when present,
    else from the mask (``W / sampled columns``; the sampled run containing column ``W // 2``).

    Raises:
        InputError: missing, empty, non-HDF5 or corrupt file; no ``kspace`` dataset; k-space
            not complex, of rank other than 3 or 4, with a zero or absurd size (checked before
            reading: per axis, and the voxel limit of :mod:`sgilo.pipeline.io.limits` in all),
            non-finite or all zero; a mask of the wrong length, non-binary or sampling
            nothing; bad attributes, maps or target.
    """
    path = Path(path)
    if path.is_dir():
        raise _error(path, "is a directory, not an HDF5 file")
    check_file(path)  # a regular, readable, non-empty file within the byte limit
    try:
        if not h5py.is_hdf5(path):
            raise _error(path, "not an HDF5 file")
        with h5py.File(path, "r") as f:
            return _read_study(path, f)
    except InputError:
        raise
    except (OSError, RuntimeError) as exc:
        raise _error(path, f"corrupt or truncated HDF5 file ({exc})") from exc


def _read_study(path: Path, f: h5py.File) -> KSpaceStudy:
    kspace, multicoil = _read_kspace(path, f)
    _, _, h, w = kspace.shape
    sampled_columns = np.any(kspace != 0, axis=(0, 1, 2))
    if not sampled_columns.any():
        raise _error(path, "k-space is all zero")

    mask = _read_mask(path, f, w) if "mask" in f else _detect_mask(sampled_columns)
    acceleration = _number_attr(path, f.attrs, ("acceleration",), low=1.0)
    num_low = _number_attr(path, f.attrs, ("num_low_frequency", "num_low_frequencies"), low=0.0)
    if mask is None or mask.all():
        mask, acceleration, num_low = None, None, None
    else:
        acceleration = acceleration if acceleration is not None else w / int(mask.sum())
        num_low = num_low if num_low is not None else center_run_length(mask)
    if num_low is not None and (num_low != int(num_low) or num_low > w):
        raise _error(path, f"attribute num_low_frequency = {num_low} is not an integer <= {w}")

    return KSpaceStudy(
        name=path.stem,
        source=path,
        kspace=kspace,
        multicoil=multicoil,
        mask=mask,
        acceleration=None if acceleration is None else float(acceleration),
        num_low_frequencies=None if num_low is None else int(num_low),
        maps=_read_maps(path, f, kspace.shape, multicoil),
        target=_read_target(path, f, kspace.shape[0], multicoil),
        attrs={k: _jsonable(v) for k, v in f.attrs.items() if k not in _FIELD_ATTRS},
        ismrmrd_header=_read_header(path, f),
    )


def _read_kspace(path: Path, f: h5py.File) -> tuple[np.ndarray, bool]:
    """Validate the ``kspace`` dataset's type and shape, then read it as complex64
    ``(slices, coils, H, W)``; also return whether it was multi-coil."""
    ds = f.get("kspace")
    if not isinstance(ds, h5py.Dataset):
        names: list[str] = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        found = ", ".join(names) if names else "none"
        raise _error(path, f"no 'kspace' dataset (datasets found: {found})")
    if ds.dtype.kind != "c":
        raise _error(path, f"kspace is not complex (dtype {ds.dtype})")
    if ds.ndim not in (3, 4):
        raise _error(
            path,
            f"kspace has rank {ds.ndim} (shape {ds.shape}), expected (slices, H, W) "
            "or (slices, coils, H, W)",
        )
    if 0 in ds.shape:
        raise _error(path, f"kspace has a zero-size dimension (shape {ds.shape})")
    slices, *coils, h, w = ds.shape
    max_samples = current_limits().max_voxels
    if (
        h > MAX_GRID
        or w > MAX_GRID
        or slices > MAX_SLICES
        or (coils and coils[0] > MAX_COILS)
        or math.prod(ds.shape) > max_samples
    ):
        raise _error(
            path,
            f"kspace shape {ds.shape} is too large (H, W <= {MAX_GRID}, coils <= {MAX_COILS}, "
            f"slices <= {MAX_SLICES}, <= {max_samples} samples in all: --max-input-voxels)",
        )
    kspace = np.ascontiguousarray(ds.astype(np.complex64)[()])
    if not np.isfinite(kspace).all():
        raise _error(path, "kspace contains non-finite values (NaN or Inf)")
    multicoil = ds.ndim == 4
    return (kspace if multicoil else kspace[:, None]), multicoil


def _read_mask(path: Path, f: h5py.File, width: int) -> np.ndarray:
    ds = f["mask"]
    if not isinstance(ds, h5py.Dataset):
        raise _error(path, "'mask' is not a dataset")
    if ds.shape != (width,):
        raise _error(path, f"mask has shape {ds.shape}, expected ({width},) (the kspace width)")
    if ds.dtype.kind not in "biuf":
        raise _error(path, f"mask is not numeric or bool (dtype {ds.dtype})")
    values = ds[()]
    if not np.isin(values, (0, 1)).all():
        raise _error(path, "mask has values other than 0 and 1")
    mask = values.astype(bool)
    if not mask.any():
        raise _error(path, "mask samples no columns")
    return mask


def _detect_mask(sampled_columns: np.ndarray) -> np.ndarray | None:
    """Columns with data as a bool ``(W,)`` mask; ``None`` if fully sampled up to edge padding."""
    idx = np.flatnonzero(sampled_columns)
    if sampled_columns[idx[0] : idx[-1] + 1].all():
        return None
    return sampled_columns.copy()


def _number_attr(
    path: Path, attrs: h5py.AttributeManager, names: tuple[str, ...], low: float
) -> float | None:
    for name in names:
        if name in attrs:
            value = attrs[name]
            try:
                number = float(np.asarray(value).item())
            except (TypeError, ValueError):
                number = float("nan")
            if not np.isfinite(number) or number < low:
                raise _error(path, f"attribute {name} = {value!r} is not a number >= {low:g}")
            return number
    return None


def _read_maps(
    path: Path, f: h5py.File, shape: tuple[int, ...], multicoil: bool
) -> np.ndarray | None:
    name = next((n for n in MAPS_DATASETS if isinstance(f.get(n), h5py.Dataset)), None)
    if name is None:
        return None
    ds = f[name]
    disk_shape = shape if multicoil else (shape[0], *shape[2:])
    if ds.dtype.kind != "c" or ds.shape != disk_shape:
        raise _error(path, f"{name} must be complex {disk_shape}, got {ds.dtype} {ds.shape}")
    maps = ds.astype(np.complex64)[()]
    if not np.isfinite(maps).all():
        raise _error(path, f"{name} contains non-finite values (NaN or Inf)")
    return maps if multicoil else maps[:, None]


def _read_target(path: Path, f: h5py.File, slices: int, multicoil: bool) -> np.ndarray | None:
    """fastMRI's challenge target: RSS for multi-coil, ESC for single-coil, else the other."""
    names = ("reconstruction_rss", "reconstruction_esc")
    for name in names if multicoil else names[::-1]:
        ds = f.get(name)
        if isinstance(ds, h5py.Dataset):
            if ds.dtype.kind not in "iuf" or ds.ndim != 3 or ds.shape[0] != slices:
                raise _error(
                    path, f"{name} must be real ({slices}, H, W), got {ds.dtype} {ds.shape}"
                )
            if max(ds.shape[1:]) > MAX_GRID:
                raise _error(path, f"{name} shape {ds.shape} is too large (H, W <= {MAX_GRID})")
            check_dataset_size(path, name, ds.shape, 4)
            return ds.astype(np.float32)[()]
    return None


def _read_header(path: Path, f: h5py.File) -> str | None:
    ds = f.get("ismrmrd_header")
    if not isinstance(ds, h5py.Dataset):
        return None
    if ds.size > 1 or ds.dtype.itemsize > MAX_HEADER_BYTES:
        raise _error(
            path,
            f"ismrmrd_header has shape {ds.shape} and dtype {ds.dtype}: expected one string "
            f"of at most {MAX_HEADER_BYTES} bytes",
        )
    value = ds[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else b""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _jsonable(value: Any) -> Any:
    """An HDF5 attribute value as a JSON-able Python value."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    return str(value)


def center_run_length(mask: np.ndarray) -> int:
    """Length of the run of sampled columns containing the centre column ``W // 2``
    (0 if it is unsampled). ``mask``: bool ``(W,)``."""
    mask = np.asarray(mask, dtype=bool)
    c = mask.shape[0] // 2
    if not mask[c]:
        return 0
    unsampled = np.flatnonzero(~mask)
    before, after = unsampled[unsampled < c], unsampled[unsampled > c]
    start = before[-1] + 1 if before.size else 0
    end = after[0] if after.size else mask.shape[0]
    return int(end - start)


# ----------------------------------------------------------------------------- writing


def _write_atomically(path: str | os.PathLike[str], fill: Callable[[h5py.File], None]) -> Path:
    """Create ``path`` atomically (:func:`sgilo.pipeline.io.atomic.atomic_path`);
    on any failure the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "x") as f:
        fill(f)
    return path


def _write_attrs(f: h5py.File, attrs: Mapping[str, Any] | None) -> None:
    for key, value in (attrs or {}).items():
        if isinstance(value, np.generic):
            value = value.item()
        scalar = (str, bool, int, float)
        ok = isinstance(value, scalar) or (
            isinstance(value, list | tuple)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        )
        if not isinstance(key, str) or not ok:
            raise ValueError(f"attribute {key!r}: {type(value).__name__} is not a JSON-able scalar")
        f.attrs[key] = np.asarray(value) if isinstance(value, list | tuple) else value


#: what ``reconstruction_std`` holds, as its attribute ``description`` says (docs/GENERATIVE.md,
#: "Uncertainty")
STD_DESCRIPTION = (
    "per-pixel std of the magnitudes over SGILO's chains: where the posterior samples disagree "
    "under the model (they differ in the model image's trusted low band; the rest comes from "
    "the final l1-wavelet step); it does not rank the error (not an error map)"
)


def write_reconstruction(
    path: str | os.PathLike[str],
    reconstruction: np.ndarray,
    *,
    attrs: Mapping[str, Any] | None = None,
    std: np.ndarray | None = None,
) -> Path:
    """Write a fastMRI submission file atomically: dataset ``reconstruction``, float32
    ``(slices, H, W)``, plus ``attrs`` (JSON-able scalars, strings, lists of numbers), and with
    ``std`` (a per-pixel standard deviation of the same shape) the extra dataset
    ``reconstruction_std``, whose attribute ``description`` is :data:`STD_DESCRIPTION`.

    ``reconstruction``: real ``(slices, H, W)`` (a magnitude image), finite. Returns the path.
    """
    recon = np.asarray(reconstruction)
    if recon.dtype.kind not in "biuf":
        raise ValueError(f"reconstruction must be real-valued, got dtype {recon.dtype}")
    if recon.ndim != 3:
        raise ValueError(f"reconstruction must be (slices, H, W), got shape {recon.shape}")
    if not np.isfinite(recon).all():
        raise ValueError("reconstruction contains non-finite values (NaN or Inf)")
    data = recon.astype(np.float32)
    if std is not None and (np.shape(std) != recon.shape or not np.isfinite(std).all()):
        raise ValueError(f"std must be finite with shape {recon.shape}, got {np.shape(std)}")

    def fill(f: h5py.File) -> None:
        f.create_dataset("reconstruction", data=data)
        if std is not None:
            ds = f.create_dataset("reconstruction_std", data=np.asarray(std, dtype=np.float32))
            ds.attrs["description"] = STD_DESCRIPTION
        _write_attrs(f, attrs)

    return _write_atomically(path, fill)


def write_kspace(
    path: str | os.PathLike[str],
    kspace: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
    maps: np.ndarray | None = None,
    target: np.ndarray | None = None,
    ismrmrd_header: str | None = None,
) -> Path:
    """Write a fastMRI-format k-space file atomically.

    Args:
        kspace: complex ``(slices, H, W)`` or ``(slices, coils, H, W)``, stored as complex64
            (as given: unsampled columns are not zeroed here).
        mask: bool or 0/1 ``(W,)``; stored as bool ``mask`` with attributes ``acceleration``
            (``W / sampled columns``) and ``num_low_frequency`` (the sampled run containing
            column ``W // 2``). ``attrs`` may override both (e.g. a nominal acceleration).
        attrs: extra file attributes (JSON-able scalars, strings, lists of numbers).
        maps: complex coil maps, the shape of ``kspace``; stored as ``sens_maps``.
        target: real ``(slices, H', W')``; stored as float32 ``reconstruction_rss``.
        ismrmrd_header: XML text stored as dataset ``ismrmrd_header``.
    """
    k = np.asarray(kspace)
    if k.dtype.kind != "c" or k.ndim not in (3, 4) or 0 in k.shape:
        raise ValueError(
            f"kspace must be complex (S, H, W) or (S, C, H, W), got {k.dtype} {k.shape}"
        )
    if not np.isfinite(k).all():
        raise ValueError("kspace contains non-finite values (NaN or Inf)")
    width = k.shape[-1]
    all_attrs: dict[str, Any] = {}
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (width,) or not np.isin(mask, (0, 1)).all() or not mask.any():
            raise ValueError(f"mask must be 0/1 ({width},) sampling something, got {mask.shape}")
        mask = mask.astype(bool)
        all_attrs["acceleration"] = width / int(mask.sum())
        all_attrs["num_low_frequency"] = center_run_length(mask)
    all_attrs.update(attrs or {})
    if maps is not None:
        maps = np.asarray(maps)
        if maps.shape != k.shape or maps.dtype.kind != "c":
            raise ValueError(f"maps must be complex {k.shape}, got {maps.dtype} {maps.shape}")
    if target is not None:
        target = np.asarray(target)
        if target.dtype.kind not in "biuf" or target.ndim != 3 or target.shape[0] != k.shape[0]:
            raise ValueError(f"target must be real ({k.shape[0]}, H, W), got {target.shape}")

    def fill(f: h5py.File) -> None:
        f.create_dataset("kspace", data=k.astype(np.complex64))
        if mask is not None:
            f.create_dataset("mask", data=mask)
        if maps is not None:
            f.create_dataset("sens_maps", data=maps.astype(np.complex64))
        if target is not None:
            f.create_dataset("reconstruction_rss", data=target.astype(np.float32))
        if ismrmrd_header is not None:
            f.create_dataset("ismrmrd_header", data=ismrmrd_header.encode("utf-8"))
        _write_attrs(f, all_attrs)

    return _write_atomically(path, fill)


def write_study(path: str | os.PathLike[str], study: KSpaceStudy) -> Path:
    """Write a study in the fastMRI k-space format (its on-disk layout: single-coil studies
    as ``(slices, H, W)``). Only column masks ``(W,)`` can be stored."""
    if study.mask is not None and study.mask.ndim != 1:
        raise ValueError("the fastMRI format stores column masks (W,) only, not 2-D masks")
    squeeze = (lambda a: a) if study.multicoil else (lambda a: a[:, 0])
    attrs = dict(study.attrs)
    if study.mask is not None and study.acceleration is not None:
        attrs["acceleration"] = study.acceleration
    if study.mask is not None and study.num_low_frequencies is not None:
        attrs["num_low_frequency"] = study.num_low_frequencies
    return write_kspace(
        path,
        squeeze(study.kspace),
        mask=study.mask,
        attrs=attrs,
        maps=None if study.maps is None else squeeze(study.maps),
        target=study.target,
        ismrmrd_header=study.ismrmrd_header,
    )


# ----------------------------------------------------------------------------- undersampling


def retrospective_undersample(
    study: KSpaceStudy,
    acceleration: float,
    center_fraction: float,
    seed: Seed | None = None,
    kind: str = "random",
) -> KSpaceStudy:
    """Undersample a fully sampled study with a fastMRI column mask (``kind`` "random" or
    "equispaced"; see :func:`sgilo.operators.masks.column_mask`).

    ``seed=None`` seeds from the file name as fastMRI does (``seed_from_name`` of the full file
    name, e.g. ``"file1000001.h5"``). Returns a new study whose k-space is zero outside the mask
    (bool ``(W,)``), with the nominal ``acceleration`` and ``num_low_frequencies =
    round(W * center_fraction)`` recorded.

    Raises:
        InputError: the study is already undersampled, or the parameters are invalid.
    """
    source = study.source
    if study.is_undersampled:
        raise _error(
            source,
            f"k-space is already undersampled (acceleration {study.acceleration}); "
            "refusing to undersample it again",
        )
    if not np.isfinite(acceleration) or acceleration < 1:
        raise _error(source, f"acceleration must be >= 1, got {acceleration}")
    width = study.shape[1]
    try:
        mask = column_mask(
            kind,
            width,
            center_fraction,
            acceleration,
            seed_from_name(source.name) if seed is None else seed,
        )
    except ValueError as exc:
        raise _error(source, f"cannot undersample: {exc}") from exc
    return dataclasses.replace(
        study,
        kspace=study.kspace * mask,
        mask=mask,
        acceleration=float(acceleration),
        num_low_frequencies=int(round(width * center_fraction)),
    )
