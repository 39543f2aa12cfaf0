"""The MRI options every latent-space solver shares (:class:`MRIFitConfig`): phase model, scale
normalisation, intensity gain and the final data-consistency step."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sgilo.pipeline.solvers.sparse_deviation import DCWaveletSetting

PhaseModel = Literal["auto", "none", "from-calibration"]


def resolve_phase(phase: PhaseModel, channels: int) -> str:
    """``"auto"`` → from-calibration (1 channel) / none (2 channels); from-calibration is refused
    for 2-channel generators."""
    if phase == "auto":
        phase = "from-calibration" if channels == 1 else "none"
    if phase == "from-calibration" and channels == 2:
        raise ValueError("phase='from-calibration' is for 1-channel generators only")
    return phase


class MRIFitConfig(BaseModel):
    """The MRI options every latent-space solver shares: phase model, scale normalisation,
    intensity gain and the final data-consistency step (fields of CSGM/ILO/SGILO configs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: PhaseModel = Field(
        "auto",
        description="phase of a 1-channel (magnitude) generator: 'from-calibration' "
        "(e^{iφ} of the centre-of-k-space image) or 'none'; 'auto' = from-calibration for "
        "1-channel and none for 2-channel generators",
    )
    normalize: bool = Field(True, description="divide y by the data scale s, multiply back")
    fit_gain: bool = Field(
        True,
        description="scale the model image by a per-slice gain a ∈ [0.5, 2] fitted in closed "
        "form (corrects s, which undershoots the image's scale at high acceleration)",
    )
    data_consistency: bool = Field(True, description="final data-consistency step")
    dc_wavelet: DCWaveletSetting = Field(
        "auto",
        description="relative λ of the final step's sparse deviation from the model image, "
        "x = argmin ½‖Ax − y‖² + λ‖Ψ(x − x̂)‖₁ (0: exact data consistency; 'auto': per kind "
        "of data and sampled fraction, chosen on training slices; "
        "pipeline/solvers/sparse_deviation.py)",
    )
    dc_iterations: int = Field(
        50, ge=1, description="CG steps of multi-coil data consistency (about converged at μ)"
    )
    dc_weight: float = Field(
        1e-3,
        gt=0,
        description="μ of the multi-coil data consistency (chosen on training slices, "
        "docs/GENERATIVE_TUNING.md)",
    )
