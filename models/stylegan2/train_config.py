"""The configuration of a StyleGAN-2 training run, and which of its changes a resume allows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sgilo.models.stylegan2.augment import AugmentConfig
from sgilo.models.stylegan2.discriminator import DiscriminatorConfig
from sgilo.models.stylegan2.generator import GeneratorConfig

#: config fields that may change on resume: they do not change the training trajectory
BOOKKEEPING_FIELDS = ("checkpoint_every", "sample_every", "log_every", "progress_every")


class TrainConfig(BaseModel):
    """Everything that determines a training run (JSON-able via ``model_dump()``).

    ``discriminator`` defaults to ``DiscriminatorConfig.matching(generator)``. The generator's
    ``image_channels`` is 1 (magnitude), 2 (real, imaginary) or 3 (RGB); ``phase_augmentation``
    requires 2.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator: GeneratorConfig
    discriminator: DiscriminatorConfig
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.002, gt=0)
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float | None = Field(None, ge=0, description="None: 10·(R/1024)²")
    r1_every: int = Field(16, ge=1)
    mixing_prob: float = Field(0.9, ge=0, le=1)
    ema_kimg: float = Field(10.0, ge=0, description="EMA half-life in thousands of images")
    ema_rampup: float | None = Field(0.05, gt=0)
    total_steps: int = Field(10_000, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    progress_every: int = Field(10, ge=1)
    sample_count: int = Field(16, ge=1)
    seed: int = Field(0, ge=0)
    phase_augmentation: bool = False
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="before")
    @classmethod
    def _derive_discriminator(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("discriminator") is None and "generator" in data:
            try:
                g = GeneratorConfig.model_validate(data["generator"])
            except ValidationError:
                return data  # reported by the field validation
            data = {**data, "discriminator": DiscriminatorConfig.matching(g)}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        g, d = self.generator, self.discriminator
        if g.image_channels not in (1, 2, 3):
            raise ValueError(
                "generator.image_channels must be 1 (magnitude), 2 (real, imag) or 3 (RGB)"
            )
        if (d.resolution, d.image_channels) != (g.resolution, g.image_channels):
            raise ValueError("discriminator resolution/image_channels differ from the generator's")
        if self.phase_augmentation and g.image_channels != 2:
            raise ValueError("phase_augmentation needs generator.image_channels == 2")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        return self

    @property
    def image_channels(self) -> int:
        return self.generator.image_channels

    @property
    def effective_r1_gamma(self) -> float:
        """γ of the R1 penalty: ``r1_gamma`` or 10·(R/1024)²."""
        if self.r1_gamma is not None:
            return self.r1_gamma
        return 10.0 * (self.generator.resolution / 1024) ** 2

    @property
    def total_kimg(self) -> float:
        return self.total_steps * self.batch_size / 1000


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def config_differences(
    saved: dict[str, Any], wanted: TrainConfig, new_batch: bool = False
) -> list[str]:
    """Dotted names of the fields whose change forbids resuming (see :func:`train_gan`);
    ``batch_size`` may change when ``new_batch``."""
    old, new = _flatten(saved), _flatten(wanted.model_dump())
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k, None) != new.get(k, None))
    allowed = set(BOOKKEEPING_FIELDS) | ({"batch_size"} if new_batch else set())
    if isinstance(old.get("total_steps"), int) and new["total_steps"] >= old["total_steps"]:
        allowed.add("total_steps")
    return [k for k in differing if k not in allowed]
