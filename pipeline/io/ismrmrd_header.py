"""The ISMRMRD XML header (``dataset/xml``): the fields the k-space reader uses, parsed with the
``ismrmrd`` package's schema classes, and the pixel spacing it implies.

Axes follow ISMRMRD: ``x`` readout, ``y`` phase encode (``kspace_encode_step_1``), ``z`` partition
(``kspace_encode_step_2``; 1 for 2-D encodings, where ``z`` FOV is the slice thickness).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sgilo.pipeline.io.fastmri import MAX_HEADER_BYTES
from sgilo.pipeline.io.limits import shown_name
from sgilo.pipeline.io.types import InputError


def ismrmrd_error(path: Path, what: str) -> InputError:
    """An InputError whose message is one line: ``<file name>: <what>``."""
    return InputError(f"{shown_name(path)}: {' '.join(what.split())}")


@dataclass(frozen=True)
class IsmrmrdHeader:
    """The header fields used by the reader.

    Attributes:
        xml: the XML text.
        encoded, recon: ``(x, y, z)`` matrix sizes of the encoded and recon spaces.
        encoded_fov, recon_fov: ``(x, y, z)`` fields of view (mm).
        channels: ``receiverChannels`` (``None`` if absent).
        slices: ``encodingLimits.slice.maximum + 1`` (``None`` if absent).
        ky_center, kz_center: ``encodingLimits.kspace_encoding_step_{1,2}.center`` (``None``
            if absent).
        trajectory: ``"cartesian"``, ``"radial"``, ...
        encodings: number of ``encoding`` elements.
        calibration_mode: ``parallelImaging.calibrationMode`` (``"embedded"``, ``"separate"``,
            ...; ``None`` if absent).
        frame_of_reference_uid: ``measurementInformation.frameOfReferenceUID`` (or ``None``).
    """

    xml: str
    encoded: tuple[int, int, int]
    recon: tuple[int, int, int]
    encoded_fov: tuple[float, float, float]
    recon_fov: tuple[float, float, float]
    channels: int | None
    slices: int | None
    ky_center: int | None
    kz_center: int | None
    trajectory: str
    encodings: int
    calibration_mode: str | None = None
    frame_of_reference_uid: str | None = None

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Encoded FOV / encoded matrix per axis (mm): readout, phase encode, partition (the
        slice thickness of a 2-D encoding)."""
        return tuple(  # type: ignore[return-value]
            float(f) / n for f, n in zip(self.encoded_fov, self.encoded, strict=True)
        )


def _value(obj: object) -> str | None:
    return None if obj is None else str(getattr(obj, "value", obj))


def parse_header(xml: str) -> IsmrmrdHeader:
    """Parse the XML text; raises ``ValueError`` (or the schema library's errors) when it is not
    a valid ISMRMRD header with an encoding."""
    import ismrmrd.xsd

    header = ismrmrd.xsd.CreateFromDocument(xml)
    enc = header.encoding[0]
    limits = enc.encodingLimits
    system = header.acquisitionSystemInformation
    e, r = enc.encodedSpace, enc.reconSpace
    ky = limits.kspace_encoding_step_1
    kz = limits.kspace_encoding_step_2
    parallel = enc.parallelImaging
    measurement = header.measurementInformation
    return IsmrmrdHeader(
        xml=xml,
        encoded=(int(e.matrixSize.x), int(e.matrixSize.y), int(e.matrixSize.z)),
        recon=(int(r.matrixSize.x), int(r.matrixSize.y), int(r.matrixSize.z)),
        encoded_fov=(
            float(e.fieldOfView_mm.x),
            float(e.fieldOfView_mm.y),
            float(e.fieldOfView_mm.z),
        ),
        recon_fov=(
            float(r.fieldOfView_mm.x),
            float(r.fieldOfView_mm.y),
            float(r.fieldOfView_mm.z),
        ),
        channels=None
        if system is None or system.receiverChannels is None
        else int(system.receiverChannels),
        slices=None if limits.slice is None else int(limits.slice.maximum) + 1,
        ky_center=None if ky is None else int(ky.center),
        kz_center=None if kz is None else int(kz.center),
        trajectory=_value(enc.trajectory) or "",
        encodings=len(header.encoding),
        calibration_mode=None if parallel is None else _value(parallel.calibrationMode),
        frame_of_reference_uid=None
        if measurement is None
        else (measurement.frameOfReferenceUID or None),
    )


def read_header(path: Path, group: h5py.Group) -> IsmrmrdHeader:
    """Read and parse ``dataset/xml`` of an open ISMRMRD file's ``dataset`` group.

    Raises:
        InputError: no header, a dataset that is not one string of at most
            :data:`~sgilo.pipeline.io.fastmri.MAX_HEADER_BYTES`, invalid XML, non-finite or
            non-positive fields of view.
    """
    ds = group.get("xml")
    if not isinstance(ds, h5py.Dataset) or ds.size == 0:
        raise ismrmrd_error(path, "ISMRMRD file without an XML header (dataset/xml)")
    if ds.size > 1 or ds.dtype.itemsize > MAX_HEADER_BYTES or ds.dtype.kind not in "SOU":
        raise ismrmrd_error(
            path,
            f"dataset/xml has shape {ds.shape} and dtype {ds.dtype}: expected one string of at "
            f"most {MAX_HEADER_BYTES} bytes",
        )
    raw = ds[()]
    raw = raw.reshape(-1)[0] if isinstance(raw, np.ndarray) else raw
    xml = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        header = parse_header(xml)
    except Exception as exc:  # xsdata raises several types for bad XML
        raise ismrmrd_error(
            path, f"invalid ISMRMRD XML header ({type(exc).__name__}: {exc})"
        ) from exc
    fov = header.encoded_fov
    if not all(np.isfinite(fov)) or min(fov) <= 0:
        raise ismrmrd_error(path, f"bad geometry: encoded field of view {fov} mm")
    return header


def header_geometry(xml: str) -> dict | None:
    """Pixel spacing from an ISMRMRD header: ``{"encoded": (x, y, z), "spacing_mm": (dx, dy,
    dz)}`` with ``d = encoded FOV / encoded matrix`` per axis (readout x, phase y, slice z);
    ``None`` if the header cannot be parsed or a value is not positive."""
    try:
        header = parse_header(xml)
        spacing = header.spacing_mm
    except Exception:  # a header we cannot use for geometry: the caller falls back
        return None
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        return None
    return {"encoded": header.encoded, "spacing_mm": spacing}
