"""``sample``: a sample sheet of a generator, and with a latent score model the same samples after
it denoised their block-K output (:mod:`sgilo.models.score.show`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sgilo.flows.cli.parser import add_mirrored, stderr


def _populate_sample(show: argparse.ArgumentParser) -> None:
    from sgilo.models.score.show import prior_refined_samples

    show.add_argument("--generator", type=Path, required=True)
    show.add_argument("--score", type=Path, default=None, help="a score_model.pt for block K")
    show.add_argument("--block", type=int, default=None)
    add_mirrored(
        show,
        "--t",
        source=prior_refined_samples,
        field="t",
        type=float,
        help="denoiser time (VP-SDE t)",
    )
    add_mirrored(
        show,
        "--steps",
        source=prior_refined_samples,
        field="steps",
        type=int,
        help="denoising steps",
    )
    show.add_argument("--n", type=int, default=8)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", type=Path, required=True, help="PNG file")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sample``."""
    sub.add_parser(
        "sample",
        help="a sample sheet: GAN samples, and with --score the same samples after the latent "
        "score model denoised their block-K output",
        populate=_populate_sample,
    )


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from sgilo.models.score.model import ScoreCheckpointError, load_score_model
    from sgilo.models.score.show import prior_refined_samples
    from sgilo.models.stylegan2.checkpoint import CheckpointError, load_generator
    from sgilo.models.stylegan2.grid import save_grid
    from sgilo.models.stylegan2.train import network_to_image

    if (args.score is None) != (args.block is None):
        stderr("sgilo sample: --score and --block go together")
        return 2
    rng = torch.Generator().manual_seed(args.seed)
    try:
        generator, _ = load_generator(args.generator)
        if args.score is None:
            with torch.no_grad():
                z = torch.randn(args.n, generator.config.style_dim, generator=rng)
                rows = [generator(z)]
        else:
            score_model = load_score_model(args.score)
            rows = list(
                prior_refined_samples(
                    generator, score_model, args.block, args.n, args.t, args.steps, rng
                )
            )
    except (CheckpointError, ScoreCheckpointError, ValueError) as exc:
        stderr(f"sgilo sample: error: {' '.join(str(exc).split())}")
        return 2
    images = torch.cat([network_to_image(r) for r in rows]).clamp(0, 1)
    tiles = (images if images.shape[1] == 3 else images[:, 0]).numpy()  # RGB or grey tiles
    save_grid(args.out, tiles, cols=args.n)
    what = "top: GAN samples; bottom: after the score model" if len(rows) == 2 else "GAN samples"
    stderr(f"wrote {args.out} ({what})")
    return 0
