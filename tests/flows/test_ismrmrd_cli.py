"""`sgilo reconstruct` on ISMRMRD files as scanners and ISMRMRD's generator write them: readout
oversampling, a noise scan, a 2× accelerated acquisition whose calibration lines are a separate
reference scan, several repetitions, oblique geometry; a 3-D multi-echo slab with a generative
method. ISMRMRD's own tools (Debian's ``ismrmrd-tools``) are used when installed."""

from __future__ import annotations

import json
import shutil
import subprocess

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from sgilo.flows.cli import main
from sgilo.pipeline.io.ismrmrd import write_ismrmrd
from sgilo.pipeline.io.ismrmrd_write import AcquisitionGeometry

N, COILS = 32, 4
CLASSICAL = ("zero-filled", "cg-sense", "l1-wavelet", "tv")


def _fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax)


def _scanner_file(path):
    """2 slices x 2 repetitions, 4 coils, readout oversampled 2x, R = 2 equispaced imaging lines
    and a 12-line reference scan, a noise scan, oblique slices."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[: 2 * N, :N] / N - np.array([1.0, 0.5])[:, None, None]
    obj = ((x**2 + (y / 2) ** 2) < 0.1) * (1 + 0.3 * np.cos(8 * x))  # centred in the 2x FOV
    maps = np.stack(
        [
            np.exp(-((x - a) ** 2 + (y / 2 - b) ** 2))
            for a, b in [(-1, -1), (-1, 1), (1, -1), (1, 1)]
        ]
    )
    volumes = {}
    for r in (0, 1):
        coils = maps * obj * (1 + 0.1 * r)
        k = _fft2c(np.stack([coils, coils[:, ::-1]]))
        k += 0.01 * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
        volumes[(0, 0, r, 0)] = k.astype(np.complex64)
    mask = np.arange(N) % 2 == 1
    cal = np.abs(np.arange(N) - N // 2) < 6
    noise = 0.01 * (
        rng.standard_normal((8, COILS, 2 * N)) + 1j * rng.standard_normal((8, COILS, 2 * N))
    )
    geometry = AcquisitionGeometry(
        read_dir=(0.0, 0.8, 0.6), phase_dir=(1.0, 0.0, 0.0), slice_dir=(0.0, 0.6, -0.8)
    )
    return write_ismrmrd(
        path,
        volumes,
        mask,
        fov_mm=(220.0, 220.0, 4.0),
        oversampled=True,
        noise=noise,
        geometry=geometry,
        calibration_mask=cal,
    )


@pytest.fixture(scope="module")
def scanner(tmp_path_factory):
    return _scanner_file(tmp_path_factory.mktemp("scan") / "scan.h5")


@pytest.mark.parametrize("method", CLASSICAL)
def test_every_classical_method_reconstructs_each_repetition(scanner, tmp_path, method):
    out = tmp_path / "out"
    argv = ["reconstruct", str(scanner), "--method", method, "--out", str(out)]
    assert main([*argv, "--format", "h5,nifti,dicom"]) == 0
    record = json.loads((out / "run.json").read_text())
    (timing,) = record["timings"].values()
    assert len(timing["diagnostics"]) == 2
    for study in timing["diagnostics"]:
        assert study["noise_std"] > 0
        assert study["maps"] == ("none" if method == "zero-filled" else "espirit")
    affines, frames = [], set()
    for r in (0, 1):
        with h5py.File(out / f"scan_r{r}.h5") as f:
            recon = f["reconstruction"][()]
        assert recon.shape == (2, N, N) and np.isfinite(recon).all() and recon.max() > 0
        affines.append(nib.load(out / f"scan_r{r}.nii.gz").affine)
        for ds in map(pydicom.dcmread, sorted((out / f"scan_r{r}_dicom").glob("*.dcm"))):
            frames.add(ds.FrameOfReferenceUID)
            np.testing.assert_allclose(
                [float(v) for v in ds.ImageOrientationPatient], [1, 0, 0, 0, 0.8, 0.6], atol=1e-6
            )
    np.testing.assert_allclose(affines[0], affines[1])  # repetitions overlay each other
    assert len(frames) == 1


def test_3d_multi_echo_slab_with_a_generative_method(tmp_path):
    from sgilo.models.stylegan2.checkpoint import fit_latent_stats, save_generator
    from sgilo.models.stylegan2.generator import Generator, GeneratorConfig

    torch.manual_seed(0)
    config = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=1, channels={4: 16, 8: 16, 16: 16}
    )
    g = Generator(config).eval()
    stats = fit_latent_stats(g, n=200, generator_rng=torch.Generator().manual_seed(1))
    model = save_generator(tmp_path / "g.pt", g, latent_stats=stats)
    with torch.no_grad():
        images = ((g(torch.randn(4, 16)) + 1) / 2)[:, 0].clamp(0, 1).numpy()
    slab = np.fft.fftshift(
        np.fft.fft(np.fft.ifftshift(_fft2c(images), axes=0), axis=0, norm="ortho"), axes=0
    )
    echoes = {(e, 0, 0, 0): (slab * (1 - 0.3 * e)).astype(np.complex64) for e in (0, 1)}
    mask = np.zeros(16, bool)
    mask[::2] = mask[6:10] = True
    path = write_ismrmrd(tmp_path / "slab.h5", echoes, mask, three_d=True, fov_mm=(160, 160, 20))
    out = tmp_path / "out"
    argv = ["reconstruct", str(path), "--method", "csgm", "--model", str(model), "--out", str(out)]
    short = ["--set", "steps=20", "--set", "restarts=1"]  # the layout is tested, not the fit
    assert main([*argv, *short, "--volumes", "contrast=1", "--format", "h5,nifti"]) == 0
    assert sorted(p.name for p in out.glob("slab*")) == ["slab_c1.h5", "slab_c1.nii.gz"]
    with h5py.File(out / "slab_c1.h5") as f:
        assert f["reconstruction"].shape == (4, 16, 16)
    zooms = nib.load(out / "slab_c1.nii.gz").header.get_zooms()
    assert zooms == pytest.approx((10.0, 10.0, 5.0))  # 160 / 16 in plane, 20 mm / 4


TOOLS = ("ismrmrd_generate_cartesian_shepp_logan", "ismrmrd_recon_cartesian_2d")
_MISSING = [t for t in TOOLS if shutil.which(t) is None]


@pytest.mark.skipif(
    bool(_MISSING), reason=f"ISMRMRD tools not installed ({', '.join(_MISSING)}; apt ismrmrd-tools)"
)
def test_generator_file_accelerated_with_noise_and_repetitions(tmp_path):
    """The issue's file ``-m 64 -c 8 -O 2 -a 2 -w 16 -C`` with ``-r 2``: the generator writes
    r x a = 4 repetitions whose imaging lines alternate (even, odd, ...) and a 16-line
    calibration region flagged in each (calibration mode ``interleaved``), and one noise line.
    Each repetition is reconstructed with coil maps from its calibration lines and matches the
    generator's phantom (transposed: readout rows)."""
    raw = tmp_path / "testdata.h5"
    subprocess.run(
        [TOOLS[0], "-m", "64", "-c", "8", "-O", "2", "-a", "2", "-w", "16", "-C", "-r", "2",
         "-o", str(raw)],
        cwd=tmp_path, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    out = tmp_path / "out"
    argv = ["reconstruct", str(raw), "--method", "cg-sense", "--out", str(out)]
    assert main([*argv, "--format", "h5,nifti,dicom"]) == 0
    record = json.loads((out / "run.json").read_text())
    (timing,) = record["timings"].values()
    assert [d["maps"] for d in timing["diagnostics"]] == ["espirit"] * 4
    assert all(d["noise_std"] > 0 for d in timing["diagnostics"])
    with h5py.File(raw) as f:
        phantom = f["dataset/phantom"][0]
    reference = np.abs(phantom["real"] + 1j * phantom["imag"]).T
    for r in range(4):
        with h5py.File(out / f"testdata_r{r}.h5") as f:
            recon = f["reconstruction"][0]
        assert recon.shape == (64, 64)
        assert np.corrcoef(recon.ravel(), reference.ravel())[0, 1] > 0.95
