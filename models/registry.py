"""Shipped priors, found by name: ``models/weights/<name>/``.

A shipped prior is a folder holding ``generator.pt`` (the sgilo release format of
:func:`sgilo.models.stylegan2.checkpoint.save_generator`, with its Gaussianized-latent statistics)
and any number of latent score models ``score_<space>.pt`` (``score_z.pt``, ``score_block2.pt``, …;
:func:`sgilo.models.score.model.save_score_model`). How each was trained, and its validation
figures, are recorded in ``models/weights/PROVENANCE.md``.

``resolve_model("brain-t1-128")`` gives the files of a shipped prior; any other string is taken as
a path to a generator file (then no score models come with it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: where the shipped priors live (inside the installed ``models`` package)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: the prior used when a generative method is asked for without ``--model``
DEFAULT_MODEL = "brain-t1-128"


@dataclass(frozen=True)
class ModelFiles:
    """The files of one prior: a generator and the score models that go with it."""

    name: str
    generator: Path
    score_models: list[Path] = field(default_factory=list)
    shipped: bool = False


def shipped_models() -> list[str]:
    """Names of the priors in :data:`WEIGHTS_DIR` (folders with a ``generator.pt``), sorted."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "generator.pt").is_file())


def resolve_model(model: str | os.PathLike[str] | None) -> ModelFiles:
    """A shipped prior by name, a generator file by path, or a folder laid out as a shipped prior
    (``generator.pt`` and its ``score_*.pt``) by path; ``None`` means :data:`DEFAULT_MODEL`.

    Raises:
        ValueError: one line, when the name is not shipped and no such file exists.
    """
    text = DEFAULT_MODEL if model is None else os.fspath(model)
    folder = WEIGHTS_DIR / text
    if "/" not in text and os.sep not in text and (folder / "generator.pt").is_file():
        scores = sorted(folder.glob("score_*.pt"))
        return ModelFiles(text, folder / "generator.pt", scores, shipped=True)
    path = Path(text)
    if path.is_file():
        return ModelFiles(path.stem, path)
    if path.is_dir() and (path / "generator.pt").is_file():  # a prior's folder, not shipped
        return ModelFiles(path.name, path / "generator.pt", sorted(path.glob("score_*.pt")))
    shipped = ", ".join(shipped_models()) or "none"
    if model is None:
        raise ValueError(
            f"the default prior {DEFAULT_MODEL!r} is not installed (shipped priors: {shipped}); "
            "pass --model PATH to a generator.pt"
        )
    raise ValueError(
        f"{text}: no such model file and no shipped prior of that name (shipped priors: {shipped})"
    )
