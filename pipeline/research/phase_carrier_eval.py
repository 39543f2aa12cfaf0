"""Which phase carrier a magnitude generator gets on multi-coil data, and what it costs: the
generative methods' PSNR with each carrier, on MNI slices simulated with a protocol
(:class:`sgilo.pipeline.experiment.Setting`) and ESPIRiT (or the true) coil maps.

Carriers (``c = e^{iφ}``, complex ``(B, H, W)``):

- ``calibration``: :func:`sgilo.pipeline.solvers.calibration.calibration_phase`, the phase of the
  image of the fully sampled centre columns (5 of 128 at 8×);
- ``sense``: :func:`sgilo.pipeline.solvers.calibration.sense_phase`, the phase of the CG-SENSE
  image low-passed to ``cycles`` cycles per field of view (``phase="auto"`` on multi-coil data);
- ``oracle``: the phase of the true complex image combined with the operator's maps,
  ``Σ_c S̄_c S*_c x*``: an upper bound that no reconstruction can use (scoring only).

Each row also gives the carrier's magnitude-weighted error ``Σ m |c − c_oracle| / Σ m``. The table
of docs/GENERATIVE_TUNING.md ("8-coil 8×: the phase carrier") was made with it::

    python -m sgilo.pipeline.research.phase_carrier_eval --split validation --slices 6 --seed 0 \
        --method ilo --carriers calibration,sense,oracle
"""

from __future__ import annotations

import argparse
import json
import time
from unittest import mock

import numpy as np
import torch

import sgilo.pipeline.solvers.problem as problem_module
from sgilo.operators.base import LinearOperator
from sgilo.pipeline.data.mni import mni_slices
from sgilo.pipeline.experiment import Setting, espirit_operator, make_operator
from sgilo.pipeline.methods import load_prior, solve
from sgilo.pipeline.metrics import psnr
from sgilo.pipeline.simulate import Acquisition
from sgilo.pipeline.solvers.calibration import (
    PHASE_CYCLES,
    calibration_phase,
    sense_phase,
    unit_phasor,
)


def oracle_carrier(acq: Acquisition, op: LinearOperator) -> torch.Tensor:
    """``e^{iφ*}`` ``(B, H, W)``: the phase of ``Σ_c S̄_c S*_c x*`` (``S`` the operator's maps,
    ``S*`` the simulated ones, ``x*`` the true complex image), the carrier that would make the
    true magnitude fit noiseless data with these maps."""
    x = torch.from_numpy(acq.image).to(torch.complex64)
    true_maps = torch.from_numpy(acq.maps)
    maps = op.coil_maps
    maps = maps if maps.ndim == 4 else maps[None]
    return unit_phasor((maps.conj() * true_maps[None] * x[:, None]).sum(dim=1))


def carrier_error(carrier: torch.Tensor, oracle: torch.Tensor, magnitude: np.ndarray) -> float:
    """``Σ m |c − c_oracle| / Σ m`` over the stack (``m`` the true magnitude)."""
    m = torch.from_numpy(magnitude).to(torch.float64)
    diff = (carrier.to(torch.complex128) - oracle.to(torch.complex128)).abs()
    return float((diff * m).sum() / m.sum())


def evaluate(
    split: str,
    slices: int,
    seed: int,
    setting: Setting,
    method: str,
    carriers: list[str],
    *,
    true_maps: bool = False,
    cycles: int = PHASE_CYCLES,
    snr_db: float = 30.0,
) -> list[dict]:
    """One row per carrier: PSNR of ``method`` (defaults otherwise) and the carrier's error, on
    ``slices`` evenly spaced MNI slices of ``split``."""
    images = mni_slices(split, 128)
    pick = np.linspace(0, len(images) - 1, slices).round().astype(int)
    acq = setting.simulate(images[pick], snr_db=snr_db, seed=seed)
    y, op = make_operator(acq) if true_maps else espirit_operator(acq)
    oracle = oracle_carrier(acq, op)
    prior = load_prior(None)
    makers = {
        "calibration": calibration_phase,
        "sense": lambda yn, o: sense_phase(yn, o, cycles=cycles),
        "oracle": lambda yn, o: oracle,
    }
    rows = []
    for name in carriers:
        carrier = makers[name]
        start = time.perf_counter()
        # every carrier is served through the "from-calibration" slot of prepare_problem
        with mock.patch.object(problem_module, "calibration_phase", carrier):
            result = solve(
                y, op, method, prior=prior, seed=1, solver_options={"phase": "from-calibration"}
            )
        rows.append(
            {
                "setting": setting.label,
                "maps": "true" if true_maps else "espirit",
                "method": method,
                "carrier": name,
                "cycles": cycles if name == "sense" else None,
                "carrier_error": carrier_error(carrier(y, op), oracle, acq.target),
                "psnr": psnr(acq.target, result.magnitude),
                "seconds": time.perf_counter() - start,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    from sgilo.pipeline.allocator import keep_freed_memory

    keep_freed_memory()  # as the sgilo command does (docs/SPEED.md §15)
    p = argparse.ArgumentParser(prog="python -m sgilo.pipeline.research.phase_carrier_eval")
    p.add_argument("--split", default="validation", choices=["train", "validation"])
    p.add_argument("--slices", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--acceleration", type=float, default=8)
    p.add_argument("--center-fraction", type=float, default=0.04)
    p.add_argument("--method", default="ilo", choices=["csgm", "ilo", "sgilo"])
    p.add_argument("--carriers", default="calibration,sense,oracle")
    p.add_argument("--cycles", type=int, default=PHASE_CYCLES)
    p.add_argument("--true-maps", action="store_true")
    p.add_argument("--snr-db", type=float, default=30.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    setting = Setting(args.coils, args.acceleration, args.center_fraction)
    evaluate(
        args.split,
        args.slices,
        args.seed,
        setting,
        args.method,
        args.carriers.split(","),
        true_maps=args.true_maps,
        cycles=args.cycles,
        snr_db=args.snr_db,
    )


if __name__ == "__main__":
    main()
