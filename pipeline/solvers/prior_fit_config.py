"""The prior-fit options of the generative methods (fields of the CSGM, ILO and SGILO configs).

They are read by :mod:`sgilo.pipeline.prior_fit`, which wraps the solver: the solvers themselves
ignore them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PriorFitConfig(BaseModel):
    """Whether and how a generative MRI reconstruction measures how well its prior predicts
    k-space it did not fit, against the classical methods."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prior_fit: bool = Field(
        True,
        description="hold out a fraction of the measured outer k-space columns from the latent "
        "fit and report how well the prior predicts them against the classical methods "
        "(prior_fit_ratio in run.json; the final data-consistency step still uses every "
        "sample; pipeline/prior_fit.py). False: the papers' fit on all samples, no report",
    )
    prior_fit_fraction: float = Field(
        0.1, gt=0, lt=1, description="fraction of the measured outer columns held out"
    )
