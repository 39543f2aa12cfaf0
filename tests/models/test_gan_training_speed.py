"""The trainer's speed paths, on the CPU: random numbers on the training device, no read-back to
the host in a sync-free step, the deferred value check of a sampler's batches, the multi-tensor
EMA and Adam, resume across devices, ``torch.compile`` and the benchmark module. Tiny networks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sgilo.models.stylegan2.train_state as train_state
import sgilo.models.stylegan2.train_step as train_step
from sgilo.flows.cli import main
from sgilo.models.stylegan2 import GeneratorConfig
from sgilo.models.stylegan2.train import TrainConfig, train_gan
from sgilo.models.stylegan2.train_compile import compiled_nets
from sgilo.pipeline.research import train_speed

R = 16
CPU = torch.device("cpu")
ROOT = str(Path(train_step.__file__).parents[2])  # the repository (the package sgilo)


def tiny_config(total_steps: int = 4, **kw) -> TrainConfig:
    g = GeneratorConfig(
        resolution=R, style_dim=16, n_mlp=2, image_channels=1, channels={4: 16, 8: 16, 16: 8}
    )
    fields = dict(generator=g, batch_size=4, total_steps=total_steps, r1_every=2, r1_gamma=1.0)
    fields |= dict(checkpoint_every=2, sample_every=2, log_every=1, sample_count=4, seed=3)
    return TrainConfig(**(fields | kw))


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    """32 smooth images (32, 1, R, R) in [0, 1]."""
    coarse = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=R, mode="bilinear").clamp(0, 1)


def test_device_side_mixing_gives_the_same_styles_and_gradients():
    """mix_styles (a device mask) vs the host-side slicing: equal ws, gradients up to rounding."""
    run = train_state.new_run(tiny_config(), CPU)
    g, n = run.g, run.g.n_latent
    for seed in range(6):  # mixing drawn with probability 0.9: both branches occur
        ws, grads = [], []
        for on_device in (False, True):
            rng = torch.Generator().manual_seed(seed)
            w, noises = train_step.sample_ws(g, 4, rng, 0.5, CPU, on_device=on_device)
            g.zero_grad()
            g.synthesize(w, noises).square().sum().backward()
            ws.append(w.detach().clone())
            grads.append(torch.cat([p.grad.flatten() for p in g.style.parameters()]))
        assert ws[0].shape == (4, n, g.style_dim) and torch.equal(ws[0], ws[1])
        scale = float(grads[0].abs().max())  # float32 sums in another order: relative to it
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6 * scale)


def test_sync_free_step_reads_nothing_back(data, monkeypatch):
    """With ``sync_free`` (as on a GPU) no sgilo code reads a tensor's value to the host during
    a step; the CPU default does (the host-side style-mixing draw), which the counter sees."""
    reads: list[str] = []

    def counted(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(ROOT) and "/.venv/" not in caller:
                reads.append(f"{name} in {caller}")
            return original(self, *args, **kwargs)

        return wrapper

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    sampler = train_step.CheckedSampler(lambda b, gen: data[:b], R, 1, defer=True)
    for sync_free in (True, False):
        run = train_state.new_run(tiny_config(), CPU)
        run.sync_free = sync_free
        reads.clear()
        for _ in range(2):  # an R1 step and a plain one
            stats = train_step.train_step(run, sampler, CPU)
        assert all(v.dim() == 0 for v in stats.values())
        assert (reads == []) == sync_free, reads
    monkeypatch.undo()
    sampler.verify()  # the deferred check, read once


def test_deferred_value_check_raises_at_the_next_log(tmp_path, data):
    bad = train_step.CheckedSampler(lambda b, gen: data[:b] * 3, R, 1, defer=True)
    x = bad(4, torch.Generator())  # no error yet: the check is a device flag
    assert x.shape == (4, 1, R, R)
    with pytest.raises(ValueError, match=r"\[0, 1\].*since the last log"):
        bad.verify()
    bad.verify()  # the flag was consumed
    ok = train_step.CheckedSampler(lambda b, gen: data[:b], R, 1, defer=True)
    ok(4, torch.Generator())
    ok.verify()


def test_ema_update_is_the_one_tensor_lerp_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    ema = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    want = [p.lerp(e, 0.97) for p, e in zip(params, ema, strict=True)]
    train_step.update_ema(ema, params, 0.97)
    assert all(torch.equal(a, b) for a, b in zip(ema, want, strict=True))


def test_adam_is_multi_tensor_and_a_resume_keeps_the_device_flags(tmp_path, data):
    run = train_state.new_run(tiny_config(), CPU)
    for opt in (run.g_opt, run.d_opt):
        assert opt.param_groups[0]["foreach"] is True and opt.param_groups[0]["fused"] is False
    assert train_state.adam_flags(torch.device("cuda")) == {"fused": True, "foreach": False}
    train_gan(tiny_config(2), data, tmp_path)
    ckpt = load_ckpt(tmp_path / "checkpoint.pt")
    for key in ("g_optim", "d_optim"):  # as a GPU run would have saved it
        for group in ckpt[key]["param_groups"]:
            group |= {"fused": True, "foreach": False}
    other = train_state.new_run(tiny_config(2), CPU)
    train_state.restore(other, ckpt)
    assert other.g_opt.param_groups[0]["fused"] is False
    assert other.g_opt.param_groups[0]["foreach"] is True


def test_resume_on_another_device_reseeds_the_generators(tmp_path, data):
    train_gan(tiny_config(2), data, tmp_path / "a")
    ckpt = load_ckpt(tmp_path / "a" / "checkpoint.pt")
    assert ckpt["rng_devices"] == {"data": "cpu", "augment": "cpu", "latent": "cpu"}
    ckpt["rng_devices"] = dict.fromkeys(ckpt["rng_devices"], "cuda")  # saved by a GPU run
    runs = []
    for _ in range(2):
        run = train_state.new_run(tiny_config(4), CPU)
        with pytest.warns(UserWarning, match="reseeded from"):
            train_state.restore(run, ckpt)
        runs.append(run)
    same = train_state.new_run(tiny_config(4), CPU)
    train_state.restore(same, load_ckpt(tmp_path / "a" / "checkpoint.pt"))
    a, b, c = (r.rngs["latent"].get_state() for r in (*runs, same))
    assert torch.equal(a, b) and not torch.equal(a, c)  # reseeded, deterministically


def test_images_in_memory_draw_on_the_training_device(data):
    sampler = train_step.as_sampler(data, R, 1, "cpu")
    assert isinstance(sampler, train_step.TensorSampler) and sampler.rng_device == CPU
    callable_sampler = train_step.as_sampler(lambda b, gen: data[:b], R)
    assert callable_sampler.rng_device == CPU  # a callable always gets a CPU generator
    run = train_state.new_run(tiny_config(), CPU, data_device=sampler.rng_device)
    assert {r.device for r in run.rngs.values()} == {CPU}


def test_compile_is_wired_into_train_gan(tmp_path, data, monkeypatch):
    """train_gan(compile_mode=...) compiles mapping, synthesis and D (static shapes) and steps
    through them; torch.compile itself is replaced by a recorder here (the real one: below)."""
    compiled: list[tuple[str, str, bool]] = []
    calls: list[str] = []

    def fake_compile(fn, mode, dynamic):
        name = getattr(fn, "__name__", type(fn).__name__)
        compiled.append((name, mode, dynamic))

        def counted(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return counted

    monkeypatch.setattr(torch, "compile", fake_compile)
    train_gan(tiny_config(2), data, tmp_path, compile_mode="reduce-overhead")
    assert sorted(compiled) == [
        ("Discriminator", "reduce-overhead", False),
        ("mapping", "reduce-overhead", False),
        ("synthesize", "reduce-overhead", False),
    ]
    # per step: 2 mappings and syntheses (D step, G step), 3 D calls (reals, fakes, G step)
    assert sorted(set(calls)) == ["Discriminator", "mapping", "synthesize"]
    assert calls.count("Discriminator") == 6 and calls.count("synthesize") == 4
    with pytest.raises(ValueError, match="compile mode"):
        train_gan(tiny_config(2), data, tmp_path / "bad", compile_mode="fastest")


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("SGILO_COMPILE_TESTS") != "1",
    reason="torch.compile of G and D takes ~2 min on a 2-core CPU; SGILO_COMPILE_TESTS=1 runs it",
)
def test_compile_matches_eager_within_rounding(data):
    """One step with compiled networks vs the same step without: the losses equal up to float
    rounding, the weights after Adam's first step (±lr·g/|g| per weight) within 5 % of lr."""
    runs = []
    for compiled in (False, True):
        run = train_state.new_run(tiny_config(r1_every=4), CPU)
        if compiled:
            run.nets = compiled_nets(run.g, run.d, "default")
        sampler = train_step.as_sampler(data, R, 1, "cpu")
        stats = train_step.train_step(run, sampler, CPU)
        runs.append((run, stats))
    (eager, s0), (comp, s1) = runs
    assert comp.nets.compiled and not eager.nets.compiled
    for k in s0:
        torch.testing.assert_close(s1[k], s0[k], rtol=1e-5, atol=1e-6)
    lr = eager.config.lr
    for a, b in ((eager.g, comp.g), (eager.d, comp.d), (eager.g_ema, comp.g_ema)):
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa:
            torch.testing.assert_close(sb[k], sa[k], rtol=0, atol=0.05 * lr)
    start = train_state.new_run(tiny_config(), CPU).g.state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in comp.g.state_dict().items())


def test_train_speed_benchmark_writes_rows(tmp_path):
    out = tmp_path / "speed.json"
    args = ["--device", "cpu", "--out", str(out), "--batches", "4", "--seconds", "0.2"]
    assert train_speed.main([*args, "--warmup", "1"]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["arch"] == "tiny-32" and row["batch"] == 4 and row["compile"] is None
    assert row["images_per_s"] > 0 and row["steps"] >= 2
    assert row["host_ms"] <= row["wall_ms"] * 1.05
    assert report["environment"]["torch"] == torch.__version__
    # with the synth-brain sampler in the step (as train-gan --data synth-brain)
    assert train_speed.main([*args, "--warmup", "1", "--data", "synth-brain"]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["data"] == "synth-brain" and row["images_per_s"] > 0


def test_cli_compile_flag(tmp_path, data, monkeypatch):
    modes: list[str] = []

    def fake_compile(fn, mode, dynamic):
        modes.append(mode)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    np.save(tmp_path / "images.npy", data[:, 0].numpy())
    args = ["train-gan", "--data", str(tmp_path / "images.npy"), "--steps", "1"]
    args += ["--resolution", "16", "--style-dim", "16", "--channel-max", "16", "--batch", "2"]
    assert main([*args, "--out", str(tmp_path / "a"), "--compile"]) == 0
    assert modes == ["default"] * 3
    assert main([*args, "--out", str(tmp_path / "b")]) == 0 and len(modes) == 3
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "c"), "--compile", "fastest"])
