"""Refined coil maps refitted on each held-out split, so that the held-out samples do not reach
a fit through the maps (pipeline/split_maps.py, solvers/kspace_split.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sgilo.operators.mri import MultiCoilMRI
from sgilo.pipeline.coil_map_refine import checked_maps, refine_maps, well_sampled
from sgilo.pipeline.espirit import estimate_maps
from sgilo.pipeline.experiment import (
    espirit_operator,
    load_acquisition,
    load_refit,
    make_operator,
    save_acquisition,
)
from sgilo.pipeline.reconstruct import study_operator
from sgilo.pipeline.simulate import simulate_acquisition
from sgilo.pipeline.solvers import heldout_columns as columns
from sgilo.pipeline.solvers.kspace_split import split_measurements
from sgilo.pipeline.solvers.slice_chunks import slice_operator
from sgilo.pipeline.split_maps import MapRefit, RefinedMapsMRI, refinable_operator, split_maps

N = 64


def _images() -> np.ndarray:
    """``(2, N, N)``: a textured disc that fills the field of view along the columns (the
    phase-encode axis; its maps get refined) and one well inside it (its maps do not)."""
    yy, xx = np.mgrid[:N, :N] / N - 0.5
    out = []
    for ry, rx in ((0.45, 0.75), (0.35, 0.3)):
        r = np.sqrt((yy / ry) ** 2 + (xx / rx) ** 2)
        texture = 0.5 + 0.25 * np.sin(9 * yy) * np.cos(7 * xx)
        out.append((r < 1) * texture + 0.4 * (np.abs(r - 0.93) < 0.05))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def acq():
    return simulate_acquisition(
        _images(), acceleration=4, center_fraction=0.08, num_coils=8, seed=2
    )


@pytest.fixture(scope="module")
def refined_op(acq):
    y, op = espirit_operator(acq)
    return y, op


def _held(op, y) -> torch.Tensor:
    return columns.draw_folds(columns.candidate_columns(op, y), 0.25, 1, 0)[0]


def test_an_operator_with_refined_maps_records_where_they_came_from(acq, refined_op):
    y, op = refined_op
    assert isinstance(op, RefinedMapsMRI)
    assert op.map_refit.refined.tolist() == [True, False]
    start = estimate_maps(acq.kspace, acq.mask)
    np.testing.assert_array_equal(op.map_refit.start.numpy(), start)
    np.testing.assert_array_equal(op.coil_maps[1].numpy(), start[1])  # inside: ESPIRiT's own
    assert not torch.equal(op.coil_maps[0], op.map_refit.start[0])
    # no refined slice: a plain operator
    plain = refinable_operator(op.coil_maps[1:], op.sampling_mask, start[1:], [0])
    assert type(plain) is MultiCoilMRI
    with pytest.raises(ValueError, match="per-slice maps"):
        RefinedMapsMRI(op.coil_maps[0], op.sampling_mask, op.map_refit)


def test_a_split_refits_the_refined_maps_without_the_held_out_samples(acq, refined_op):
    y, op = refined_op
    held = _held(op, y)
    (part,) = split_measurements(op, y, held, copies=2)
    fit_maps = part.fit_op.coil_maps
    assert fit_maps.shape == (4, *op.coil_maps.shape[1:])  # two copies
    torch.testing.assert_close(part.held_op.coil_maps, fit_maps)  # the prediction uses them too
    torch.testing.assert_close(fit_maps[2:], fit_maps[:2])
    np.testing.assert_array_equal(fit_maps[1].numpy(), op.coil_maps[1].numpy())  # not refined
    # the refined slice: the refinement of its fitted samples alone, from ESPIRiT's maps
    fit_mask = (part.fit_op.sampling_mask[0] > 0).numpy()
    expected, _ = refine_maps(
        acq.kspace[:1] * fit_mask,
        fit_mask,
        op.map_refit.start[:1],
        basis=8,
    )
    np.testing.assert_allclose(fit_maps[0].numpy(), expected[0], atol=1e-5)
    assert not torch.allclose(fit_maps[0], op.coil_maps[0], atol=1e-3)
    # whatever the held-out samples hold, the split's maps are the same
    spoiled = y.clone()
    spoiled[..., held[0].nonzero().flatten()] *= -3.0
    (again,) = split_measurements(op, spoiled, held)
    torch.testing.assert_close(again.fit_op.coil_maps, fit_maps[:2])
    # an operator without the record keeps its maps on the split
    plain = MultiCoilMRI(op.coil_maps, op.sampling_mask)
    assert split_maps(plain, y, part.fit_op.sampling_mask[:2]) is None
    (same,) = split_measurements(plain, y, held)
    torch.testing.assert_close(same.fit_op.coil_maps, op.coil_maps)


def test_slices_of_the_operator_keep_the_record(refined_op):
    y, op = refined_op
    sub = slice_operator(op, op.slice_masks(2), [1, 0])
    assert isinstance(sub, RefinedMapsMRI) and sub.map_refit.refined.tolist() == [False, True]
    torch.testing.assert_close(sub.map_refit.start, op.map_refit.start[[1, 0]])
    assert isinstance(op.map_refit.take([0]), MapRefit)


def test_saved_acquisitions_and_read_files_carry_the_record(tmp_path, acq, refined_op):
    y, op = refined_op
    path = save_acquisition(tmp_path / "acq.npz", acq)
    loaded, maps = load_acquisition(path)
    refit = load_refit(path)
    assert refit is not None and refit.refined.tolist() == [True, False]
    _, again = make_operator(loaded, maps=torch.from_numpy(maps), refit=refit)
    assert isinstance(again, RefinedMapsMRI)
    torch.testing.assert_close(again.coil_maps, op.coil_maps)
    inside = simulate_acquisition(
        _images()[1:], acceleration=4, center_fraction=0.08, num_coils=8, seed=2
    )
    assert load_refit(save_acquisition(tmp_path / "inside.npz", inside)) is None


def test_study_operator_builds_the_record_from_the_maps_it_refines(acq):
    from sgilo.pipeline.io.types import KSpaceStudy

    study = KSpaceStudy(
        name="filling", source=Path("filling.h5"), kspace=acq.kspace, multicoil=True, mask=acq.mask
    )
    _, op, source, check = study_operator(study)
    assert source == "espirit" and isinstance(op, RefinedMapsMRI)
    assert op.map_refit.refined.tolist() == [r > 0 for r in check.refined_rounds]
    refined, _ = checked_maps(acq.kspace, acq.mask, estimate_maps(acq.kspace, acq.mask))
    np.testing.assert_allclose(op.coil_maps.numpy(), refined, atol=1e-6)


def test_below_a_sixth_sampled_the_split_keeps_the_maps():
    # 8x: the joint problem is under-determined, and a split's own maps would be worse
    acq8 = simulate_acquisition(
        _images()[:1], acceleration=8, center_fraction=0.04, num_coils=8, seed=2
    )
    y, op = espirit_operator(acq8)
    assert isinstance(op, RefinedMapsMRI) and not well_sampled(acq8.mask, (N, N))
    (part,) = split_measurements(op, y, _held(op, y))
    torch.testing.assert_close(part.fit_op.coil_maps, op.coil_maps)
