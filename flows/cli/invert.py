"""``invert-training``: ILO inversions of training images, the block-K latents that
``train-score --latents`` trains on (:mod:`sgilo.pipeline.inversions`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sgilo.flows.cli.parser import add_device, add_mirrored, cuda_missing, stderr


def _populate_invert_training(inv: argparse.ArgumentParser) -> None:
    from sgilo.pipeline.inversions import DEFAULT_STEPS, invert_images

    shown = ",".join(str(s) for s in DEFAULT_STEPS[:4])
    inv.add_argument("--model", required=True, help="a shipped prior name or a generator file")
    inv.add_argument("--data", action="append", required=True, metavar="SRC")
    inv.add_argument("--space", type=int, required=True, help="the block index K")
    inv.add_argument("--out", type=Path, required=True, help="the latents file to write (.pt)")
    inv.add_argument("--limit", type=int, default=None, help="at most N images, evenly spaced")
    inv.add_argument(
        "--steps",
        default=None,
        help="Adam steps per ILO round, comma-separated, at least K+2 of them "
        f"(default {shown},...)",
    )
    add_mirrored(
        inv, "--batch", source=invert_images, field="batch", type=int, help="images fitted together"
    )
    inv.add_argument(
        "--include-skip",
        action="store_true",
        help="append the skip image to the features as extra channels",
    )
    add_mirrored(inv, "--seed", source=invert_images, field="seed", type=int)
    add_device(inv)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``invert-training``."""
    sub.add_parser(
        "invert-training",
        help="ILO inversions of training images: block-K latents for `train-score --latents`",
        description="Fit each training image with ILO (a denoising problem on the generator's "
        "grid) and save the output of synthesis block K at the end of the round that optimises "
        "it. --data as for train-gan ('mni-train', folders or files; 'natural-train' for an "
        "RGB prior). Progress goes to stderr.",
        populate=_populate_invert_training,
    )


def cmd_invert_training(args: argparse.Namespace) -> int:
    import time

    from sgilo.pipeline.data.training import load_training_images
    from sgilo.pipeline.inversions import (
        DEFAULT_STEPS,
        evenly_spaced,
        inversion_rounds,
        invert_images,
        save_inversions,
    )
    from sgilo.pipeline.methods import load_prior
    from sgilo.pipeline.provenance import sha256_file

    if cuda_missing(args.device):
        stderr("sgilo invert-training: --device cuda requested but no CUDA device is available")
        return 2
    try:
        steps = None
        if args.steps is not None:
            try:
                steps = tuple(int(s) for s in args.steps.replace("-", ",").split(","))
            except ValueError:
                raise ValueError(
                    f"--steps must be integers, e.g. 100,50,50, got {args.steps!r}"
                ) from None
        if args.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {args.batch}")
        prior = load_prior(args.model, device=args.device)
        config = prior.generator.config
        channels = 3 if int(config.image_channels) == 3 else 1
        images, _ = load_training_images(args.data, int(config.resolution), channels=channels)
        images = images[evenly_spaced(len(images), args.limit)]
        stderr(f"inverting {len(images)} images at block {args.space} with {prior.path}")
        t0 = time.perf_counter()

        def progress(done: int, total: int, message: str) -> None:
            stderr(f"invert-training: {message}")

        latents = invert_images(
            images,
            prior,
            args.space,
            batch=args.batch,
            steps=steps,
            include_skip=args.include_skip,
            seed=args.seed,
            progress=progress,
        )
        seconds = time.perf_counter() - t0
        rounds = inversion_rounds(prior.generator, args.space)
        info = {
            "space": args.space,
            "generator_sha256": sha256_file(prior.path),
            "sources": [str(s) for s in args.data],
            "limit": args.limit,
            "steps": list((steps or DEFAULT_STEPS)[:rounds]),
            "include_skip": bool(args.include_skip),
            "seed": args.seed,
            "seconds_per_image": round(seconds / len(images), 3),
        }
        save_inversions(args.out, latents, info)
    except ValueError as exc:
        stderr(f"sgilo invert-training: error: {' '.join(str(exc).split())}")
        return 2
    per = seconds / len(images)
    stderr(f"done: {tuple(latents.shape)} latents, {per:.1f} s/image; {args.out}")
    return 0
