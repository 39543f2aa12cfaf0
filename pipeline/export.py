"""Export one study's reconstruction in the configured formats, into a staging folder (the caller
commits all outputs of an input together, see :mod:`sgilo.pipeline.io.staging`).

Outputs for a study whose output stem is ``<stem>``:

- ``h5``: the fastMRI submission file (``reconstruction``, and ``reconstruction_std`` when the
  solver gave a std map), named by the caller (``<input file name>`` for HDF5 inputs);
- ``nifti``: ``<stem>.nii.gz`` (and ``<stem>_std.nii.gz``), float32, on the study's geometry
  (:mod:`sgilo.pipeline.io.geometry`);
- ``dicom``: a derived MR series in ``<stem>_dicom/`` (and ``<stem>_std_dicom/``)
  (:func:`sgilo.pipeline.io.dicom_write.write_dicom_series`);
- ``png``: ``<stem>.png``, the middle slice: reconstruction, zero-filled, reference and its
  error, std (those that exist).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sgilo.operators.fft import ifft2c
from sgilo.pipeline.io.dicom import DicomSeries
from sgilo.pipeline.io.dicom_write import write_dicom_series
from sgilo.pipeline.io.fastmri import write_reconstruction
from sgilo.pipeline.io.geometry import series_like, volume_like
from sgilo.pipeline.io.nifti import ImageVolume, write_nifti
from sgilo.pipeline.io.staging import StagedOutputs
from sgilo.pipeline.io.types import KSpaceStudy

if TYPE_CHECKING:  # sgilo.pipeline.reconstruct imports this module
    from sgilo.pipeline.reconstruct import StudyReconstruction

OUTPUT_FORMATS = ("h5", "nifti", "dicom", "png")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"h5,nifti"`` → ``("h5", "nifti")``; raises ``ValueError`` for an unknown or empty
    entry."""
    formats = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",")))
    bad = [f for f in formats if f not in OUTPUT_FORMATS]
    if bad or not formats:
        raise ValueError(
            f"unknown output format(s) {', '.join(map(repr, bad)) or repr(text)}; choose from "
            f"{', '.join(OUTPUT_FORMATS)}"
        )
    return formats


def default_formats(study: KSpaceStudy) -> tuple[str, ...]:
    """``h5``, plus the input's own image format for image inputs."""
    if isinstance(study.image_source, ImageVolume):
        return ("h5", "nifti")
    if isinstance(study.image_source, DicomSeries):
        return ("h5", "dicom")
    return ("h5",)


#: the first words of the std map's descriptions (NIfTI ``descrip``, DICOM ``SeriesDescription``,
#: both cut at the end): what it is, before the method that made it (docs/GENERATIVE.md,
#: "Uncertainty": the chains' spread does not rank the error)
STD_LABEL = "std over chains, not an error map:"


def description(study: KSpaceStudy, recon: StudyReconstruction) -> str:
    """The method and its parameters, for DICOM series descriptions and figure titles: the
    solver's diagnostics (:meth:`StudyReconstruction.record`), a list whose entries are all equal
    (a per-slice λ) shown as its one value, other lists and ``None`` as JSON text."""
    parts = [headline(study, recon)]
    for key, value in recon.record().items():
        if isinstance(value, list) and value and all(v == value[0] for v in value):
            value = value[0] if isinstance(value[0], bool | int | float | str) else value
        if isinstance(value, bool | int | str):
            parts.append(f"{key}={value}")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        else:
            parts.append(f"{key}={json.dumps(value)}")
    return " ".join(parts)


def headline(study: KSpaceStudy, recon: StudyReconstruction) -> str:
    """The first words of :func:`description`, ASCII, short enough for a DICOM
    ``SeriesDescription`` (64) and a NIfTI ``descrip`` (80): method (with ``auto``'s choices),
    acceleration, calibration size and the prior-fit ratio of a generative reconstruction
    (:func:`sgilo.pipeline.prior_fit.ratio_text`). A slice where ``auto`` blended classical
    candidates counts as ``blend`` here (their names and weights follow in
    :func:`description`'s ``auto_choice`` and ``auto_weights``), so the rest fits in 64."""
    from sgilo.pipeline.prior_fit import ratio_text

    method = recon.method
    choice = getattr(recon.diagnostics, "auto_choice", None)
    if choice:
        choice = ["blend" if "+" in name else name for name in choice]
        counts = {name: choice.count(name) for name in dict.fromkeys(choice)}
        method += "(" + ",".join(f"{n} {k}" for n, k in counts.items()) + ")"
    parts = [f"sgilo {method}"]
    if study.acceleration:
        parts.append(f"R={study.acceleration:g}")
    if study.num_low_frequencies:
        parts.append(f"ACS={study.num_low_frequencies}")
    fit = ratio_text(getattr(recon.diagnostics, "prior_fit", None))
    if fit:
        parts.append(fit)
    return " ".join(parts)


def zero_filled(study: KSpaceStudy) -> np.ndarray:
    """Root-sum-of-squares of ``|ifft2c(kspace)|`` over coils: float32 ``(slices, H, W)``."""
    images = ifft2c(torch.from_numpy(study.kspace)).abs()
    return torch.sqrt((images**2).sum(dim=1)).numpy().astype(np.float32)


def export_study(
    stage: StagedOutputs,
    study: KSpaceStudy,
    recon: StudyReconstruction,
    *,
    h5_name: str,
    stem: str,
    formats: tuple[str, ...],
    anonymize: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``recon`` (magnitude ``(slices, H, W)`` and optional std of the same shape) into
    ``stage`` in each of ``formats`` (see the module docstring for names)."""
    text = description(study, recon)
    volumes = {"": recon.magnitude}
    if recon.std is not None:
        volumes["_std"] = recon.std
    if "h5" in formats:
        write_reconstruction(stage.path(h5_name), recon.magnitude, attrs=attrs, std=recon.std)
    if "nifti" in formats:
        for suffix, data in volumes.items():
            write_nifti(
                stage.path(f"{stem}{suffix}.nii.gz"),
                data,
                volume_like(study, data),
                description=(f"{STD_LABEL} " if suffix else "") + headline(study, recon),
            )
    if "dicom" in formats:
        for suffix, data in volumes.items():
            write_dicom_series(
                stage.path(f"{stem}{suffix}_dicom"),
                data,
                series_like(study, data),
                description=(f"{STD_LABEL} " if suffix else "") + text,
                anonymize=anonymize,
            )
    if "png" in formats:
        _figure(stage, study, recon, f"{stem}.png", text)


def _figure(
    stage: StagedOutputs, study: KSpaceStudy, recon: StudyReconstruction, name: str, title: str
) -> None:
    from sgilo.pipeline.report import reconstruction_figure

    k = recon.magnitude.shape[0] // 2
    panels = {f"{recon.method}": recon.magnitude[k]}
    if recon.method != "zero-filled":
        panels["zero-filled"] = zero_filled(study)[k]
    reference = None
    if study.target is not None and study.target.shape == recon.magnitude.shape:
        reference = "reference"
        panels["reference"] = study.target[k]
        panels["|error|"] = np.abs(recon.magnitude[k] - study.target[k])
    if recon.std is not None:
        panels["std"] = recon.std[k]
    reconstruction_figure(
        panels, stage.path(name), title=f"{study.name}: {title}", reference=reference
    )
