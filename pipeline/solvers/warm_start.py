"""ILO's and SGILO's starting latent: random, or CSGM's fit carried into the Gaussianized w+ space.

ILO and SGILO optimise ``z`` ``(B, n_latent, D)``, the Gaussianized w+ latent
(``w = LeakyReLU_0.2(σ ⊙ z + μ)`` row by row). Their first round confines ``z`` to an ℓ1 ball
around its start, so from a random start round 0 can only reach images near a random sample of
the prior, and the later rounds refine the wrong image. ``init="csgm"`` starts them instead from
CSGM's solution (:func:`sgilo.pipeline.solvers.csgm.fit_input_latent`: ``init_restarts``
random starts,
at most ``init_steps`` Adam steps each, stopped early as ILO's rounds are, the lowest
measurement loss per slice; the restarts raced for the first ``init_race`` steps, then only each
slice's leader, :mod:`sgilo.pipeline.solvers.raced_restarts`), mapped exactly into their space:

    w = mapping(ẑ_csgm),    z_row = (LeakyReLU_5(w) − μ) / σ   on every row,

so that ``gaussianized_to_w(z_row) = w`` and the first round starts from exactly CSGM's image.
ILO's rounds then refine it within their balls: the coarse image is found by the cheap search
over the mapping's input, the detail by the intermediate layers. Defaults (2 restarts of at most
100 steps, a third of CSGM's own budget) and the choice of ``"csgm"`` over ``"random"`` were made
on training slices with SGILO (docs/GENERATIVE_TUNING.md: +1.8 dB single-coil 8×, +0.35 dB
8-coil 8×, at about 8 s per slice on 2 threads).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field

from sgilo.models.stylegan2.generator import Generator
from sgilo.pipeline.solvers.base import Progress
from sgilo.pipeline.solvers.compiled import CompileConfig
from sgilo.pipeline.solvers.csgm import CSGMConfig, InputLatentFit
from sgilo.pipeline.solvers.host_sync import HostSyncConfig
from sgilo.pipeline.solvers.problem import ImageProblem, Problem
from sgilo.pipeline.solvers.raced_restarts import fit_restarts, races


class WarmStartConfig(HostSyncConfig, CompileConfig):
    """The start of ILO's/SGILO's rounds (fields of their configs; ``host_sync_every`` and
    ``compile`` are the rounds' and the start's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    init: Literal["random", "csgm"] = Field(
        "csgm",
        description="initial z: 'random' (N(0, I) per row) or 'csgm' (CSGM's fit, mapped into "
        "the Gaussianized w+ space; docs/GENERATIVE_TUNING.md)",
    )
    init_steps: int = Field(
        100, ge=0, description="at most this many Adam steps per restart of the CSGM start"
    )
    init_restarts: int = Field(2, ge=1, description="random restarts of the CSGM start")
    init_early_stop: bool = Field(
        True,
        description="end a restart of the CSGM start once no slice's measurement loss improved "
        "by a relative 1e-3 for `init_patience` steps",
    )
    init_patience: int = Field(20, ge=1, description="patience of the CSGM start's early stop")
    init_race: int = Field(
        50,
        ge=0,
        description="run the CSGM start's restarts side by side for this many steps, then only "
        "each slice's leading one (pipeline/solvers/raced_restarts.py); 0: one after the other",
    )

    def races(self) -> bool:
        """Whether the CSGM start races its restarts (:attr:`init_race`)."""
        return self.init == "csgm" and races(self.init_restarts, self.init_race, self.init_steps)

    def init_steps_total(self) -> int:
        """Adam steps the start may cost, a racing step counting one per restart (0 for a random
        start; fewer when it stops early)."""
        if self.init != "csgm":
            return 0
        if self.races():
            return self.init_race * self.init_restarts + self.init_steps - self.init_race
        return self.init_steps * self.init_restarts


def gaussianize(w: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`sgilo.models.stylegan2.checkpoint.gaussianized_to_w`:
    ``(LeakyReLU_5(w) − μ) / σ``, ``w`` ``(..., D)``."""
    return (F.leaky_relu(w, 5.0) - mu) / sigma


def csgm_start(
    problem: Problem | ImageProblem,
    generator: Generator,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    config: WarmStartConfig,
    *,
    rng: torch.Generator | None = None,
    callback: Progress | None = None,
    label: str = "start",
) -> tuple[torch.Tensor, InputLatentFit]:
    """CSGM's fit of ``problem`` (the latent weight and learning-rate schedule of
    :class:`~sgilo.pipeline.solvers.csgm.CSGMConfig`'s defaults; the restarts raced when
    :meth:`WarmStartConfig.races`) and its Gaussianized w+ latent ``(B, n_latent, D)``, every
    row the same."""
    csgm_config = CSGMConfig(
        steps=config.init_steps,
        restarts=config.init_restarts,
        host_sync_every=config.host_sync_every,
        compile=config.compile,
    )
    patience = config.init_patience if config.init_early_stop else None
    fit_options = {"rng": rng, "callback": callback, "label": label, "patience": patience}
    fit = fit_restarts(problem, generator, csgm_config, config.init_race, **fit_options)
    with torch.no_grad():
        z = gaussianize(generator.mapping(fit.z), mu, sigma)
    return z[:, None, :].expand(-1, generator.n_latent, -1).contiguous(), fit
