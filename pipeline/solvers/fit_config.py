"""The MRI options every latent-space solver shares (:class:`MRIFitConfig`): phase model, scale
normalisation, intensity gain and the final data-consistency step."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sgilo.pipeline.solvers.sparse_deviation import DCWaveletSetting
from sgilo.pipeline.solvers.trusted_band import DEFAULT_DC_BAND

PhaseModel = Literal["auto", "none", "from-calibration", "from-sense"]


def resolve_phase(phase: PhaseModel, channels: int, multicoil: bool = False) -> str:
    """``"auto"`` → for 1-channel generators from-sense with coil maps (``multicoil``),
    from-calibration without; none for 2-channel generators. The carriers
    (:mod:`sgilo.pipeline.solvers.calibration`) are refused for 2-channel generators, and
    from-sense without coil maps."""
    if phase == "auto":
        if channels == 2:
            phase = "none"
        else:
            phase = "from-sense" if multicoil else "from-calibration"
    if phase in ("from-calibration", "from-sense") and channels == 2:
        raise ValueError(f"phase={phase!r} is for 1-channel generators only")
    if phase == "from-sense" and not multicoil:
        raise ValueError("phase='from-sense' needs coil maps (multi-coil data)")
    return phase


class MRIFitConfig(BaseModel):
    """The MRI options every latent-space solver shares: phase model, scale normalisation,
    intensity gain and the final data-consistency step (fields of CSGM/ILO/SGILO configs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: PhaseModel = Field(
        "auto",
        description="phase of a 1-channel (magnitude) generator: 'from-calibration' "
        "(e^{iφ} of the centre-of-k-space image), 'from-sense' (e^{iφ} of the low-passed "
        "CG-SENSE image; multi-coil) or 'none'; 'auto' = from-sense for multi-coil and "
        "from-calibration for single-coil data with 1-channel generators, none for 2-channel "
        "generators (pipeline/solvers/calibration.py)",
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
        "of data and sampled fraction, chosen on training slices, or where dc_band applies the "
        "classical l1-wavelet's default; "
        "pipeline/solvers/sparse_deviation.py)",
    )
    dc_band: float = Field(
        DEFAULT_DC_BAND,
        ge=0,
        description="the model image's band the final step trusts, as a fraction b of the "
        "generator's Nyquist frequency: its k-space columns kept fully up to b, tapered to "
        "none at 3b, the rest left to the sparse deviation at the classical l1-wavelet's λ "
        "(Cartesian column masks with the sparse deviation on; 0: the whole model image; "
        "pipeline/solvers/trusted_band.py)",
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
