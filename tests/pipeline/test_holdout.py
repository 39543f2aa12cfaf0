"""Held-out measurements (pipeline/solvers/holdout.py): which columns are held out, how the
losses and the gain split, the iterate ILO/SGILO keep, and that the output still honours every
measurement."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sgilo.operators.fft import fft2c
from sgilo.operators.mri import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI
from sgilo.pipeline.solvers.holdout import candidate_columns, heldout_columns, with_holdout
from sgilo.pipeline.solvers.ilo import ILOConfig, ilo
from sgilo.pipeline.solvers.problem import Problem, prepare_problem
from sgilo.pipeline.solvers.rounds import EarlyStop, run_rounds
from sgilo.pipeline.solvers.sgilo import SGILOConfig, sgilo

R = 16  # the resolution of the `gen_stats` generator (tests/pipeline/conftest.py)
#: measured columns: the centre run 6…9 (W // 2 = 8) and six outer columns
MEASURED = [0, 2, 4, 6, 7, 8, 9, 11, 13, 15]
OUTER = {0, 2, 4, 11, 13, 15}


def _mask() -> torch.Tensor:
    mask = torch.zeros(R)
    mask[MEASURED] = 1
    return mask


def _truth(gen, batch=2, seed=5) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(batch, gen.style_dim, generator=torch.Generator().manual_seed(seed))
        g = gen(z)
    return ((g[:, 0] + 1) / 2).to(torch.complex64)


def _maps(coils: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(coils, R, R, generator=g) + 1j * torch.randn(coils, R, R, generator=g)
    return (maps / maps.abs().pow(2).sum(0).sqrt()).to(torch.complex64)


def _problem(gen, op, y, *, gain: bool = False) -> Problem:
    problem = prepare_problem(y, op, gen, phase="none", normalize=False, fit_gain=gain)
    assert isinstance(problem, Problem)
    return problem


def test_heldout_columns_are_measured_outer_columns_drawn_per_slice(gen_stats):
    gen, _ = gen_stats
    op = SingleCoilMRI(_mask(), shape=(R, R))
    problem = _problem(gen, op, op.A(_truth(gen, batch=3)))
    assert {int(i) for i in candidate_columns(problem)[0].nonzero()} == OUTER
    columns = heldout_columns(problem, 0.34, seed=7)
    assert columns.shape == (3, R)
    for row in columns:
        chosen = {int(i) for i in row.nonzero()}
        assert len(chosen) == 2 and chosen <= OUTER  # round(0.34 · 6)
    assert not all(torch.equal(columns[0], row) for row in columns[1:])  # slices differ
    assert torch.equal(columns, heldout_columns(problem, 0.34, seed=7))  # seeded
    # at least one held out, at least one outer column fitted
    assert int(heldout_columns(problem, 0.01, seed=0)[0].sum()) == 1
    assert int(heldout_columns(problem, 0.99, seed=0)[0].sum()) == len(OUTER) - 1
    assert with_holdout(problem, 0.0, seed=0) is problem


@pytest.mark.parametrize("coils", [0, 3])
def test_fit_and_heldout_losses_split_the_measurement_loss(gen_stats, coils):
    gen, _ = gen_stats
    op = MultiCoilMRI(_maps(coils), _mask()) if coils else SingleCoilMRI(_mask(), shape=(R, R))
    truth = _truth(gen)
    y = op.A(truth) + 0.05 * op.A(torch.randn_like(truth))
    full = _problem(gen, op, y)
    split = with_holdout(full, 0.5, seed=1)
    per_column = R * max(coils, 1)  # every row of a measured column, every coil
    held = split.heldout.sum(dim=1) * per_column
    assert torch.equal(split.m_heldout, held.to(split.m.dtype))
    assert torch.equal(split.m + split.m_heldout, full.m)
    g = torch.randn(2, 1, R, R, generator=torch.Generator().manual_seed(2))
    _, loss_all, none = full.image_and_losses(g)
    _, fit, heldout = split.image_and_losses(g)
    assert none is None and heldout is not None
    torch.testing.assert_close(split.m * fit + split.m_heldout * heldout, full.m * loss_all)
    assert torch.allclose(split.measurement_loss(full.image(g)), fit)


@pytest.mark.parametrize("coils", [0, 3])
@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_losses_read_only_the_sampled_columns_and_equal_the_full_ones(gen_stats, coils, fraction):
    """A problem reads ``A x`` and ``y`` on the sampled columns alone (``Problem.columns``, the
    union over the batch of per-slice masks); its image, gain, fit and held-out losses and their
    gradients equal those computed over every column of k-space."""
    gen, _ = gen_stats
    other = _mask()
    other[[0, 3]] = torch.tensor([0.0, 1.0])
    masks = torch.stack([_mask(), other])[:, None, :].expand(2, R, R)
    op = MultiCoilMRI(_maps(coils), masks) if coils else SingleCoilMRI(masks, shape=(R, R))
    truth = _truth(gen)
    y = op.A(truth) + 0.05 * op.A(torch.randn_like(truth))
    problem = with_holdout(_problem(gen, op, y, gain=True), fraction, seed=1)
    union = sorted({*MEASURED, 3})
    assert problem.columns is not None and problem.columns.tolist() == union
    full = dataclasses.replace(problem, columns=None)
    g = torch.randn(2, 1, R, R, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    ours, theirs = problem.image_and_losses(g), full.image_and_losses(g)
    assert (ours[2] is None) == (theirs[2] is None) == (fraction == 0)
    for a, b in zip(ours, theirs, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b)
    (grad,) = torch.autograd.grad(ours[1].sum(), g)
    (grad_full,) = torch.autograd.grad(theirs[1].sum(), g)
    torch.testing.assert_close(grad, grad_full)
    x = full.image(g).detach()
    torch.testing.assert_close(problem.measurement_loss(x), full.measurement_loss(x))
    torch.testing.assert_close(problem.gain(x), full.gain(x))
    # every column sampled, or no Cartesian mask: nothing to leave out
    every = SingleCoilMRI(torch.ones(R), shape=(R, R))
    assert _problem(gen, every, every.A(truth)).columns is None


def test_fit_and_gain_do_not_see_the_heldout_data(gen_stats):
    gen, _ = gen_stats
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_truth(gen))
    problem = with_holdout(_problem(gen, op, y, gain=True), 0.5, seed=0)
    # corrupt the held-out measurements only
    out = problem.heldout[:, None, :]
    y_bad = torch.where(out, 50 * y + 3 * (op.mask > 0), y)
    bad = dataclasses.replace(problem, y=y_bad, y_normalized=y_bad)
    g = torch.randn(2, 1, R, R, generator=torch.Generator().manual_seed(4))
    x, fit, held = problem.image_and_losses(g)
    x_bad, fit_bad, held_bad = bad.image_and_losses(g)
    torch.testing.assert_close(x_bad, x)  # same gain
    torch.testing.assert_close(fit_bad, fit)
    assert bool((held_bad > 10 * held).all())


class _ScriptedHoldout:
    """A real problem whose held-out loss is scripted: 0 at call ``winner``, 1 elsewhere; it
    records every image it was asked to score."""

    def __init__(self, problem: Problem, winner: int) -> None:
        self.problem, self.winner = problem, winner
        self.op, self.y, self.batch = problem.op, problem.y, problem.batch
        self.images: list[torch.Tensor] = []

    def image_and_losses(self, g):
        x, loss, _ = self.problem.image_and_losses(g)
        held = torch.full_like(loss, 0.0 if len(self.images) == self.winner else 1.0)
        self.images.append(x.detach().clone())
        return x, loss, held


def test_rounds_keep_the_iterate_with_the_lowest_heldout_loss_of_any_round(gen_stats):
    gen, (mu, sigma) = gen_stats
    op = SingleCoilMRI(_mask(), shape=(R, R))
    problem = _problem(gen, op, op.A(_truth(gen)))
    z = torch.randn(2, gen.n_latent, gen.style_dim, generator=torch.Generator().manual_seed(0))

    def rounds(target, early_stop=None):
        return run_rounds(
            target,
            gen,
            mu,
            sigma,
            z,
            steps=(4, 5),
            lr=0.05,
            geocross_weight=0.01,
            noise_blocks_ahead=1,
            after_step=lambda rnd: lambda: None,
            history=[],
            early_stop=early_stop,
        )

    # rounds of 4 and 5 steps evaluate 5 + 6 iterates; call 2 is step 2 of round 0
    scripted = _ScriptedHoldout(problem, winner=2)
    result = rounds(scripted)
    assert len(scripted.images) == 11
    torch.testing.assert_close(result.best_x, scripted.images[2])
    assert result.best_round is not None and result.best_round.tolist() == [0, 0]
    assert result.best_step is not None and result.best_step.tolist() == [2, 2]
    assert result.best_heldout is not None and result.best_heldout.tolist() == [0.0, 0.0]
    # without a hold-out: the last round's lowest measurement loss, as before
    plain = rounds(problem, EarlyStop(50))
    assert plain.best_heldout is None and plain.best_round is None


def test_ilo_with_holdout_still_honours_every_measurement(gen_stats):
    gen, stats = gen_stats
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_truth(gen, seed=11))
    # exact data consistency (dc_wavelet=0), so every measured column must come back unchanged
    config = ILOConfig(steps=(6, 4), init_steps=5, init_restarts=1, holdout=0.34, dc_wavelet=0)
    res = ilo(y, op, generator=gen, latent_stats=stats, config=config)
    rounds = res.diagnostics.heldout.rounds
    assert len(rounds) == 2 and all(0 <= k < 2 for k in rounds)
    assert len(res.diagnostics.heldout.losses) == 2
    # single-coil data consistency replaces every measured column, the held-out ones included
    k = fft2c(res.image)
    sampled = (op.mask > 0).expand(2, R, R)
    torch.testing.assert_close(k[sampled], y[sampled], rtol=1e-4, atol=1e-5)
    # holdout = 0 is the papers' rule and reports no hold-out
    plain = ilo(
        y, op, generator=gen, latent_stats=stats, config=config.model_copy(update={"holdout": 0.0})
    )
    assert plain.diagnostics.heldout is None


def test_sgilo_chains_select_on_the_heldout_loss(gen_stats):
    gen, stats = gen_stats
    op = MultiCoilMRI(_maps(), _mask())
    y = op.A(_truth(gen, seed=13))
    config = SGILOConfig(
        steps=(4, 3), init_steps=4, init_restarts=1, chains=2, tau=0.0, lam=0.0, holdout=0.5
    )
    res = sgilo(y, op, generator=gen, latent_stats=stats, config=config)
    assert res.samples.shape == (2, 2, R, R)
    assert len(res.diagnostics.heldout.losses) == 4  # K · B
    assert np.isfinite(res.diagnostics.heldout.losses).all()


def test_non_cartesian_samples_can_be_held_out(gen_stats):
    gen, _ = gen_stats
    angles = torch.linspace(0, np.pi, 6)[:-1]
    radius = torch.linspace(-R / 2, R / 2 - 1, R)
    coord = torch.stack(
        [radius[None] * torch.cos(angles[:, None]), radius[None] * torch.sin(angles[:, None])],
        dim=-1,
    )
    op = NonCartesianMRI(coord, image_shape=(R, R))
    y = op.A(_truth(gen))
    problem = with_holdout(_problem(gen, op, y), 0.2, seed=0)
    assert problem.heldout.shape == (2, op.oshape[-1])
    assert problem.columns is None  # samples, not columns: the losses read every one
    assert problem.heldout.sum(dim=1).tolist() == [round(0.2 * op.oshape[-1])] * 2
    assert torch.equal(problem.m + problem.m_heldout, torch.full((2,), float(op.oshape[-1])))


def test_too_few_outer_columns_keep_the_measurement_loss_rule(gen_stats):
    gen, stats = gen_stats
    mask = torch.zeros(R)
    mask[[2, 7, 8]] = 1  # one outer column
    op = SingleCoilMRI(mask, shape=(R, R))
    y = op.A(_truth(gen))
    config = ILOConfig(holdout=0.2, steps=(2,), init_steps=2, init_restarts=1)
    with pytest.warns(UserWarning, match="holdout skipped: slice 0 has 1 measured column"):
        res = ilo(y, op, generator=gen, latent_stats=stats, config=config)
    assert res.diagnostics.heldout is None
    with pytest.raises(ValueError, match="slice 0 has 1 measured column"):
        heldout_columns(_problem(gen, op, y), 0.2, seed=0)


def test_refit_keeps_the_chosen_step_of_a_run_on_all_measurements(gen_stats):
    gen, stats = gen_stats
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_truth(gen, batch=1, seed=17))
    config = ILOConfig(
        steps=(7, 6),
        phase="none",
        normalize=False,
        fit_gain=False,
        data_consistency=False,
        init="random",
        early_stop=False,
        holdout=0.5,
    )
    res = ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=config,
        rng=torch.Generator().manual_seed(3),
    )
    (k,), (step,) = (
        res.diagnostics.heldout.rounds,
        res.diagnostics.heldout.steps,
    )
    # the second pass ran on every measurement, up to the chosen round
    runs = res.diagnostics.steps_run
    assert runs == list(config.steps[: k + 1])
    loss = res.diagnostics.measurement_losses[0]
    m = float((op.mask > 0).sum())
    assert np.isclose(float((op.A(res.image) - y).abs().pow(2).sum() / m), loss, rtol=1e-4)
    # ... and the kept image is that pass's iterate at (k, step): its loss is in the history
    at = sum(runs[:k]) + step
    assert step < runs[k]  # (an interior step here: the round's final one is not in history)
    assert np.isclose(res.history[at], loss, rtol=1e-5)
    # without the refit the image is the hold-out pass's own, fitted to half the columns
    once = ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=config.model_copy(update={"holdout_refit": False}),
        rng=torch.Generator().manual_seed(3),
    )
    assert once.diagnostics.heldout.rounds == [k]
    assert once.diagnostics.heldout.steps == [step]
    assert not torch.allclose(once.image, res.image)


def test_refit_replays_each_slices_stop_step(monkeypatch, gen_stats):
    """With the per-slice early stop, the refit on all measurements runs each slice of each
    round to the step it stopped at in the hold-out pass (not the round's last slice's)."""
    import sgilo.pipeline.solvers.ilo as ilo_module

    gen, stats = gen_stats
    op = SingleCoilMRI(_mask(), shape=(R, R))
    y = op.A(_truth(gen, batch=3, seed=9))
    passes = []

    def recorded(*args, **kwargs):
        result = run_rounds(*args, **kwargs)
        passes.append(result)
        return result

    monkeypatch.setattr(ilo_module, "run_rounds", recorded)
    config = ILOConfig(
        steps=(30, 30),
        phase="none",
        normalize=False,
        fit_gain=False,
        data_consistency=False,
        init="random",
        patience=3,
        holdout=0.5,
    )
    ilo(
        y,
        op,
        generator=gen,
        latent_stats=stats,
        config=config,
        rng=torch.Generator().manual_seed(4),
    )
    first, refit = passes
    rounds = len(refit.slice_steps_run)
    assert refit.slice_steps_run == first.slice_steps_run[:rounds]
    assert any(len(set(s)) > 1 for s in first.slice_steps_run[:rounds])  # slices stopped apart
