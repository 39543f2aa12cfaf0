"""`sgilo reconstruct` as a user runs it: fastMRI-format inputs built in a temporary folder from a
simulated acquisition, the command line called in-process (``sgilo.flows.cli.main``) and once as the
installed ``sgilo`` executable.

Test object: two 48x40 slices of Shepp-Logan magnitude (the second flipped) times a smooth random
phase, single-coil or 4 normalised birdcage coils, 30 dB SNR (:mod:`sgilo.pipeline.simulate`);
undersampled files use a random column mask R = 3 with 8 fully sampled centre columns (centre
fraction 0.2). Reference images below (zero-filled, masks) are computed here with numpy and
:mod:`sgilo.operators.masks` only, not through the reconstruction code.

Measured when written (2 slices, 48x40, NMSE = ||x - m||^2 / ||m||^2 against the true magnitude m):

* single-coil, seed 0: zero-filled NMSE 0.286 (correlation 0.80), l1-wavelet 0.259 (0.82),
  TV 0.269 (0.82); CG-SENSE equals zero-filled (it diverged before CG had a residual stop);
* 4 coils, ESPIRiT maps, seed 1: zero-filled NMSE 0.281 (correlation 0.83),
  CG-SENSE NMSE 0.061 (correlation 0.96).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import sigpy

from sgilo.flows.cli import main
from sgilo.operators.masks import column_mask, seed_from_name
from sgilo.pipeline.io.fastmri import write_kspace
from sgilo.pipeline.simulate import simulate_acquisition

SLICES, H, W, COILS = 2, 48, 40, 4
R, CF = 3, 0.2
METHODS = ("zero-filled", "cg-sense", "l1-wavelet", "tv")
ERROR = "sgilo: error:"


# ----------------------------------------------------------------------------- helpers


def _ifft2c(k: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse FFT over the last two axes (complex128)."""
    ax = (-2, -1)
    k = np.asarray(k, dtype=np.complex128)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def _zero_filled(kspace: np.ndarray) -> np.ndarray:
    """|ifft2c| for (S, H, W), root-sum-of-squares over coils for (S, C, H, W)."""
    image = np.abs(_ifft2c(kspace))
    return image if kspace.ndim == 3 else np.sqrt((image**2).sum(axis=1))


def _nmse(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sum((x - ref) ** 2) / np.sum(ref**2))


def _corr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.corrcoef(x.ravel(), ref.ravel())[0, 1])


@dataclass(frozen=True)
class Inputs:
    folder: Path
    target: np.ndarray  # float (S, H, W) true magnitude
    single: Path  # single-coil, undersampled, with a mask dataset
    single_kspace: np.ndarray  # complex (S, H, W)
    multi: Path  # 4 coils, undersampled, with a mask dataset, no coil maps
    multi_kspace: np.ndarray  # complex (S, C, H, W)
    full: Path  # single-coil, fully sampled, no mask
    full_kspace: np.ndarray  # complex (S, H, W)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    folder = tmp_path_factory.mktemp("inputs")
    phantom = np.abs(sigpy.shepp_logan((H, W)))
    mags = np.stack([phantom, phantom[::-1]]).astype(np.float32)
    single = simulate_acquisition(mags, acceleration=R, center_fraction=CF, seed=0)
    multi = simulate_acquisition(mags, acceleration=R, center_fraction=CF, num_coils=COILS, seed=1)
    full = simulate_acquisition(mags, acceleration=1, center_fraction=1.0, seed=2)
    assert full.mask.all() and not single.mask.all() and not multi.mask.all()
    return Inputs(
        folder=folder,
        target=mags.astype(np.float64),
        single=write_kspace(folder / "single_coil.h5", single.kspace[:, 0], mask=single.mask),
        single_kspace=single.kspace[:, 0],
        multi=write_kspace(folder / "multi_coil.h5", multi.kspace, mask=multi.mask),
        multi_kspace=multi.kspace,
        full=write_kspace(folder / "fully_sampled.h5", full.kspace[:, 0]),
        full_kspace=full.kspace[:, 0],
    )


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """``sgilo reconstruct ARGS...`` in-process: (exit code, stderr)."""
    capsys.readouterr()
    code = main(["reconstruct", *(str(a) for a in args)])
    return code, capsys.readouterr().err


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with h5py.File(path, "r") as f:
        return f["reconstruction"][()], dict(f.attrs)


def _reconstruct(
    capsys: pytest.CaptureFixture[str], path: Path, out: Path, method: str, *extra: object
) -> tuple[np.ndarray, dict]:
    """Run one input that must succeed; return the written reconstruction and its attributes."""
    code, err = _run(capsys, path, "--method", method, "--out", out, *extra)
    assert code == 0, err
    assert ERROR not in err and "Traceback" not in err
    written = out / path.name
    assert written.is_file()
    assert _names(out) == [path.name]  # no stray temporary files
    recon, attrs = _read(written)
    assert recon.dtype == np.float32
    assert recon.shape == (SLICES, H, W)  # on the k-space grid, not cropped or transposed
    assert np.isfinite(recon).all()
    assert attrs["method"] == method
    return recon, attrs


def _assert_one_line_failure(err: str, name: str, reason: str) -> None:
    """Exactly one ``sgilo: error:`` line, naming ``name`` and saying ``reason``; no traceback
    and no continuation line (the next line is the next input's progress or the summary)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1, err
    assert name in errors[0], err
    assert reason.lower() in errors[0].lower(), err
    lines = err.splitlines()
    after = lines[lines.index(errors[0]) + 1 :]
    assert not after or after[0].startswith(("[", "sgilo reconstruct:")), err


#: the run's own provenance, written to every output folder
RUN_FILES = {"run.json", "run.log"}


def _names(out: Path) -> list[str]:
    """The output folder's entries other than the run's provenance files."""
    return sorted(p.name for p in out.iterdir() if p.name not in RUN_FILES)


def _no_output(out: Path) -> None:
    assert not out.exists() or not _names(out), list(out.iterdir())


# ----------------------------------------------------------------------------- single-coil


@pytest.mark.parametrize("method", METHODS)
def test_single_coil_undersampled(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    recon, attrs = _reconstruct(capsys, inputs.single, tmp_path / "out", method)
    assert attrs["acceleration"] == pytest.approx(W / np.count_nonzero(inputs.single_kspace[0, 0]))
    if method == "zero-filled":
        ref = _zero_filled(inputs.single_kspace)
        np.testing.assert_allclose(recon, ref, rtol=1e-4, atol=1e-5 * ref.max())
    if method in ("l1-wavelet", "tv"):
        # measured NMSE 0.259 (l1-wavelet) and 0.269 (TV), zero-filled 0.286
        assert _nmse(recon, inputs.target) < 0.35
        assert _corr(recon, inputs.target) > 0.75


def test_single_coil_cg_sense_equals_zero_filled(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Single-coil M F is a partial isometry: the minimum-norm solution CG reaches from x0 = 0 is
    # the zero-filled image itself.
    recon, _ = _reconstruct(capsys, inputs.single, tmp_path / "out", "cg-sense")
    ref = _zero_filled(inputs.single_kspace)
    np.testing.assert_allclose(recon, ref, rtol=1e-3, atol=1e-4 * ref.max())


# ----------------------------------------------------------------------------- multi-coil


def test_multi_coil_without_maps_uses_espirit(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zf, zf_attrs = _reconstruct(capsys, inputs.multi, tmp_path / "zf", "zero-filled")
    np.testing.assert_allclose(
        zf, _zero_filled(inputs.multi_kspace), rtol=1e-4, atol=1e-5 * zf.max()
    )
    cg, cg_attrs = _reconstruct(capsys, inputs.multi, tmp_path / "cg", "cg-sense")
    assert cg_attrs["maps"] == "espirit"
    target = inputs.target
    # measured: CG-SENSE NMSE 0.061, correlation 0.962; zero-filled NMSE 0.281, correlation 0.828
    assert _corr(cg, target) > 0.93
    assert _nmse(cg, target) < 0.4 * _nmse(zf, target)
    assert _nmse(cg, target) < 0.1


# ----------------------------------------------------------------------------- retrospective


def test_fully_sampled_is_undersampled_retrospectively(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full_zf = _zero_filled(inputs.full_kspace)
    as_is, _ = _reconstruct(capsys, inputs.full, tmp_path / "as-is", "zero-filled")
    np.testing.assert_allclose(as_is, full_zf, rtol=1e-4, atol=1e-5 * full_zf.max())

    retro = ("--acceleration", 4, "--center-fraction", 0.08)
    first, attrs = _reconstruct(
        capsys, inputs.full, tmp_path / "s3a", "zero-filled", *retro, "--seed", 3
    )
    again, _ = _reconstruct(
        capsys, inputs.full, tmp_path / "s3b", "zero-filled", *retro, "--seed", 3
    )
    assert attrs["acceleration"] == 4.0
    np.testing.assert_array_equal(first, again)  # same seed, same output, bit for bit
    assert _nmse(first, full_zf) > 1e-3  # it was undersampled
    mask3 = column_mask("random", W, 0.08, 4, 3)
    ref = _zero_filled(inputs.full_kspace * mask3)
    np.testing.assert_allclose(first, ref, rtol=1e-4, atol=1e-5 * ref.max())

    mask4 = column_mask("random", W, 0.08, 4, 4)
    assert not np.array_equal(mask3, mask4)
    other, _ = _reconstruct(
        capsys, inputs.full, tmp_path / "s4", "zero-filled", *retro, "--seed", 4
    )
    assert not np.allclose(other, first)


def test_without_seed_the_mask_comes_from_the_file_name(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    retro = ("--acceleration", 4, "--center-fraction", 0.08)
    names = ("file1000001.h5", "file1000002.h5")
    masks = [column_mask("random", W, 0.08, 4, seed_from_name(n)) for n in names]
    assert not np.array_equal(*masks)
    outputs = []
    for name, mask in zip(names, masks, strict=True):
        src = tmp_path / "in" / name
        src.parent.mkdir(exist_ok=True)
        shutil.copyfile(inputs.full, src)
        recon, _ = _reconstruct(capsys, src, tmp_path / f"out-{name}", "zero-filled", *retro)
        ref = _zero_filled(inputs.full_kspace * mask)
        np.testing.assert_allclose(recon, ref, rtol=1e-4, atol=1e-5 * ref.max())
        outputs.append(recon)
    assert not np.allclose(*outputs)
    # the same name elsewhere gives the same mask, hence the same output
    elsewhere = tmp_path / "elsewhere" / names[0]
    elsewhere.parent.mkdir()
    shutil.copyfile(inputs.full, elsewhere)
    recon, _ = _reconstruct(capsys, elsewhere, tmp_path / "out-elsewhere", "zero-filled", *retro)
    np.testing.assert_array_equal(recon, outputs[0])


# ----------------------------------------------------------------------------- bad inputs


def _h5(path: Path, **datasets: np.ndarray) -> Path:
    """An HDF5 file written directly with h5py (write_kspace refuses bad k-space)."""
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _with_value(k: np.ndarray, value: complex) -> np.ndarray:
    k = k.copy()
    k[1, H // 2, W // 2] = value
    return k


# name -> (builder(folder, valid single-coil file, its k-space), expected words in the reason)
BAD_INPUTS: dict[str, tuple[Callable[[Path, Path, np.ndarray], Path], str]] = {
    "missing-kspace": (lambda d, f, k: _h5(d / "bad.h5", image=np.abs(k)), "no 'kspace'"),
    "rank-2": (lambda d, f, k: _h5(d / "bad.h5", kspace=k[0]), "rank 2"),
    "rank-5": (lambda d, f, k: _h5(d / "bad.h5", kspace=k[None, None]), "rank 5"),
    "mask-length": (
        lambda d, f, k: _h5(d / "bad.h5", kspace=k, mask=np.ones(W + 1, dtype=bool)),
        "mask has shape",
    ),
    "nan": (lambda d, f, k: _h5(d / "bad.h5", kspace=_with_value(k, np.nan)), "non-finite"),
    "inf": (lambda d, f, k: _h5(d / "bad.h5", kspace=_with_value(k, np.inf)), "non-finite"),
    "real": (lambda d, f, k: _h5(d / "bad.h5", kspace=k.real.copy()), "not complex"),
    "empty": (lambda d, f, k: _bytes(d / "bad.h5", b""), "empty"),
    "truncated": (
        lambda d, f, k: _bytes(d / "bad.h5", f.read_bytes()[: f.stat().st_size // 2]),
        "truncated",
    ),
    "not-hdf5": (lambda d, f, k: _bytes(d / "bad.h5", b"kspace\n" * 20), "not an HDF5 file"),
    "does-not-exist": (lambda d, f, k: d / "bad.h5", "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_and_no_output(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    build, reason = BAD_INPUTS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    bad = build(folder, inputs.single, inputs.single_kspace)
    assert bad == folder / "bad.h5"
    out = tmp_path / "out"
    code, err = _run(capsys, bad, "--method", "cg-sense", "--out", out)
    assert code == 1, err
    _assert_one_line_failure(err, "bad.h5", reason)
    _no_output(out)


def test_acceleration_for_an_undersampled_file(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, err = _run(
        capsys, inputs.single, "--method", "zero-filled", "--out", out,
        "--acceleration", 4, "--center-fraction", 0.08,
    )  # fmt: skip
    assert code == 1, err
    _assert_one_line_failure(err, inputs.single.name, "already undersampled")
    _no_output(out)


@pytest.mark.parametrize("given", [("--acceleration", 4), ("--center-fraction", 0.08)])
def test_acceleration_and_center_fraction_go_together(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str], given: tuple
) -> None:
    out = tmp_path / "out"
    code, err = _run(capsys, inputs.full, "--method", "zero-filled", "--out", out, *given)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--center-fraction" in lines[0] and "--acceleration" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "option, value",
    [("--acceleration", "0"), ("--acceleration", "-4"), ("--center-fraction", "-0.1")],
)
def test_non_positive_sampling_parameter_is_a_usage_error(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    out = tmp_path / "out"
    both = {"--acceleration": "4", "--center-fraction": "0.08", option: value}
    args = [a for pair in both.items() for a in pair]
    with pytest.raises(SystemExit) as exc:
        _run(capsys, inputs.full, "--method", "zero-filled", "--out", out, *args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err.splitlines()[-1] and value in err.splitlines()[-1], err
    assert not out.exists()


def test_batch_with_one_bad_input(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _h5(tmp_path / "broken.h5", kspace=_with_value(inputs.single_kspace, np.nan))
    out = tmp_path / "out"
    code, err = _run(
        capsys, inputs.single, bad, inputs.multi, "--method", "zero-filled", "--out", out
    )
    assert code == 1, err
    _assert_one_line_failure(err, "broken.h5", "non-finite")
    # the inputs after the bad one were processed too; nothing (not even a .tmp) for the bad one
    assert _names(out) == sorted([inputs.single.name, inputs.multi.name])
    for good in (inputs.single, inputs.multi):
        recon, _ = _read(out / good.name)
        assert recon.shape == (SLICES, H, W) and np.isfinite(recon).all()
    # provenance: run.json with hashes and per-input status, run.log with one line per input
    import hashlib
    import json

    record = json.loads((out / "run.json").read_text())
    assert record["config"]["method"] == "zero-filled"
    assert record["inputs"][0]["sha256"] == hashlib.sha256(inputs.single.read_bytes()).hexdigest()
    statuses = {Path(k).name: v["status"] for k, v in record["timings"].items()}
    assert statuses == {inputs.single.name: "done", bad.name: "failed", inputs.multi.name: "done"}
    log = (out / "run.log").read_text()
    assert "ERROR broken.h5:" in log and f"{inputs.multi.stem}: zero-filled" in log


# ----------------------------------------------------------------------------- real process


def _sgilo(*args: object) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "sgilo"
    assert exe.is_file(), f"console script not installed next to {sys.executable}"
    return subprocess.run(
        [str(exe), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        check=False,
    )


def test_real_process_exit_code_and_stderr(inputs: Inputs, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_file.h5"
    out = tmp_path / "out"
    proc = _sgilo("reconstruct", inputs.single, missing, "--method", "zero-filled", "--out", out)
    assert proc.returncode == 1, proc.stderr
    _assert_one_line_failure(proc.stderr, missing.name, "does not exist")
    assert _names(out) == [inputs.single.name]
    recon, _ = _read(out / inputs.single.name)
    ref = _zero_filled(inputs.single_kspace)
    np.testing.assert_allclose(recon, ref, rtol=1e-4, atol=1e-5 * ref.max())


@pytest.mark.parametrize("args", [("--help",), ("reconstruct", "--help")])
def test_help(args: tuple[str, ...]) -> None:
    proc = _sgilo(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: sgilo")
    assert "reconstruct" in proc.stdout
    if "reconstruct" in args:
        assert "--method" in proc.stdout and "--center-fraction" in proc.stdout


def test_output_never_overwrites_the_input(
    inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    src = folder / inputs.single.name
    shutil.copy(inputs.single, src)
    before = src.read_bytes()
    code = main(["reconstruct", str(src), "--method", "zero-filled", "--out", str(folder)])
    err = capsys.readouterr().err
    assert code == 1
    assert "overwrite the input" in err and inputs.single.name in err
    assert src.read_bytes() == before
