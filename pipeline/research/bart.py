"""BART's ``pics`` as an independent reference reconstruction (the benchmark's ``bart-pics`` row).

BART (the Berkeley Advanced Reconstruction Toolbox, Debian package ``bart``) is a separate C
implementation of parallel-imaging compressed sensing. The benchmark runs it, when the ``bart``
command is installed, beside the project's own solvers, so that its classical rows can be checked
against a reference that shares no code with them.

Per slice, through BART's ``.cfl``/``.hdr`` files (complex64, column-major, dimensions
``[READ, PHS1, PHS2, COIL, MAPS, …]``):

- k-space ``y`` ``(C, H, W)`` (the project's centred orthonormal convention, zeros where not
  sampled) is written as BART dims ``(H, W, 1, C)``;
- sensitivities: single-coil data get a map of ones; multi-coil data get the maps every other
  multi-coil method of the benchmark gets (the project's ESPIRiT estimate from the calibration
  region), so the row compares solvers, not map estimates. BART's own ``ecalib`` is not used: at
  8× with a 4 % centre only 5 of 128 columns are fully sampled, and its maps then give 13–15 dB
  where the same ``pics`` with the project's maps gives 18.5 dB (one training slice, λ 3e-4);
- ``pics -S -R W:3:0:λ`` — ℓ1-wavelet regularisation over the two image axes, with BART's
  automatic data scaling undone by ``-S`` (the image keeps the units of ``y``);
- the image ``(H, W)`` is read back.

``λ`` is chosen on MNI *training* slices (:data:`DEFAULT_LAMBDA`, docs/CLASSICAL_TUNING.md),
never on the scored slices.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

#: ℓ1-wavelet weight of ``bart pics`` per kind of data (chosen on training slices with
#: ``sgilo tune-classical``; docs/CLASSICAL_TUNING.md)
DEFAULT_LAMBDA: dict[str, float] = {"single-coil": 0.01, "multi-coil": 3e-4}


def bart_available() -> bool:
    """Whether the ``bart`` command is on PATH."""
    return shutil.which("bart") is not None


def write_cfl(stem: Path, array: np.ndarray) -> None:
    """``stem.hdr`` + ``stem.cfl``: ``array`` as BART's complex64 column-major format."""
    dims = list(array.shape) + [1] * max(0, 16 - array.ndim)
    stem.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(map(str, dims)) + "\n")
    np.asarray(array, dtype=np.complex64).ravel(order="F").tofile(stem.with_suffix(".cfl"))


def read_cfl(stem: Path) -> np.ndarray:
    """An array written by BART (``stem.hdr`` + ``stem.cfl``), trailing singleton dims dropped."""
    lines = stem.with_suffix(".hdr").read_text().splitlines()
    dims = [int(d) for d in lines[1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(stem.with_suffix(".cfl"), dtype=np.complex64)
    return data.reshape(dims, order="F")


def _bart(*args: str | Path, cwd: Path) -> None:
    done = subprocess.run(
        ["bart", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bart {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")


def bart_pics(
    kspace: np.ndarray,
    maps: np.ndarray | None = None,
    lam: float | None = None,
    iterations: int = 100,
) -> np.ndarray:
    """ℓ1-wavelet PICS of every slice with BART (module docstring).

    Args:
        kspace: complex ``(S, C, H, W)`` (``C = 1`` for single-coil), zeros where not sampled.
        maps: complex coil sensitivities ``(C, H, W)`` or ``(S, C, H, W)``; required when
            ``C > 1``, ignored for single-coil data.
        lam: the ℓ1-wavelet weight λ (None: :data:`DEFAULT_LAMBDA` for the kind of data).
        iterations: BART's iteration limit (``-i``).

    Returns:
        complex64 ``(S, H, W)``, in the units of the image whose centred orthonormal FFT is ``y``.
    """
    if not bart_available():
        raise RuntimeError("the bart command is not installed (Debian package 'bart')")
    if kspace.ndim != 4 or not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be complex (S, C, H, W), got {kspace.dtype} {kspace.shape}")
    slices, coils, h, w = kspace.shape
    if coils > 1:
        if maps is None:
            raise ValueError("multi-coil data need coil maps (C, H, W) or (S, C, H, W)")
        maps = np.broadcast_to(maps, (slices, coils, h, w))
    if lam is None:
        lam = DEFAULT_LAMBDA["single-coil" if coils == 1 else "multi-coil"]
    out = np.empty((slices, h, w), dtype=np.complex64)
    with tempfile.TemporaryDirectory(prefix="sgilo-bart-") as tmp:
        work = Path(tmp)
        for s in range(slices):
            write_cfl(work / "k", np.transpose(kspace[s], (1, 2, 0))[:, :, None, :])
            if coils == 1:
                write_cfl(work / "sens", np.ones((h, w, 1, 1), dtype=np.complex64))
            else:
                write_cfl(work / "sens", np.transpose(maps[s], (1, 2, 0))[:, :, None, :])
            _bart(
                "pics",
                "-S",
                "-i",
                str(iterations),
                "-R",
                f"W:3:0:{lam:g}",
                "k",
                "sens",
                "x",
                cwd=work,
            )
            out[s] = read_cfl(work / "x").reshape(h, w)
    return out
