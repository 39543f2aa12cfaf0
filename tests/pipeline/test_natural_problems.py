"""CSGM, ILO and SGILO on the papers' natural-image operators (real images, real measurements):
a known answer with a generator linear in z for every operator, the tiny StyleGAN-2 through the
rounds solvers, and the checks that keep MRI and natural-image inputs apart."""

from __future__ import annotations

import types

import pytest
import torch

from sgilo.models.score.model import ScoreModel
from sgilo.models.score.network import MLPScoreNetConfig, build_network
from sgilo.models.stylegan2.checkpoint import fit_latent_stats
from sgilo.models.stylegan2.generator import Generator, GeneratorConfig
from sgilo.operators.base import Identity
from sgilo.operators.image import (
    Colorization,
    GaussianCompressedSensing,
    Inpainting,
    PartialCirculant,
    SuperResolution,
)
from sgilo.pipeline.methods import Prior, solve
from sgilo.pipeline.solvers.csgm import CSGMConfig, csgm
from sgilo.pipeline.solvers.problem import ImageProblem, prepare_problem

R = 8
D = 6


class LinearGenerator(torch.nn.Module):
    """``G(z) = reshape(M z)`` (row 0 of w+), ``mapping = identity``."""

    n_latent = 4

    def __init__(self, channels: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        n = channels * R * R
        self.register_buffer("M", torch.randn(n, D, generator=g, dtype=torch.float64) * 0.3)
        self.config = types.SimpleNamespace(resolution=R, image_channels=channels)

    @property
    def style_dim(self) -> int:
        return D

    def mapping(self, z):
        return z

    def synthesize(self, ws, noises=None):
        return (ws[:, 0] @ self.M.T).reshape(-1, self.config.image_channels, R, R)


def _operators(channels: int) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    shape = (channels, R, R)
    ops = {
        "denoising": Identity(shape),
        "inpainting": Inpainting.random_pixels(shape, 0.5, g, dtype=torch.float64),
        "super-resolution": SuperResolution(shape, 2, dtype=torch.float64),
        "gaussian-cs": GaussianCompressedSensing(shape, 3 * D, g, dtype=torch.float64),
        "partial-circulant": PartialCirculant(shape, 3 * D, g, dtype=torch.float64),
    }
    if channels == 3:
        ops["colorization"] = Colorization(shape, dtype=torch.float64)
    return ops


def _truth(gen: LinearGenerator, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A latent ``z*`` and its image ``(G(z*) + 1)/2``, real ``(B, C, R, R)``."""
    z = torch.randn(batch, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = z * 0.5
    g = gen.synthesize(z[:, None].expand(-1, gen.n_latent, -1))
    return z, (g + 1) / 2


@pytest.mark.parametrize("channels", [1, 3])
def test_csgm_recovers_the_known_answer_for_every_natural_operator(channels):
    gen = LinearGenerator(channels=channels)
    _, x = _truth(gen)
    config = CSGMConfig(steps=600, latent_weight=0.0, restarts=1)
    for name, op in _operators(channels).items():
        assert op.kind == "image", name
        res = csgm(op.A(x), op, generator=gen, config=config, rng=torch.Generator().manual_seed(1))
        assert res.image.shape == x.shape and res.image.dtype == torch.float64, name
        err = float((res.image - x).norm() / x.norm())
        assert err < 1e-3, (name, err)
        assert res.diagnostics.phase == "none"
        assert res.diagnostics.data_scale == [1.0, 1.0]


def test_the_problem_uses_y_as_is_and_counts_every_measurement():
    gen = LinearGenerator(channels=3)
    _, x = _truth(gen)
    op = _operators(3)["super-resolution"]
    y = op.A(x) * 7.0  # no scale normalisation: a brighter y asks for a brighter image
    problem = prepare_problem(y, op, gen, phase="auto", normalize=True, fit_gain=True)
    assert isinstance(problem, ImageProblem)
    assert torch.equal(problem.y_normalized, y)
    assert problem.m.tolist() == [3 * 4 * 4] * 2
    g = torch.zeros(2, 3, R, R, dtype=torch.float64)
    assert torch.equal(problem.image(g), torch.full_like(g, 0.5))
    want = (op.A(torch.full_like(g, 0.5)) - y).pow(2).sum(dim=(1, 2, 3)) / 48
    assert torch.allclose(problem.measurement_loss(problem.image(g)), want)


def test_mismatched_inputs_are_refused():
    gen = LinearGenerator(channels=3)
    _, x = _truth(gen)
    op = _operators(3)["inpainting"]
    with pytest.raises(ValueError, match="must be real"):
        csgm(op.A(x).to(torch.complex128), op, generator=gen)
    with pytest.raises(ValueError, match="the generator makes"):
        grey = Identity((1, R, R))
        csgm(torch.zeros(1, 1, R, R, dtype=torch.float64), grey, generator=gen)
    with pytest.raises(ValueError, match="the generator makes"):
        big = Identity((3, 2 * R, 2 * R))
        csgm(torch.zeros(1, 3, 2 * R, 2 * R, dtype=torch.float64), big, generator=gen)
    assert Identity((R, R), complex_data=True).kind != "image"


def _gaussian_model(shape) -> ScoreModel:
    """An untrained score model (zero network + Gaussian skip): exactly N(0, I) on ``shape``."""
    net = MLPScoreNetConfig(
        n_rows=shape[0], dim=shape[1], hidden=8, depth=1, row_hidden=4, time_dim=4
    )
    return ScoreModel(build_network(net)).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def rgb_prior() -> Prior:
    torch.manual_seed(0)
    cfg = GeneratorConfig(
        resolution=16, style_dim=16, n_mlp=2, image_channels=3, channel_base=64, channel_max=16
    )
    gen = Generator(cfg).eval()
    stats = fit_latent_stats(gen, n=500, batch=500, generator_rng=torch.Generator().manual_seed(1))
    scores = {"z": _gaussian_model((gen.n_latent, gen.style_dim))}
    return Prior(gen, stats, path=None, score_models=scores)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["csgm", "ilo", "sgilo"])
def test_generative_methods_fit_an_rgb_inpainting_problem(rgb_prior, method):
    gen = rgb_prior.generator
    with torch.no_grad():
        z = torch.randn(2, gen.style_dim, generator=torch.Generator().manual_seed(5))
        x = ((gen(z) + 1) / 2).clamp(0, 1)
    op = Inpainting.random_pixels((3, 16, 16), 0.5, torch.Generator().manual_seed(2))
    y = op.A(x)
    options = {"csgm": {"steps": 30, "restarts": 1}}.get(method, {"steps": (15, 15)})
    res = solve(y, op, method, prior=rgb_prior, samples=2, seed=0, solver_options=options)
    assert res.image.shape == (2, 3, 16, 16) and not torch.is_complex(res.image)
    assert res.history[-1] < res.history[0]
    # the returned image is the fitted one (no rescaling or DC step): its residual ‖Ax − y‖²/m
    # (m = every pixel of the masked image) is the solver's chosen loss, below the first step's
    images = res.samples if method == "sgilo" else res.image[None]  # (K, B, 3, 16, 16)
    fit = (op.A(images.flatten(0, 1)) - y.repeat(len(images), 1, 1, 1)).pow(2)
    fit = fit.mean(dim=(1, 2, 3)).reshape(len(images), -1)
    chosen = torch.tensor(res.diagnostics.measurement_losses, dtype=fit.dtype)
    assert torch.allclose(fit, chosen.reshape(fit.shape), rtol=1e-4)
    assert float(fit.mean()) < res.history[0]
    if method == "sgilo":
        assert res.samples.shape == (2, 2, 3, 16, 16)
        assert torch.allclose(res.std, res.samples.std(dim=0, correction=0))
