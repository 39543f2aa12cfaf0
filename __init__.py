"""sgilo: MRI reconstruction with generative priors (SGILO, ILO, CSGM) and classical baselines.

This file is the package's public API. The repository root *is* the installed package ``sgilo``
(``pyproject.toml`` maps it with ``package-dir = {"sgilo" = "."}``), so its folders are the
sub-packages ``sgilo.operators`` (forward models), ``sgilo.models`` (StyleGAN-2, latent score
models, shipped weights), ``sgilo.pipeline`` (I/O, solvers, the reconstruction workflow; the
benchmarks and tuning tools under ``sgilo.pipeline.research``) and ``sgilo.flows`` (Prefect flows
and the ``sgilo`` command line). ``sgilo`` is the only name the package puts into site-packages.

The names below are loaded on first use, so ``import sgilo`` is cheap. Anything not listed here is
internal and may change between versions.

Reading and writing
    ``read_input(path, acceleration=None, center_fraction=None)`` → ``list[KSpaceStudy]``: any
    accepted input (fastMRI or ISMRMRD HDF5, a DICOM file or folder, NIfTI), undersampled
    retrospectively when asked; ``detect_format``; the per-format readers ``read_fastmri``,
    ``read_ismrmrd``, ``read_dicom``, ``read_nifti``; the writers ``write_reconstruction``
    (fastMRI HDF5), ``write_kspace``, ``write_ismrmrd``, ``write_nifti``, ``write_dicom_series``.
Forward models
    ``SingleCoilMRI(mask)``, ``MultiCoilMRI(maps, mask)``, ``NonCartesianMRI``; masks
    ``column_mask``, ``poisson_disc_mask``; ``fft2c`` / ``ifft2c``; ``estimate_maps`` (ESPIRiT).
Reconstruction
    ``METHODS``; ``load_prior(name_or_path)`` → ``Prior``; ``solve(y, op, method, prior=…)`` →
    ``ReconResult``; ``reconstruct_study`` / ``reconstruct_file`` (what ``sgilo reconstruct``
    runs); the solver configurations ``CSGMConfig``, ``ILOConfig``, ``SGILOConfig``.
Metrics
    ``psnr``, ``ssim``, ``nmse``, ``evaluate``.

Example: a zero-filled and a TV reconstruction of a simulated 4× single-coil acquisition.

>>> import torch, sgilo
>>> image = torch.zeros(1, 32, 32, dtype=torch.complex64); image[:, 8:24, 10:22] = 1
>>> mask = torch.from_numpy(sgilo.column_mask("random", 32, 0.25, 4, seed=0)).float()
>>> op = sgilo.SingleCoilMRI(mask, shape=(32, 32))
>>> y = op(image)
>>> zf = sgilo.solve(y, op, "zero-filled")
>>> tv = sgilo.solve(y, op, "tv")
>>> sgilo.psnr(image.abs(), tv.magnitude) > sgilo.psnr(image.abs(), zf.magnitude)
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the module that defines it
_HOMES: dict[str, str] = {
    # reading and writing
    "read_input": "sgilo.pipeline.io.ingest",
    "detect_format": "sgilo.pipeline.io.ingest",
    "KSpaceStudy": "sgilo.pipeline.io.types",
    "InputError": "sgilo.pipeline.io.types",
    "read_fastmri": "sgilo.pipeline.io.fastmri",
    "write_reconstruction": "sgilo.pipeline.io.fastmri",
    "write_kspace": "sgilo.pipeline.io.fastmri",
    "read_ismrmrd": "sgilo.pipeline.io.ismrmrd",
    "write_ismrmrd": "sgilo.pipeline.io.ismrmrd",
    "read_dicom": "sgilo.pipeline.io.dicom",
    "write_dicom_series": "sgilo.pipeline.io.dicom_write",
    "read_nifti": "sgilo.pipeline.io.nifti",
    "write_nifti": "sgilo.pipeline.io.nifti",
    # forward models
    "SingleCoilMRI": "sgilo.operators.mri",
    "MultiCoilMRI": "sgilo.operators.mri",
    "NonCartesianMRI": "sgilo.operators.mri",
    "column_mask": "sgilo.operators.masks",
    "poisson_disc_mask": "sgilo.operators.masks",
    "fft2c": "sgilo.operators.fft",
    "ifft2c": "sgilo.operators.fft",
    "estimate_maps": "sgilo.pipeline.espirit",
    # reconstruction
    "METHODS": "sgilo.pipeline.methods",
    "Prior": "sgilo.pipeline.methods",
    "load_prior": "sgilo.pipeline.methods",
    "solve": "sgilo.pipeline.methods",
    "ReconResult": "sgilo.pipeline.solvers.base",
    "reconstruct_study": "sgilo.pipeline.reconstruct",
    "reconstruct_file": "sgilo.pipeline.reconstruct",
    "CSGMConfig": "sgilo.pipeline.solvers.csgm",
    "ILOConfig": "sgilo.pipeline.solvers.ilo",
    "SGILOConfig": "sgilo.pipeline.solvers.sgilo",
    # metrics
    "psnr": "sgilo.pipeline.metrics",
    "ssim": "sgilo.pipeline.metrics",
    "nmse": "sgilo.pipeline.metrics",
    "evaluate": "sgilo.pipeline.metrics",
}

__all__ = [
    "CSGMConfig",
    "ILOConfig",
    "InputError",
    "KSpaceStudy",
    "METHODS",
    "MultiCoilMRI",
    "NonCartesianMRI",
    "Prior",
    "ReconResult",
    "SGILOConfig",
    "SingleCoilMRI",
    "column_mask",
    "detect_format",
    "estimate_maps",
    "evaluate",
    "fft2c",
    "ifft2c",
    "load_prior",
    "nmse",
    "poisson_disc_mask",
    "psnr",
    "read_dicom",
    "read_fastmri",
    "read_input",
    "read_ismrmrd",
    "read_nifti",
    "reconstruct_file",
    "reconstruct_study",
    "solve",
    "ssim",
    "write_dicom_series",
    "write_ismrmrd",
    "write_kspace",
    "write_nifti",
    "write_reconstruction",
]


def __getattr__(name: str) -> Any:
    """Load a public name on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sgilo' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from sgilo.operators.fft import fft2c, ifft2c
    from sgilo.operators.masks import column_mask, poisson_disc_mask
    from sgilo.operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI
    from sgilo.pipeline.espirit import estimate_maps
    from sgilo.pipeline.io.dicom import read_dicom
    from sgilo.pipeline.io.dicom_write import write_dicom_series
    from sgilo.pipeline.io.fastmri import read_fastmri, write_kspace, write_reconstruction
    from sgilo.pipeline.io.ingest import detect_format, read_input
    from sgilo.pipeline.io.ismrmrd import read_ismrmrd, write_ismrmrd
    from sgilo.pipeline.io.nifti import read_nifti, write_nifti
    from sgilo.pipeline.io.types import InputError, KSpaceStudy
    from sgilo.pipeline.methods import METHODS, Prior, load_prior, solve
    from sgilo.pipeline.metrics import evaluate, nmse, psnr, ssim
    from sgilo.pipeline.reconstruct import reconstruct_file, reconstruct_study
    from sgilo.pipeline.solvers.base import ReconResult
    from sgilo.pipeline.solvers.csgm import CSGMConfig
    from sgilo.pipeline.solvers.ilo import ILOConfig
    from sgilo.pipeline.solvers.sgilo import SGILOConfig
