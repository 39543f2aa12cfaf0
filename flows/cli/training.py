"""Training commands: ``train-gan`` (a StyleGAN-2 prior), ``train-score`` (a latent score model),
and ``invert-training`` (ILO latents of training images for ``train-score --latents``). Their
defaults come from the training configs and, for the generator's
architecture, from the shipped prior's preset (:mod:`sgilo.models.stylegan2.presets`)."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sgilo.flows.cli.parser import add_device, add_mirrored, cuda_missing, stderr
from sgilo.pipeline.interrupt import Interrupted, set_resume_hint, stop_between_steps

if TYPE_CHECKING:
    from sgilo.models.data_parallel import DataParallel

#: the end of the one line when a signal ends a training command (before or after its loop)
RESUME_TRAINING = "the same command with --resume continues it"


def _populate_train_gan(gan: argparse.ArgumentParser) -> None:
    from sgilo.models.stylegan2.presets import PRESETS, TRAIN_GAN_PRESET
    from sgilo.models.stylegan2.train import TrainConfig

    arch = PRESETS[TRAIN_GAN_PRESET]
    gan.add_argument("--data", action="append", required=True, metavar="SRC")
    gan.add_argument("--out", type=Path, required=True)
    gan.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    gan.add_argument(
        "--new-batch",
        action="store_true",
        help="with --resume: continue at --batch although the checkpoint trained at another "
        "(a GPU continuing a CPU run); a valid continuation, not an exact one",
    )
    add_mirrored(gan, "--resolution", source=arch, field="resolution", type=int, help="output side")
    add_mirrored(
        gan,
        "--channels",
        "--image-channels",
        dest="image_channels",
        source=arch,
        field="image_channels",
        type=int,
        choices=(1, 2, 3),
        help="1: magnitude; 2: real/imaginary with phase augmentation; 3: RGB (natural images)",
    )
    add_mirrored(
        gan,
        "--style-dim",
        source=arch,
        field="style_dim",
        type=int,
        help="width of the style vectors w",
    )
    add_mirrored(
        gan, "--channel-max", source=arch, field="channel_max", type=int, help="most channels"
    )
    add_mirrored(
        gan,
        "--channel-base",
        source=arch,
        field="channel_base",
        type=int,
        help="channels at side r: clamp(2·base/r, channel-min, channel-max)",
    )
    add_mirrored(
        gan,
        "--channel-min",
        source=arch,
        field="channel_min",
        type=int,
        help="fewest channels at any side (the high-resolution blocks; the main cost on a CPU)",
    )
    add_mirrored(gan, "--batch", source=TrainConfig, field="batch_size", type=int)
    add_mirrored(gan, "--steps", source=TrainConfig, field="total_steps", type=int)
    add_mirrored(gan, "--checkpoint-every", source=TrainConfig, field="checkpoint_every", type=int)
    from sgilo.flows.cli.parser import positive_float

    gan.add_argument(
        "--max-minutes",
        type=positive_float,
        default=None,
        help="a time budget: stop (with a checkpoint) after this many minutes; --resume goes on",
    )
    from sgilo.pipeline.data.training import REAL_FRACTION

    gan.add_argument(
        "--real-fraction",
        type=float,
        default=None,
        metavar="F",
        help="with synth-brain and other --data: the probability, in [0, 1], that an image of a "
        f"batch is a loaded one rather than a synthetic one (default {REAL_FRACTION})",
    )
    add_mirrored(gan, "--seed", source=TrainConfig, field="seed", type=int)
    add_device(gan)
    from sgilo.models.stylegan2.train_compile import COMPILE_MODES

    gan.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help="torch.compile the networks (MODE default; reduce-overhead adds CUDA graphs): "
        "faster GPU steps after tens of seconds of compiling, results equal up to rounding",
    )


def _populate_train_score(score: argparse.ArgumentParser) -> None:
    from sgilo.models.score.network import ConvScoreNetConfig, MLPScoreNetConfig
    from sgilo.models.score.train import ScoreTrainConfig

    conv, mlp = ConvScoreNetConfig.model_fields, MLPScoreNetConfig.model_fields
    score.add_argument("--generator", type=Path, required=True, help="a generator.pt")
    score.add_argument("--space", required=True, help="'z' or a block index")
    score.add_argument("--out", type=Path, required=True)
    score.add_argument("--resume", action="store_true")
    add_mirrored(score, "--steps", source=ScoreTrainConfig, field="steps", type=int)
    add_mirrored(score, "--batch", source=ScoreTrainConfig, field="batch", type=int)
    for name in ("hidden", "depth"):
        what = "network width" if name == "hidden" else "network depth (residual blocks)"
        block, z = conv[name].default, mlp[name].default
        shown = f"{block}" if block == z else f"{block} for a block space, {z} for z"
        score.add_argument(f"--{name}", type=int, default=None, help=f"{what} (default {shown})")
    add_mirrored(score, "--seed", source=ScoreTrainConfig, field="seed", type=int)
    add_device(score)
    score.add_argument(
        "--latents",
        type=Path,
        default=None,
        metavar="FILE",
        help="train on these block-K latents (from `sgilo invert-training`) instead of GAN "
        "samples; the file's block and shape must match --space and the generator",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-gan`` and ``train-score``."""
    sub.add_parser(
        "train-gan",
        help="train a StyleGAN-2 prior on MNI training slices and/or folders of images",
        description="Train a StyleGAN-2 on magnitude images. --data takes 'mni-train' (the "
        "bundled MNI152 training slices) or a folder of PNG/JPEG, NIfTI or DICOM files; repeat "
        "it to mix sources. 'synth-brain' generates varied brain images on the fly "
        "from the template's tissue maps (orientations, deformations, contrasts, head, bias, "
        "resolution, noise; docs/DATA.md); with other sources beside it, each image is a loaded "
        "one with probability --real-fraction. With --channels 3 it trains an RGB prior on "
        "'natural-train' (patches of scikit-image's bundled photographs) and/or folders of "
        "PNG/JPEG. The architecture defaults to the shipped brain-t1-128 prior's "
        "(models/stylegan2/presets.py). Checkpoints go to --out every --checkpoint-every steps; "
        "run the same command with --resume (and a larger --steps if you like) to continue "
        "exactly. Under torchrun it trains data-parallel, --batch being the global batch "
        "(docs/SCALING.md).",
        populate=_populate_train_gan,
    )
    sub.add_parser(
        "train-score",
        help="train a latent score model on a generator's latents (z or a block output)",
        description="Train a VP-SDE score model on latents of GAN samples: 'z' (the w+ rows' "
        "Gaussianized latents) or the output of synthesis block K; with --latents, on ILO "
        "inversions of training images (`sgilo invert-training`). Resumable with --resume; "
        "data-parallel under torchrun (docs/SCALING.md).",
        populate=_populate_train_score,
    )


def _train_gan_data(args: argparse.Namespace, channels: int) -> tuple:
    """train-gan's images: a loaded set (:func:`sgilo.pipeline.data.training.
    load_training_images`), or with ``--data synth-brain`` (1 or 2 channels) the on-the-fly
    sampler :class:`sgilo.pipeline.data.synth_brain.SynthBrainSampler` on ``--device``, mixed with
    the other sources' images at ``--real-fraction``
    (:class:`sgilo.pipeline.data.synth_mix.MixedSampler`) when there are any. The options are
    checked before anything is loaded."""
    from sgilo.pipeline.data.training import (
        NATURAL_TRAIN,
        REAL_FRACTION,
        SYNTH_BRAIN,
        load_training_images,
    )

    fraction, others = args.real_fraction, [s for s in args.data if s != SYNTH_BRAIN]
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--real-fraction: expected a value in [0, 1], received {fraction}")
    if SYNTH_BRAIN not in args.data:
        if fraction is not None:
            raise ValueError(f"--real-fraction mixes loaded images with {SYNTH_BRAIN}: add it")
        return load_training_images(args.data, args.resolution, channels=channels)
    if args.data.count(SYNTH_BRAIN) > 1:
        raise ValueError(f"{SYNTH_BRAIN}: listed twice")
    if channels != 1 or NATURAL_TRAIN in others:
        raise ValueError(f"{SYNTH_BRAIN}: magnitudes, it needs --channels 1 or 2 and grey images")
    if fraction is not None and not others:
        raise ValueError(f"--real-fraction: no loaded source to mix with {SYNTH_BRAIN}")
    from sgilo.pipeline.data.synth_brain import SynthBrainSampler

    info = {"images": "on the fly", "files": 0, "skipped": 0, "files_by_type": {}}
    if not others:
        sampler = SynthBrainSampler(args.resolution, split="train", device=args.device)
        return sampler, {"total": None, "sources": {SYNTH_BRAIN: info}, "skipped": []}
    import torch

    from sgilo.pipeline.data.synth_mix import MixedSampler

    fraction = REAL_FRACTION if fraction is None else fraction
    images, summary = load_training_images(others, args.resolution, channels=1)
    sampler = SynthBrainSampler(args.resolution, split="train", device=args.device)
    mixed = MixedSampler(sampler, torch.from_numpy(images), fraction)
    sources = {SYNTH_BRAIN: {**info, "share": 1 - fraction}}
    for name, loaded in summary["sources"].items():  # rows are drawn from the pooled images
        sources[name] = {**loaded, "share": fraction * loaded["images"] / summary["total"]}
    return mixed, {"total": None, "sources": sources, "skipped": summary["skipped"]}


def _data_parallel(args: argparse.Namespace, command: str, body: Callable[..., int]) -> int:
    """``body(args, parallel, device)`` after the CUDA check, in torchrun's process group when
    torchrun started this process (``"cuda"`` is then this rank's GPU), alone otherwise."""
    if cuda_missing(args.device):
        stderr(f"sgilo {command}: --device cuda requested but no CUDA device is available")
        return 2
    from sgilo.models.data_parallel import joined

    with joined(args.device) as (parallel, device):
        return body(args, parallel, device)


def cmd_train_gan(args: argparse.Namespace) -> int:
    set_resume_hint(RESUME_TRAINING)
    if args.new_batch and not args.resume:
        stderr("sgilo train-gan: error: --new-batch continues a run: it needs --resume")
        return 2
    return _data_parallel(args, "train-gan", _train_gan)


def _train_gan(args: argparse.Namespace, parallel: DataParallel, device: str) -> int:
    import torch

    from sgilo.models.stylegan2.generator import GeneratorConfig
    from sgilo.models.stylegan2.train import TrainConfig, train_gan

    try:
        channels = 3 if args.image_channels == 3 else 1
        images, summary = _train_gan_data(args, channels)
        generator = GeneratorConfig(
            resolution=args.resolution,
            style_dim=args.style_dim,
            image_channels=args.image_channels,
            channel_base=args.channel_base,
            channel_max=args.channel_max,
            channel_min=min(args.channel_min, args.channel_max),
        )
        config = TrainConfig(
            generator=generator,
            batch_size=args.batch,
            total_steps=args.steps,
            checkpoint_every=args.checkpoint_every,
            sample_every=args.checkpoint_every,
            seed=args.seed,
            phase_augmentation=args.image_channels == 2,
        )
    except ValueError as exc:
        stderr(f"sgilo train-gan: error: {' '.join(str(exc).split())}")
        return 2
    for source, info in summary["sources"].items() if parallel.writes else ():
        count = info["images"]
        share = f", {info['share']:.0%} of each batch" if "share" in info else ""
        stderr(f"data: {source}: {count}{' images' if isinstance(count, int) else ''}{share}")
    for skipped in summary["skipped"] if parallel.writes else ():
        stderr(f"data: skipped {skipped['path']}: {skipped['reason']}")

    def progress(p: dict) -> None:
        losses = " ".join(f"{k} {v:.3f}" for k, v in p["losses"].items() if v is not None)
        stderr(
            f"step {p['step']}/{p['total']}  kimg {p['kimg']:.2f}  {losses}  "
            f"{p['images_per_s']:.1f} img/s"
        )

    try:
        # SIGTERM / Ctrl-C: the step ends, the checkpoint is written and the generator finished,
        # then the one line
        with stop_between_steps("this step, writing a checkpoint") as stop:
            result = train_gan(
                config,
                images if callable(images) else torch.from_numpy(images),
                args.out,
                resume=args.resume,
                progress=progress,
                device=device,
                max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                parallel=parallel,
                compile_mode=args.compile,
                new_batch=args.new_batch,
                stop=stop,
            )
            if parallel.writes:  # rank 0 finishes the generator file
                _add_latent_stats(args.out / "generator.pt", args.seed)
            if result.stopped:  # a signal here or in another data-parallel process
                set_resume_hint(
                    f"checkpoint written at step {result.step} ({result.images_seen} images "
                    f"seen); {RESUME_TRAINING}"
                )
                if not stop():  # this process got none: it ends as the others do
                    raise Interrupted(signal.SIGTERM)
    except (FileExistsError, ValueError) as exc:
        stderr(f"sgilo train-gan: error: {' '.join(str(exc).split())}")
        return 2
    if parallel.writes:
        stderr(f"done: step {result.step}, {result.images_seen} images seen; {args.out}")
    return 0


def _add_latent_stats(path: Path, seed: int) -> None:
    """Store the Gaussianized-latent statistics (docs/ALGORITHMS.md §3) in the generator file,
    fitted once per generator."""
    import torch

    from sgilo.models.stylegan2.checkpoint import fit_latent_stats, load_generator, save_generator

    g_ema, info = load_generator(path)
    stats = fit_latent_stats(g_ema, n=100_000, generator_rng=torch.Generator().manual_seed(seed))
    save_generator(path, g_ema, latent_stats=stats, extra=info.extra)


def cmd_train_score(args: argparse.Namespace) -> int:
    set_resume_hint(RESUME_TRAINING)
    return _data_parallel(args, "train-score", _train_score)


def _train_score(args: argparse.Namespace, parallel: DataParallel, device: str) -> int:
    import torch

    from sgilo.models.score.network import default_network_config
    from sgilo.models.score.sources import gan_latent_source
    from sgilo.models.score.train import ScoreTrainConfig, train_score
    from sgilo.models.stylegan2.checkpoint import CheckpointError, load_generator

    try:
        generator, info = load_generator(args.generator, device=device)
        space: str | int = "z" if args.space == "z" else int(args.space)
        if args.latents is not None:
            from sgilo.models.score.sources import TensorSource
            from sgilo.pipeline.inversions import check_inversions, load_inversions
            from sgilo.pipeline.provenance import sha256_file

            latents, record = load_inversions(args.latents)
            check_inversions(
                latents, record, generator, space, sha256_file(args.generator), args.latents
            )
            source = TensorSource(latents.to(device))
            if parallel.writes:
                stderr(f"training on {latents.shape[0]} inverted latents from {args.latents}")
        else:
            source = gan_latent_source(generator, space, latent_stats=info.latent_stats)
        sample = source(2, torch.Generator().manual_seed(0))
        config = ScoreTrainConfig(
            network=default_network_config(
                tuple(sample.shape[1:]),
                **{k: v for k, v in (("hidden", args.hidden), ("depth", args.depth)) if v},
            ),
            space=f"block{space}" if space != "z" else "z",
            batch=args.batch,
            steps=args.steps,
            seed=args.seed,
        )
    except (CheckpointError, ValueError) as exc:
        stderr(f"sgilo train-score: error: {' '.join(str(exc).split())}")
        return 2

    def progress(record: dict) -> None:
        stderr(
            " ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
            )
        )

    try:
        with stop_between_steps("this step, writing the training state") as stop:
            train_score(
                config,
                source,
                args.out,
                resume=args.resume,
                progress=progress,
                device=device,
                parallel=parallel,
                stop=stop,
            )
            if stop():
                set_resume_hint(f"training state written to {args.out}; {RESUME_TRAINING}")
    except (FileExistsError, ValueError) as exc:
        stderr(f"sgilo train-score: error: {' '.join(str(exc).split())}")
        return 2
    if parallel.writes:
        stderr(f"done: {args.out / 'score_model.pt'}")
    return 0
