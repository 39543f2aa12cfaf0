"""The joint image-and-map fit for objects that fill the phase-encode field of view
(pipeline/coil_map_refine.py)."""

import json

import h5py
import numpy as np
import pytest
import torch

from sgilo.operators.mri import MultiCoilMRI
from sgilo.pipeline.coil_map_refine import (
    MAP_BASIS,
    MAP_BASIS_HIGH,
    MAX_ROUNDS,
    basis_size,
    checked_maps,
    dct_basis,
    object_support,
    refine_maps,
    well_sampled,
)
from sgilo.pipeline.espirit import estimate_maps
from sgilo.pipeline.io.fastmri import write_kspace
from sgilo.pipeline.metrics import psnr
from sgilo.pipeline.reconstruct import reconstruct_file
from sgilo.pipeline.simulate import simulate_acquisition
from sgilo.pipeline.solvers.classical import cg_sense

N = 64


def _head(fill: bool) -> np.ndarray:
    """``(1, N, N)``: a textured disc with a bright rim, filling the field of view along the
    columns (the phase-encode axis) or well inside it."""
    yy, xx = np.mgrid[:N, :N] / N - 0.5
    ry, rx = (0.45, 0.75) if fill else (0.35, 0.3)
    r = np.sqrt((yy / ry) ** 2 + (xx / rx) ** 2)
    image = (r < 1) * (0.5 + 0.25 * np.sin(9 * yy) * np.cos(7 * xx)) + 0.4 * (
        np.abs(r - 0.93) < 0.05
    )
    return image[None].astype(np.float32)


def _acquisition(fill: bool, acceleration: float = 4):
    return simulate_acquisition(
        _head(fill), acceleration=acceleration, center_fraction=0.08, num_coils=8, seed=2
    )


def _cg_image(acq, maps: np.ndarray) -> np.ndarray:
    op = MultiCoilMRI(torch.from_numpy(np.ascontiguousarray(maps)), torch.from_numpy(acq.mask))
    return cg_sense(torch.from_numpy(acq.kspace), op).image.abs().numpy()


def _cg_psnr(acq, maps: np.ndarray) -> float:
    return psnr(acq.target, _cg_image(acq, maps))


def test_dct_basis_is_orthonormal_and_not_periodic():
    b = dct_basis(16, 5)
    assert b.shape == (5, 16)
    np.testing.assert_allclose(b @ b.T, np.eye(5), atol=1e-12)
    assert abs(b[1, 0] - b[1, -1]) > 0.3  # the first cosine differs at the two edges
    with pytest.raises(ValueError, match="k <= n"):
        dct_basis(4, 5)


def test_basis_size_follows_the_sampled_fraction():
    mask = np.zeros(N, bool)
    mask[::4] = True
    assert basis_size(mask, (N, N)) == MAP_BASIS and well_sampled(mask, (N, N))
    mask[:] = False
    mask[::8] = True
    assert basis_size(mask, (N, N)) == MAP_BASIS_HIGH and not well_sampled(mask, (N, N))
    assert basis_size(np.ones((N, N), bool), (N, N)) == MAP_BASIS


def test_refined_maps_win_back_much_of_what_espirit_loses():
    acq = _acquisition(fill=True)
    espirit = estimate_maps(acq.kspace, acq.mask)
    refined, (info,) = refine_maps(acq.kspace, acq.mask, espirit)
    truth = acq.maps[None]
    p_esp, p_ref, p_true = (_cg_psnr(acq, m) for m in (espirit, refined, truth))
    # this image's ESPIRiT maps lose ~12 dB to the true ones; the fit wins back ~6 of them
    assert p_ref > p_esp + 3, (p_esp, p_ref, p_true)
    assert p_ref - p_esp > 0.4 * (p_true - p_esp), (p_esp, p_ref, p_true)
    # the alternation lowers the data residual and stops on its own
    assert 2 <= info.rounds <= MAX_ROUNDS and len(info.residuals) == info.rounds
    assert info.residuals[-1] < info.residuals[0]
    # ESPIRiT's support is kept (extended by the object only where ESPIRiT blanks object
    # pixels, which it does not here: air above and below); unit coil norm on it
    support = np.abs(espirit).sum(1) > 0
    norm = np.sqrt((np.abs(refined) ** 2).sum(1))
    assert np.all(norm[~support] == 0)
    np.testing.assert_allclose(norm[support], 1, atol=1e-4)


def test_object_support_follows_the_smoothed_magnitude():
    image = torch.zeros(2, 32, 32, dtype=torch.complex64)
    image[0, 8:24, 8:24] = 1.0  # a bright square
    image[1] = 0.05  # a flat dim field: every pixel reaches the level of its own peak
    image[1, 0, 0] = 0.05j
    support = object_support(image)
    assert support.shape == (2, 32, 32) and support[1].all()
    # the 5 x 5 average reaches 0.2 of the peak one pixel outside the square's edges (2/5 of
    # the box), not at its corners there (4/25), nowhere three pixels out
    assert support[0, 8:24, 8:24].all() and support[0, 7, 12:20].all()
    assert support[0, 12:20, 24].all() and not support[0, 7, 7]
    assert not support[0, :5].any() and not support[0, :, 27:].any()
    assert object_support(image, level=1.01)[0].sum() == 0
    # strong complex noise around the square: averaging the complex image keeps the air out,
    # where the average of |noise| (its mean, 0.89 sigma) would let it in
    g = torch.Generator().manual_seed(0)
    noise = torch.complex(torch.randn(32, 32, generator=g), torch.randn(32, 32, generator=g))
    noisy = image[:1] + 0.25 * noise / 2**0.5
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[5:27, 5:27] = False
    assert object_support(noisy)[0, outside].float().mean() < 0.05
    assert object_support(noisy)[0, 10:22, 10:22].all()


def test_refined_maps_keep_the_object_that_espirit_blanks():
    yy, xx = np.mgrid[:N, :N] / N - 0.5  # an object that fills the field of view everywhere
    image = (
        0.6 + 0.25 * np.sin(9 * yy) * np.cos(7 * xx) + 0.3 * (np.hypot(yy + 0.4, xx + 0.4) < 0.15)
    )
    acq = simulate_acquisition(
        image[None].astype(np.float32), acceleration=4, center_fraction=0.08, num_coils=8, seed=2
    )
    espirit = estimate_maps(acq.kspace, acq.mask)
    blanked = np.abs(espirit).sum(1) == 0
    assert blanked.sum() > 0  # ESPIRiT's crop drops object pixels near the corners
    refined, _ = checked_maps(acq.kspace, acq.mask, espirit)
    covered = np.abs(refined).sum(1) > 0
    assert covered[blanked].mean() >= 0.75  # the object's pixels that ESPIRiT blanked get maps
    cut, _ = refine_maps(acq.kspace, acq.mask, espirit, support_level=None)
    assert np.array_equal(np.abs(cut).sum(1) > 0, ~blanked)  # the old cut: ESPIRiT's support
    # CG-SENSE: the pixels ESPIRiT blanked get the object back (the old cut leaves them at 0)
    images = [_cg_image(acq, maps)[0] for maps in (refined, cut)]
    errors = [np.abs(image - acq.target[0])[blanked[0]].mean() for image in images]
    assert errors[1] == pytest.approx(acq.target[0][blanked[0]].mean(), rel=1e-5)
    assert errors[0] < 0.6 * errors[1]
    assert psnr(acq.target, images[0][None]) > psnr(acq.target, images[1][None]) + 0.1


def test_refine_maps_rejects_mismatched_inputs():
    acq = _acquisition(fill=True)
    with pytest.raises(ValueError, match="must both be"):
        refine_maps(acq.kspace, acq.mask, acq.maps)  # (C, H, W) maps
    with pytest.raises(ValueError, match="samples nothing"):
        refine_maps(acq.kspace, np.zeros(N, bool), acq.maps[None])


def test_checked_maps_refines_only_slices_that_reach_the_edges():
    inside, filling = _acquisition(False), _acquisition(True)
    kspace = np.concatenate([inside.kspace, filling.kspace])
    espirit = estimate_maps(kspace, inside.mask)
    maps, check = checked_maps(kspace, inside.mask, espirit)
    assert check.edge_fraction[0] == 0 and check.edge_fraction[1] > 0.5
    assert check.refined_rounds[0] == 0 and check.refined_rounds[1] > 0
    np.testing.assert_array_equal(maps[0], espirit[0])
    assert not np.array_equal(maps[1], espirit[1])
    assert check.record() == {
        "maps_edge_fraction": check.edge_fraction,
        "maps_refined_rounds": check.refined_rounds,
    }
    same, none = checked_maps(inside.kspace, inside.mask, espirit[:1])
    assert same is espirit[:1] or np.array_equal(same, espirit[:1])
    assert none.refined_rounds == [0]


def test_checked_maps_in_chunks_equals_one_batch(monkeypatch):
    from sgilo.pipeline import coil_map_refine

    acq = simulate_acquisition(
        np.concatenate([_head(True), 0.8 * _head(True)[:, :, ::-1]]),
        acceleration=4,
        center_fraction=0.08,
        num_coils=8,
        seed=2,
    )
    espirit = estimate_maps(acq.kspace, acq.mask)
    together, check = checked_maps(acq.kspace, acq.mask, espirit)
    monkeypatch.setattr(coil_map_refine, "CHUNK_ELEMENTS", 1)  # one slice at a time
    lines: list[str] = []
    apart, check_apart = checked_maps(acq.kspace, acq.mask, espirit, log=lines.append)
    assert len(lines) == 2 and lines[1] == "coil maps refined on 1 of 2 slice(s)"
    assert check.refined_rounds == check_apart.refined_rounds and min(check.refined_rounds) > 0
    np.testing.assert_allclose(apart, together, atol=1e-4)


def test_reconstruct_file_refines_and_says_so(tmp_path):
    acq = _acquisition(fill=True)
    source = write_kspace(tmp_path / "filling.h5", acq.kspace, mask=acq.mask)
    lines: list[str] = []
    result = reconstruct_file(source, tmp_path / "out", "cg-sense", log=lines.append)
    (record,) = result.diagnostics
    record = json.loads(json.dumps(record))
    assert record["maps"] == "espirit" and record["maps_refined_rounds"][0] > 0
    # a line before ESPIRiT, one before the fit, then the warning after the reconstruction
    assert lines[0] == "filling: estimating coil maps (ESPIRiT) for 1 slice(s) of 8 coils"
    start, warning = [line for line in lines if "phase-encode edges" in line]
    assert start.startswith("filling: the coil maps of 1 of 1 slice(s)") and "refining" in start
    assert lines.index(start) < lines.index(warning)
    assert "refined by a joint image-and-map fit" in warning
    # the written reconstruction is the refined maps' one
    with h5py.File(result.outputs[0], "r") as f:
        written = f["reconstruction"][()]
    espirit = estimate_maps(acq.kspace, acq.mask)
    assert psnr(acq.target, written) > _cg_psnr(acq, espirit) + 3


def test_espirit_reports_progress_on_long_studies(tmp_path, monkeypatch):
    """Estimating maps says so before it starts and, while it runs, every
    ``MAPS_PROGRESS_EVERY_S`` seconds (0 here: after every slice but the last)."""
    from sgilo.pipeline import reconstruct

    acq = simulate_acquisition(
        np.concatenate([_head(False)] * 3), acceleration=4, center_fraction=0.08, num_coils=4
    )
    source = write_kspace(tmp_path / "three.h5", acq.kspace, mask=acq.mask)
    monkeypatch.setattr(reconstruct, "MAPS_PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    reconstruct_file(source, tmp_path / "out", "cg-sense", log=lines.append)
    maps_lines = [line for line in lines if "ESPIRiT" in line or ": coil maps: " in line]
    assert maps_lines == [
        "three: estimating coil maps (ESPIRiT) for 3 slice(s) of 4 coils",
        "three: coil maps: 1/3 slices",
        "three: coil maps: 2/3 slices",
    ]
