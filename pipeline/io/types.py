"""Data records shared by the readers and writers: k-space studies and the input error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the image records import this module: no import at run time
    from sgilo.pipeline.io.dicom import DicomSeries
    from sgilo.pipeline.io.nifti import ImageVolume


class InputError(ValueError):
    """A bad input file. The message is one line naming the file and saying what is wrong."""


@dataclass
class KSpaceStudy:
    """One k-space acquisition (a volume of 2-D slices) as read from an input file.

    Attributes:
        name: the input file's stem (``file1000001`` for ``file1000001.h5``).
        source: the input file's path.
        kspace: complex64 ``(slices, coils, H, W)``; single-coil data has ``coils = 1``.
            Unsampled locations are zero.
        multicoil: whether the input was multi-coil (``(slices, coils, H, W)`` on disk) rather
            than single-coil (``(slices, H, W)`` on disk).
        mask: the sampling pattern shared by all slices and coils: bool ``(W,)`` (columns, the
            fastMRI layout) or bool ``(H, W)``; ``None`` when the data is fully sampled.
        acceleration: nominal (file attribute) or achieved acceleration; ``None`` if fully
            sampled.
        num_low_frequencies: number of fully sampled centre columns, when known.
        maps: complex64 coil sensitivity maps ``(slices, coils, H, W)`` if the file has them.
        target: float32 reference magnitude images ``(slices, H', W')`` if the file has one
            (fastMRI ``reconstruction_rss`` / ``reconstruction_esc``; often cropped).
        attrs: the file's other attributes, as JSON-able Python values.
        ismrmrd_header: the ISMRMRD XML header, if the file has one.
        image_source: for image inputs (NIfTI, DICOM) turned into k-space, the image record
            read from the file (its geometry, UIDs and headers are what the exports write
            with); ``None`` for k-space inputs.
        affine: float64 4×4 display affine (RAS+ mm of column ``j``, row ``i``, slice ``k``;
            :mod:`sgilo.pipeline.io.geometry`) from the acquisition's own geometry (ISMRMRD
            acquisition headers), or ``None``.
        frame_of_reference_uid: the patient coordinate system of ``affine`` (shared by the
            volumes of one acquisition), or ``None``.
        noise_std: std ``σ`` of the complex noise of one k-space sample of one coil
            (``E|n|² = σ²``), measured from noise scans (the coils are then pre-whitened:
            independent noise of equal variance), or ``None``.
        calibration: complex64 ``(slices, coils, H, W)`` reference (parallel-imaging
            calibration) k-space acquired apart from the imaging lines, zero where unsampled,
            or ``None``; coil maps are estimated from it.
        calibration_mask: bool ``(W,)``, the phase-encode lines of ``calibration``.
    """

    name: str
    source: Path
    kspace: np.ndarray
    multicoil: bool
    mask: np.ndarray | None = None
    acceleration: float | None = None
    num_low_frequencies: int | None = None
    maps: np.ndarray | None = None
    target: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    ismrmrd_header: str | None = None
    image_source: ImageVolume | DicomSeries | None = field(default=None, repr=False)
    affine: np.ndarray | None = field(default=None, repr=False)
    frame_of_reference_uid: str | None = None
    noise_std: float | None = None
    calibration: np.ndarray | None = field(default=None, repr=False)
    calibration_mask: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        if self.kspace.ndim != 4 or self.kspace.dtype != np.complex64:
            raise ValueError(
                f"kspace must be complex64 (slices, coils, H, W), got {self.kspace.dtype} "
                f"{self.kspace.shape}"
            )
        if not self.multicoil and self.kspace.shape[1] != 1:
            raise ValueError(f"single-coil kspace must have coils = 1, got {self.kspace.shape}")
        h, w = self.shape
        if self.mask is not None and (
            self.mask.dtype != np.bool_ or self.mask.shape not in ((w,), (h, w))
        ):
            raise ValueError(
                f"mask must be bool ({w},) or ({h}, {w}), got {self.mask.dtype} {self.mask.shape}"
            )
        if self.maps is not None and self.maps.shape != self.kspace.shape:
            raise ValueError(
                f"maps shape {self.maps.shape} differs from kspace shape {self.kspace.shape}"
            )
        if self.target is not None and (
            self.target.ndim != 3 or self.target.shape[0] != self.num_slices
        ):
            raise ValueError(f"target must be ({self.num_slices}, H', W'), got {self.target.shape}")
        if self.affine is not None and np.shape(self.affine) != (4, 4):
            raise ValueError(f"affine must be 4x4, got {np.shape(self.affine)}")
        if self.calibration is not None and (
            self.calibration.shape != self.kspace.shape
            or self.calibration_mask is None
            or self.calibration_mask.shape != (w,)
        ):
            raise ValueError(
                f"calibration must be {self.kspace.shape} with a ({w},) calibration_mask"
            )

    @property
    def is_undersampled(self) -> bool:
        """Whether some k-space locations are unsampled (a mask that is not all true)."""
        return self.mask is not None and not bool(self.mask.all())

    @property
    def num_slices(self) -> int:
        """Number of slices."""
        return int(self.kspace.shape[0])

    @property
    def num_coils(self) -> int:
        """Number of coils (1 for single-coil data)."""
        return int(self.kspace.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """The k-space (and image) grid ``(H, W)``."""
        return int(self.kspace.shape[2]), int(self.kspace.shape[3])

    def sampling_mask(self) -> np.ndarray:
        """The sampling pattern as bool ``(H, W)`` (all true when fully sampled)."""
        h, w = self.shape
        if self.mask is None:
            return np.ones((h, w), dtype=bool)
        return np.broadcast_to(self.mask, (h, w)).copy()
