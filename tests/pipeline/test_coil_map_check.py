"""The check that ESPIRiT coil maps reach the phase-encode edges (pipeline/coil_map_check.py)."""

import json

import numpy as np
import pytest
import torch

from sgilo.pipeline.coil_map_check import EDGE_LEVEL, edge_fraction, edge_warning
from sgilo.pipeline.espirit import estimate_maps
from sgilo.pipeline.io.fastmri import write_kspace
from sgilo.pipeline.reconstruct import reconstruct_file
from sgilo.pipeline.simulate import simulate_acquisition

N = 64


def _object(kind: str) -> np.ndarray:
    """``(1, N, N)``: an ellipse inside the field of view, or a smooth texture filling it."""
    yy, xx = np.mgrid[:N, :N] / N
    if kind == "inside":
        image = (((yy - 0.5) / 0.35) ** 2 + ((xx - 0.5) / 0.3) ** 2 < 1).astype(np.float32)
    else:
        image = 0.6 + 0.3 * np.sin(7 * yy) * np.cos(5 * xx)
    return image[None].astype(np.float32)


def _acquisition(kind: str, acceleration: float = 8):
    return simulate_acquisition(
        _object(kind), acceleration=acceleration, center_fraction=0.08, num_coils=8, seed=1
    )


def test_edge_fraction_counts_the_outer_columns_where_any_coil_is_non_zero():
    maps = np.zeros((2, 3, 4, 10), np.complex64)
    maps[0, 1, :, 0] = 1  # slice 0: the whole first column (1 of the 4 edge columns)
    maps[1, 0, :2, -1] = 1j  # slice 1: half of the last column
    maps[1, 2, :, 5] = 1  # an inner column does not count
    assert edge_fraction(maps) == pytest.approx([0.25, 0.125])
    assert edge_fraction(torch.from_numpy(maps[0])) == pytest.approx([0.25])  # (C, H, W)
    assert edge_fraction(maps, columns=1) == pytest.approx([0.5, 0.25])


def test_edge_fraction_rejects_bad_shapes_and_widths():
    with pytest.raises(ValueError, match="maps must be"):
        edge_fraction(np.zeros((4, 4), np.complex64))
    with pytest.raises(ValueError, match="columns must lie"):
        edge_fraction(np.zeros((1, 2, 4, 6), np.complex64), columns=4)


@pytest.mark.parametrize("acceleration", [4, 8])
def test_espirit_maps_reach_the_edges_only_for_an_object_that_fills_the_field_of_view(
    acceleration,
):
    inside, filling = (_acquisition(k, acceleration) for k in ("inside", "filling"))
    assert edge_fraction(estimate_maps(inside.kspace, inside.mask)) == [0.0]
    (fraction,) = edge_fraction(estimate_maps(filling.kspace, filling.mask))
    assert fraction > 0.5


def test_edge_warning_names_the_flagged_slices():
    assert edge_warning(None) is None and edge_warning([]) is None
    assert edge_warning([0.0, EDGE_LEVEL]) is None  # at the level: not flagged
    text = edge_warning([0.0, 0.31, 0.83])
    assert text.startswith("warning:") and "on 2 of 3 slice(s)" in text and "83%" in text


def test_reconstruct_file_records_and_warns_for_espirit_maps_only(tmp_path):
    logs: dict[str, list[str]] = {}
    records = {}
    for kind in ("inside", "filling"):
        acq = _acquisition(kind)
        source = write_kspace(tmp_path / f"{kind}.h5", acq.kspace, mask=acq.mask)
        lines = logs.setdefault(kind, [])
        result = reconstruct_file(source, tmp_path / kind, "cg-sense", log=lines.append)
        (records[kind],) = result.diagnostics
    assert records["inside"]["maps"] == "espirit"
    assert records["inside"]["maps_edge_fraction"] == [0.0]
    assert not any("phase-encode edges" in line for line in logs["inside"])
    assert records["filling"]["maps_edge_fraction"][0] > 0.5
    (line,) = [line for line in logs["filling"] if "warning" in line and "phase-encode" in line]
    assert line.startswith("filling: warning:")
    run = json.loads(json.dumps(records["filling"]))  # what run.json holds is JSON as it is
    assert run["maps_edge_fraction"] == records["filling"]["maps_edge_fraction"]

    # maps from the file: nothing estimated, nothing to check
    acq = _acquisition("filling")
    source = write_kspace(tmp_path / "with_maps.h5", acq.kspace, mask=acq.mask, maps=acq.maps[None])
    lines: list[str] = []
    (record,) = reconstruct_file(source, tmp_path / "m", "cg-sense", log=lines.append).diagnostics
    assert record["maps"] == "file" and "maps_edge_fraction" not in record
    assert not any("phase-encode edges" in line for line in lines)
