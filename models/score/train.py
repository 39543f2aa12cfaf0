"""Training a latent score model by denoising score matching (ε-prediction), resumable bit for bit.

Loss (per step, batch x_0 from the source, standardized to u_0 = (x_0 − shift)/scale):

    t ~ U[t_min, 1],  ε ~ N(0, I),  u_t = m(t)·u_0 + s(t)·ε,   L = mean ‖ε̂(u_t, t) − ε‖²

with ε̂ = ScoreModel.eps_normalized (including the Gaussian skip s(t)·u when configured).

Adam (constant lr after a linear warm-up, so extending ``steps`` does not change the path
already taken), gradient-norm clipping, and an EMA of the weights (decay min(ema, (1+n)/(10+n))
at update n; the saved model uses the EMA weights when ``ema_decay`` > 0).

Normalization constants are estimated once, before step 0: from the whole dataset when the
source is a tensor (or a :class:`~sgilo.models.score.sources.TensorSource`), else from
``normalization_samples`` draws with a generator seeded by ``seed + 1`` (independent of the
training stream). They live in the model (buffers) and in the training state.

Files in ``out_dir`` (written atomically: temporary file + os.replace):

- ``train_state.pt``: config (plain dict), step, network / EMA / optimizer states, shift/scale,
  the two RNG states (data stream and t/ε stream, as uint8 tensors), the running-loss window;
  written every ``checkpoint_every`` steps and at the end.
- ``score_model.pt``: the EMA model (:func:`~sgilo.models.score.model.save_score_model`, extra holds
  the training config and step), written with every state.
- ``log.jsonl``: one JSON record per ``log_every`` steps: step, loss (mean over the window), lr,
  elapsed_s. On resume, records after the resumed step are dropped.
- ``config.json``: the resolved config, Python/torch versions and the step the run (re)started at.

Resume: the training state's config must equal the given one except ``steps`` (which may grow to
extend a run); the data source must be the same pure function of (n, generator).

Data parallel (``parallel``, :mod:`sgilo.models.data_parallel`; ``sgilo train-score`` under
torchrun): ``batch`` is the global batch. Every process draws the whole batch (x_0, t, ε; so the
generators stay in step with the single-process run), keeps its ``batch``/W rows, and the
gradients and the loss are averaged over the processes before clipping and the Adam step; only
rank 0 writes files and calls ``progress``.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from sgilo.models.data_parallel import SINGLE, DataParallel
from sgilo.models.score.model import (
    ScoreCheckpointError,
    ScoreModel,
    check_state_dict,
    first_line,
    read_checkpoint,
    save_score_model,
)
from sgilo.models.score.network import NetworkConfig, build_network
from sgilo.models.score.sde import VPSDE, expand_time, randn_like_from
from sgilo.models.score.sources import GANLatentSource, TensorSource
from sgilo.models.torch_io import atomic_torch_save

Source = Callable[[int, torch.Generator], Tensor]
STATE_FORMAT = "sgilo-score-train"
STATE_FILE, MODEL_FILE, LOG_FILE = "train_state.pt", "score_model.pt", "log.jsonl"
CONFIG_FILE = "config.json"


class ScoreTrainConfig(BaseModel):
    """Everything that determines a training run (JSON-able via ``model_dump(mode="json")``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    network: NetworkConfig
    sde: VPSDE = VPSDE()
    space: str = Field("", description='label stored with the model, e.g. "z" or "block1"')
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    batch: int = Field(128, ge=1)
    steps: int = Field(20_000, ge=1)
    grad_clip: float | None = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    seed: int = 0
    normalization: Literal["standardize", "none"] = "standardize"
    normalization_samples: int = Field(4096, ge=2)
    gaussian_skip: bool = True
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1)


def estimate_normalization(
    x: Tensor, data_shape: tuple[int, ...], mode: str
) -> tuple[Tensor, Tensor]:
    """shift, scale of samples x (N, *data_shape): per coordinate for (n_rows, dim) data, per
    channel ((C, 1, 1)) for (C, r, r) maps. ``scale`` = std floored at 1e-3·RMS(std) (and 1e-8),
    so constant coordinates do not divide by zero. mode "none": 0 and 1."""
    if mode == "none":
        return torch.zeros(()), torch.ones(())
    if x.shape[0] < 2 or tuple(x.shape[1:]) != tuple(data_shape):
        raise ValueError(f"need (N >= 2, {data_shape}) samples, got {tuple(x.shape)}")
    dims = (0,) if len(data_shape) <= 2 else (0, *range(2, x.dim()))
    count = x.numel() // math.prod(x.mean(dim=dims, keepdim=True).shape)

    def total(f: Callable[[Tensor], Tensor]) -> Tensor:  # float64, in chunks of samples
        return sum(f(c.detach().double()).sum(dim=dims, keepdim=True) for c in x.split(4096))

    shift = total(lambda c: c) / count
    std = (total(lambda c: (c - shift).pow(2)) / count).sqrt()
    shift, std = shift[0].cpu(), std[0].cpu()
    floor = max(1e-3 * float(std.pow(2).mean().sqrt()), 1e-8)
    return shift.float(), std.clamp_min(floor).float()


def _rng_state(g: torch.Generator) -> Tensor:
    return g.get_state().clone()


def _draw(source: Source, n: int, gen: torch.Generator, shape: tuple[int, ...]) -> Tensor:
    x = source(n, gen)
    if not isinstance(x, Tensor) or tuple(x.shape) != (n, *shape):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"source returned {got}, expected {(n, *shape)}")
    return x


def _perturbed_rows(
    source: Source,
    config: ScoreTrainConfig,
    model: ScoreModel,
    data_gen: torch.Generator,
    noise_gen: torch.Generator,
    parallel: DataParallel,
) -> tuple[Tensor, Tensor, Tensor]:
    """This process's rows (u_t, ε, t) of the global batch, (B/W, *shape) twice and (B/W,): the
    random numbers of all B rows are drawn (x_0's, then t and ε, as in one process), and only
    these rows are computed; a :class:`GANLatentSource` runs its generator for them alone."""
    b, shape, sde = config.batch, config.network.data_shape, config.sde
    device = model.shift.device
    if isinstance(source, GANLatentSource):
        x0 = source(b, data_gen, rows=parallel.shard)
        if tuple(x0.shape) != (b // parallel.world_size, *shape):
            raise ValueError(f"source returned {tuple(x0.shape)} rows of {(b, *shape)}")
    else:
        x0 = parallel.shard(_draw(source, b, data_gen, shape))
    u0 = model.normalize(x0.to(device=device, dtype=torch.float32))
    t = parallel.shard(sde.sample_time(b, noise_gen, device=device))
    eps = parallel.shard(randn_like_from(u0.new_empty((b, *shape)), noise_gen))
    # sde.perturb's x_t = m(t)·u_0 + s(t)·ε on these rows, with the whole batch's ε
    u_t = expand_time(sde.mean_coeff(t), u0) * u0 + expand_time(sde.std(t), u0) * eps
    return u_t, eps, t


def _lr(config: ScoreTrainConfig, step: int) -> float:
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


def _check_resume(path: Path, state: dict[str, Any], config: ScoreTrainConfig) -> None:
    if state.get("format") != STATE_FORMAT:
        raise ScoreCheckpointError(f"{path}: not a score training state")
    missing = [
        k
        for k in ("config", "step", "network", "ema", "optimizer", "shift", "scale", "data_rng",
                  "noise_rng", "window")
        if k not in state
    ]  # fmt: skip
    if missing:
        raise ScoreCheckpointError(f"{path}: missing entries: {', '.join(missing)}")
    bad = [k for k in ("shift", "scale", "window") if not isinstance(state[k], Tensor)]
    if bad or not isinstance(state["step"], int):
        raise ScoreCheckpointError(f"{path}: malformed entries: {', '.join(bad) or 'step'}")
    try:
        stored = ScoreTrainConfig.model_validate(state["config"])
    except ValidationError as exc:
        raise ScoreCheckpointError(f"{path}: invalid stored config ({first_line(exc)})") from None
    given = config.model_dump(mode="json")
    saved = stored.model_dump(mode="json")
    diff = [
        f"{k}={given[k]} (file: {saved[k]})" for k in given if k != "steps" and given[k] != saved[k]
    ]
    if diff:
        raise ScoreCheckpointError(
            f"{path}: the config differs from the run being resumed: {'; '.join(diff)}"
        )
    if int(state["step"]) > config.steps:
        raise ScoreCheckpointError(
            f"{path}: the state is at step {int(state['step'])}, beyond steps={config.steps}"
        )


def _trim_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    path.write_text("".join(f"{line}\n" for line in keep))


def train_score(
    config: ScoreTrainConfig,
    source: Source | Tensor,
    out_dir: str | Path,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    device: str | torch.device = "cpu",
    parallel: DataParallel = SINGLE,
    stop: Callable[[], bool] | None = None,
) -> ScoreModel:
    """Train (or resume) a score model; returns the EMA model (eval mode).

    source: a tensor (N, *data_shape) or a callable ``(n, generator) -> (n, *data_shape)``.
    resume: continue from ``out_dir/train_state.pt`` when it exists (when False and it exists,
    FileExistsError: a run is never overwritten silently). progress: called with every log
    record. Randomness: network init from ``seed``; the data stream and the t/ε stream from two
    CPU generators seeded ``seed`` and ``seed + 2``; the global torch RNG is left untouched.
    parallel: this process among data-parallel processes (see the module docstring); ``batch``
    must be a multiple of their number (else ValueError). stop: polled after every step (the
    CLI's SIGTERM/Ctrl-C flag); when it returns True the run writes its log record and training
    state at that step and returns, and ``resume`` continues it exactly (data-parallel processes
    agree on it by a collective every step).
    """
    out = Path(out_dir)
    state_path, log_path = out / STATE_FILE, out / LOG_FILE
    if isinstance(source, Tensor):
        source = TensorSource(source)
    shape = config.network.data_shape
    if state_path.exists() and not resume:
        raise FileExistsError(f"{state_path}: a training state exists; pass resume=True")
    parallel.check_batch(config.batch, what="batch (--batch)")
    writes = parallel.writes
    out.mkdir(parents=True, exist_ok=True)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        network = build_network(config.network)
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed + 2)
    step, window = 0, torch.zeros(2, dtype=torch.float64)  # window: (sum of losses, count)

    state: dict[str, Any] | None = None
    if resume and state_path.exists():
        state = read_checkpoint(state_path)
        _check_resume(state_path, state, config)
        shift, scale = state["shift"], state["scale"]
    elif isinstance(source, TensorSource):
        shift, scale = estimate_normalization(source.data, shape, config.normalization)
    else:
        norm_gen = torch.Generator().manual_seed(config.seed + 1)
        x = _draw(source, config.normalization_samples, norm_gen, shape)
        shift, scale = estimate_normalization(x, shape, config.normalization)

    try:
        model = ScoreModel(network, config.sde, shift, scale, config.space, config.gaussian_skip)
    except ValueError as exc:
        if state is None:
            raise
        raise ScoreCheckpointError(f"{state_path}: bad normalization ({first_line(exc)})") from None
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = list(model.network.parameters())
    ema_params = list(ema.network.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, foreach=True)
    if state is not None:
        check_state_dict(state_path, state["network"], model.network, "network")
        check_state_dict(state_path, state["ema"], ema.network, "ema")
        model.network.load_state_dict(state["network"])
        ema.network.load_state_dict(state["ema"])
        try:
            opt.load_state_dict(state["optimizer"])
            data_gen.set_state(state["data_rng"])
            noise_gen.set_state(state["noise_rng"])
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise ScoreCheckpointError(
                f"{state_path}: bad optimizer/RNG state ({first_line(exc)})"
            ) from None
        step, window = int(state["step"]), state["window"].double().clone()
        if writes:
            _trim_log(log_path, step)
    elif writes and log_path.exists():
        log_path.unlink()
    run_info = {
        "config": config.model_dump(mode="json"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "resumed_at_step": step,
    }
    if writes:
        (out / CONFIG_FILE).write_text(json.dumps(run_info, indent=2) + "\n")

    def write(step: int) -> None:
        atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "config": config.model_dump(mode="json"),
                "step": step,
                "network": {k: v.detach().cpu() for k, v in model.network.state_dict().items()},
                "ema": {k: v.detach().cpu() for k, v in ema.network.state_dict().items()},
                "optimizer": opt.state_dict(),
                "shift": model.shift.cpu(),
                "scale": model.scale.cpu(),
                "data_rng": _rng_state(data_gen),
                "noise_rng": _rng_state(noise_gen),
                "window": window.clone(),
            },
            state_path,
        )
        best = ema if config.ema_decay > 0 else model
        extra = {"step": step, "train_config": config.model_dump(mode="json")}
        save_score_model(out / MODEL_FILE, best, extra=extra)

    sde, t0 = config.sde, time.perf_counter()
    model.train()
    while step < config.steps:
        if parallel.active:  # this process's rows of the global batch
            u_t, eps, t = _perturbed_rows(source, config, model, data_gen, noise_gen, parallel)
        else:
            x0 = _draw(source, config.batch, data_gen, shape)
            x0 = x0.to(device=device, dtype=torch.float32)
            t = sde.sample_time(config.batch, noise_gen, device=device)
            u_t, eps = sde.perturb(model.normalize(x0), t, noise_gen)
        loss = (model.eps_normalized(u_t, t) - eps).pow(2).mean()
        if not parallel.active and not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if parallel.active:
            (value,) = parallel.average(params, {"loss": loss}).values()
            if not math.isfinite(value):  # the global mean: every process stops here
                raise FloatingPointError(f"loss is {value} at step {step}")
            loss = torch.tensor(value)
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
        lr = _lr(config, step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        step += 1
        window += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
        stopping = stop is not None and stop()
        if stop is not None and parallel.active:  # every process stops at the same step
            stopping = parallel.any(stopping, device)
        last = step == config.steps or stopping
        record = None
        if step % config.log_every == 0 or last:
            record = {
                "step": step,
                "loss": float(window[0] / window[1]),
                "lr": lr,
                "elapsed_s": round(time.perf_counter() - t0, 3),
            }
            window.zero_()
            if writes:
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
        if writes and (step % config.checkpoint_every == 0 or last):
            write(step)
        if writes and record is not None and progress is not None:
            progress(record)
        if stopping:
            break
    return ema.eval().requires_grad_(False)
