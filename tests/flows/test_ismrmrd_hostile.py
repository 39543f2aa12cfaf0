"""The hostile-input contract (docs/RELIABILITY.md, tests/flows/test_hostile_corpus.py) for the
ISMRMRD paths of issue 24: acquisition geometry, volumes (contrast/phase/repetition/set), 3-D
partitions, noise scans and reference scans.

ONE ``sgilo reconstruct BAD good.h5`` call per case: exactly one line ``sgilo: error: <name>:
<reason>`` on stderr, no traceback, exit code 1, the good input still reconstructed, and OUT holding
``good.h5``, ``run.json`` and ``run.log`` only (nothing partial)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from sgilo.flows.cli import main
from sgilo.pipeline.io.ismrmrd import write_ismrmrd


def _k(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _rows(edit: Callable[[np.ndarray], np.ndarray | None], **write: object):
    """A valid file (2 slices, 2 coils, 16 x 16 unless ``write`` says otherwise), then ``edit``
    applied to its acquisition table (in place, or returning a new table)."""

    def build(path: Path) -> None:
        kspace = write.pop("kspace", _k((2, 2, 16, 16)))
        write_ismrmrd(path, kspace, **write)
        with h5py.File(path, "r+") as f:
            rows = f["dataset/data"][()]
            new = edit(rows)
            del f["dataset/data"]
            f["dataset"].create_dataset("data", data=rows if new is None else new)

    return build


def _set(name: str, value: object, lines: slice = slice(None)):
    def edit(rows: np.ndarray) -> None:
        rows["head"][name][lines] = value

    return edit


def _set_idx(name: str, value: object, lines: slice | np.ndarray = slice(None)):
    def edit(rows: np.ndarray) -> None:
        idx = rows["head"]["idx"]
        idx[name][lines] = value
        rows["head"]["idx"] = idx

    return edit


def _drop_contrast_line(rows: np.ndarray) -> np.ndarray:
    """Contrast 1: a copy of every line but the last one."""
    extra = rows[:-1].copy()
    idx = extra["head"]["idx"]
    idx["contrast"] = 1
    extra["head"]["idx"] = idx
    return np.concatenate([rows, extra])


def _header(change: Callable[[object], None]):
    def build(path: Path) -> None:
        import ismrmrd.xsd

        write_ismrmrd(path, _k((2, 2, 16, 16)))
        with h5py.File(path, "r+") as f:
            header = ismrmrd.xsd.CreateFromDocument(f["dataset/xml"][0].decode())
            change(header)
            del f["dataset/xml"]
            f["dataset"].create_dataset("xml", data=[ismrmrd.xsd.ToXML(header).encode()])

    return build


def _fov_zero(header) -> None:
    header.encoding[0].encodedSpace.fieldOfView_mm.y = 0.0


def _huge_3d(header) -> None:
    size = header.encoding[0].encodedSpace.matrixSize
    size.y, size.z = 4096, 4096


_CAL = np.zeros(16, bool)
_CAL[6:10] = True
_MASK = np.arange(16) % 2 == 0

#: (id, builder, options, reason)
CASES = [
    ("geometry-nan", _rows(_set("slice_dir", np.nan)), (), "non-finite position or direction"),
    ("geometry-skew", _rows(_set("read_dir", (0.0, 0.8, 0.6))), (), "not orthonormal"),
    ("geometry-long", _rows(_set("phase_dir", (0.0, 3.0, 0.0))), (), "not orthonormal"),
    (
        "geometry-mixed",
        _rows(_set("read_dir", (0.0, 0.0, 1.0), slice(0, 3))),
        (),
        "different read/phase/slice directions",
    ),
    ("geometry-stacked", _rows(_set("position", 7.0)), (), "not equally spaced"),
    ("header-fov-zero", _header(_fov_zero), (), "bad geometry: encoded field of view"),
    ("dims-uneven-contrasts", _rows(_drop_contrast_line), (), "2 values of contrast sample"),
    (
        "dims-absurd-volumes",
        _rows(lambda r: _set_idx("repetition", np.arange(len(r)))(r), kspace=_k((18, 1, 4, 16))),
        (),
        "absurd counts: 288 volumes",
    ),
    ("dims-select-none", _rows(lambda r: None), ("--volumes", "set=7"), "matches none"),
    (
        "3d-partition-in-2d",
        _rows(_set_idx("kspace_encode_step_2", 1, slice(0, 1))),
        (),
        "partition indices in a 2-D encoding",
    ),
    (
        "3d-missing-partition",
        _rows(lambda r: r[r["head"]["idx"]["kspace_encode_step_2"] != 1], three_d=True),
        (),
        "partition 1 has no acquisitions",
    ),
    (
        "3d-partition-outside",
        _rows(_set_idx("kspace_encode_step_2", 9, slice(0, 1)), three_d=True),
        (),
        "does not fit the encoded z = 2",
    ),
    ("3d-huge", _header(_huge_3d), (), "too large"),
    (
        "noise-singular",
        _rows(lambda r: None, noise=np.zeros((4, 2, 16))),
        (),
        "noise covariance of the noise lines is singular",
    ),
    (
        "noise-channels",
        _rows(lambda r: None, noise=np.ones((4, 3, 16))),
        (),
        "noise lines have [3] channels",
    ),
    (
        "noise-nan",
        _rows(lambda r: None, noise=np.full((4, 2, 16), np.inf)),
        (),
        "noise lines contain non-finite values",
    ),
    (
        "reference-outside",
        _rows(
            lambda r: _set_idx("kspace_encode_step_1", 40, r["head"]["flags"] == 1 << 19)(r),
            mask=_MASK,
            calibration_mask=_CAL,
        ),
        (),
        "reference scan: inconsistent sizes",
    ),
]


def _call(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = _k((2, 16, 16), seed=1)
    return path


@pytest.mark.parametrize(
    ("build", "options", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_ismrmrd_hostile_case(build, options, reason, good_file: Path, tmp_path: Path):
    bad = tmp_path / "in" / "bad.mrd.h5"
    bad.parent.mkdir()
    build(bad)
    out = tmp_path / "out"
    argv = ["reconstruct", str(bad), str(good_file), "--method", "zero-filled", *options]
    code, stderr = _call([*argv, "--out", str(out)])
    assert "Traceback" not in stderr and 'File "' not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("sgilo: error: ")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("sgilo: error: bad.mrd.h5: "), errors
    assert reason in errors[0], errors[0]
    assert code == 1
    assert {p.name for p in out.iterdir()} == {"good.h5", "run.json", "run.log"}
    record = json.loads((out / "run.json").read_text())
    assert [record["timings"][str(p)]["status"] for p in (bad, good_file)] == ["failed", "done"]
