"""The opt-in `compile` of the generator in the inner step: the captured step (torch.compile with
the aot_eager backend, no code generation, fast enough for a test) gives the eager results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgilo.operators.masks import column_mask
from sgilo.operators.mri import SingleCoilMRI
from sgilo.pipeline.solvers.compiled import synthesis
from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm
from sgilo.pipeline.solvers.ilo import ILOConfig, ilo
from sgilo.pipeline.solvers.sgilo import SGILOConfig, sgilo

R = 16


def _problem(gen):
    mask = torch.from_numpy(column_mask("random", R, 0.25, 4, seed=0).astype(np.float32))
    op = SingleCoilMRI(mask, shape=(R, R))
    with torch.no_grad():
        z = torch.randn(2, gen.style_dim, generator=torch.Generator().manual_seed(5))
        x = ((gen(z)[:, 0] + 1) / 2).to(torch.complex64)
    return op.A(x), op


def test_off_is_the_generator_itself(gen_stats):
    gen, _ = gen_stats
    assert synthesis(gen, "off") == gen.synthesize
    assert synthesis(gen, "aot_eager") != gen.synthesize


@pytest.mark.parametrize("method", ["csgm", "ilo", "sgilo"])
def test_captured_step_gives_the_eager_result(gen_stats, method, monkeypatch):
    gen, stats = gen_stats
    y, op = _problem(gen)
    calls = [0]
    real_compile = torch.compile

    def counting_compile(fn, **kwargs):
        compiled = real_compile(fn, **kwargs)

        def call(*args, **kw):
            calls[0] += 1
            return compiled(*args, **kw)

        return call

    monkeypatch.setattr(torch, "compile", counting_compile)

    def run(setting):
        rng = torch.Generator().manual_seed(4)
        if method == "csgm":
            config = CSGMConfig(steps=12, restarts=2, compile=setting)
            return csgm(y, op, generator=gen, config=config, rng=rng)
        kw = dict(steps=(6, 6), init_steps=6, init_restarts=1, compile=setting)
        if method == "ilo":
            return ilo(y, op, generator=gen, latent_stats=stats, config=ILOConfig(**kw), rng=rng)
        config = SGILOConfig(**kw)
        return sgilo(y, op, generator=gen, latent_stats=stats, config=config, rng=rng)

    eager = run("off")
    assert calls[0] == 0
    captured = run("aot_eager")
    assert calls[0] > sum(captured.diagnostics.steps_run)  # every step ran the compiled form
    assert captured.diagnostics.steps_run == eager.diagnostics.steps_run
    assert torch.allclose(captured.image, eager.image, atol=1e-6)
    assert np.allclose(captured.history, eager.history, rtol=1e-6)
