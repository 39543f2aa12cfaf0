"""The command line's defaults agree with the configs they mirror, and ``sgilo --help`` stays
light.

Each option that mirrors a config field (a pydantic field, or a keyword argument of the function
that the command calls) must default to the field's default: listed here by hand (so that an
option that stops reading its default from the config fails), and every option the parser marks
as mirrored is checked as well. ``train-gan``'s architecture defaults are the shipped prior's,
checked against the configuration stored in its checkpoint.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from sgilo.flows.cli import COMMANDS, build_parser, command_parsers

ROOT = Path(__file__).resolve().parents[2]
ARCH = ("sgilo.models.stylegan2.presets", "PRESETS", "brain-t1-128")

#: (command, option dest) → (module, config class or function, field)
EXPECTED = {
    ("demo", "slices"): ("sgilo.pipeline.demo", "DemoConfig", "num_slices"),
    ("demo", "seed"): ("sgilo.pipeline.demo", "DemoConfig", "seed"),
    ("reconstruct", "samples"): ("sgilo.pipeline.solvers.sgilo", "SGILOConfig", "chains"),
    ("reconstruct", "device"): ("sgilo.pipeline.batch", "BatchOptions", "device"),
    ("batch", "samples"): ("sgilo.pipeline.solvers.sgilo", "SGILOConfig", "chains"),
    ("batch", "device"): ("sgilo.pipeline.batch", "BatchOptions", "device"),
    ("batch", "workers"): ("sgilo.pipeline.batch", "BatchOptions", "workers"),
    ("batch", "dask_address"): ("sgilo.pipeline.batch", "BatchOptions", "dask_address"),
    ("serve", "settle"): ("sgilo.pipeline.batch", "pending_inputs", "settle_s"),
    ("serve", "workers"): ("sgilo.pipeline.batch", "BatchOptions", "workers"),
    **{("train-gan", f): (*ARCH, f) for f in ("resolution", "image_channels", "style_dim")},
    **{("train-gan", f): (*ARCH, f) for f in ("channel_base", "channel_max", "channel_min")},
    ("train-gan", "batch"): ("sgilo.models.stylegan2.train", "TrainConfig", "batch_size"),
    ("train-gan", "steps"): ("sgilo.models.stylegan2.train", "TrainConfig", "total_steps"),
    ("train-gan", "checkpoint_every"): (
        "sgilo.models.stylegan2.train",
        "TrainConfig",
        "checkpoint_every",
    ),
    ("train-gan", "seed"): ("sgilo.models.stylegan2.train", "TrainConfig", "seed"),
    ("train-score", "steps"): ("sgilo.models.score.train", "ScoreTrainConfig", "steps"),
    ("train-score", "batch"): ("sgilo.models.score.train", "ScoreTrainConfig", "batch"),
    ("train-score", "seed"): ("sgilo.models.score.train", "ScoreTrainConfig", "seed"),
    ("invert-training", "batch"): ("sgilo.pipeline.inversions", "invert_images", "batch"),
    ("invert-training", "seed"): ("sgilo.pipeline.inversions", "invert_images", "seed"),
    ("sample", "t"): ("sgilo.models.score.show", "prior_refined_samples", "t"),
    ("sample", "steps"): ("sgilo.models.score.show", "prior_refined_samples", "steps"),
    ("bench", "samples"): ("sgilo.pipeline.research.bench", "BenchConfig", "samples"),
    ("bench", "threads"): ("sgilo.pipeline.research.bench", "BenchConfig", "threads"),
    ("bench", "device"): ("sgilo.pipeline.research.bench", "BenchConfig", "device"),
    ("scaling", "sizes"): ("sgilo.pipeline.research.scaling", "ilo_scaling", "sizes"),
    ("scaling", "batches"): ("sgilo.pipeline.research.scaling", "ilo_scaling", "batches"),
    ("scaling", "steps"): ("sgilo.pipeline.research.scaling", "ilo_scaling", "steps_per_round"),
    ("scaling", "rounds"): ("sgilo.pipeline.research.scaling", "ilo_scaling", "rounds"),
    ("scaling", "threads"): ("sgilo.pipeline.research.scaling", "ilo_scaling", "num_threads"),
    ("evaluate-prior", "slices"): (
        "sgilo.pipeline.research.prior_eval",
        "evaluate_prior",
        "num_slices",
    ),
    ("evaluate-prior", "samples"): (
        "sgilo.pipeline.research.prior_eval",
        "evaluate_prior",
        "num_samples",
    ),
    ("evaluate-prior", "methods"): (
        "sgilo.pipeline.research.prior_eval",
        "evaluate_prior",
        "methods",
    ),
    ("tune-generative", "samples"): (
        "sgilo.pipeline.research.tuning_generative",
        "sweep_generative",
        "samples",
    ),
    ("tune-classical", "slices"): ("sgilo.pipeline.research.tuning", "run", "num_slices"),
}


def _source(module: str, name: str, *key: str):
    source = getattr(importlib.import_module(module), name)
    return source[key[0]] if key else source


def _default(source, field: str):
    """The field's default, read here without the command line's helpers."""
    if isinstance(source, BaseModel):
        return getattr(source, field)
    if isinstance(source, type):
        return source.model_fields[field].get_default(call_default_factory=True)
    return inspect.signature(source).parameters[field].default


def _action(command: str, dest: str):
    parser = command_parsers(build_parser())[command]
    (action,) = [a for a in parser._actions if a.dest == dest]
    return action


@pytest.mark.parametrize(
    ("command", "dest"), sorted(EXPECTED), ids=[f"{c}:{d}" for c, d in sorted(EXPECTED)]
)
def test_option_default_is_the_configs(command, dest):
    *where, field = EXPECTED[(command, dest)]
    source = _source(*where)
    action = _action(command, dest)
    assert action.default == _default(source, field)
    assert action.mirrors == (source, field)  # read from the config, not typed in twice


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_mirrored_option_agrees(command):
    parser = command_parsers(build_parser())[command]
    mirrored = [a for a in parser._actions if hasattr(a, "mirrors")]
    for action in mirrored:
        source, field = action.mirrors
        assert action.default == _default(source, field), action.dest
    listed = {dest for (c, dest) in EXPECTED if c == command}
    assert {a.dest for a in mirrored} >= listed


@pytest.mark.parametrize("name", ["brain-t1-128", "natural-rgb-32"])
def test_presets_are_the_shipped_generators(name):
    from sgilo.models.stylegan2.generator import GeneratorConfig
    from sgilo.models.stylegan2.presets import PRESETS

    stored = torch.load(
        ROOT / "models" / "weights" / name / "generator.pt", map_location="cpu", weights_only=True
    )["config"]
    assert PRESETS[name] == GeneratorConfig(**stored)


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from sgilo.flows.cli import build_parser\n"
        "text = build_parser().format_help()\n"
        "assert 'reconstruct' in text and 'train-gan' in text\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
