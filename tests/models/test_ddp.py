"""Data-parallel training under torchrun (two CPU processes, gloo): `sgilo train-gan` and
`sgilo train-score` follow the single-process run with the same global batch, resume exactly,
and only rank 0 writes; and the sharding that keeps the discriminator's minibatch-stddev groups
whole.

Tolerances: two processes sum the gradients of their halves where one process sums the whole
batch, so the weights differ by float rounding (about 1e-5 after three steps here); sharding
that split the stddev groups would differ by about 1e-2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sgilo.flows.cli import main
from sgilo.models.data_parallel import SINGLE, DataParallel
from sgilo.models.stylegan2.discriminator import minibatch_stddev

TORCHRUN = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2"]
GAN = [
    "train-gan",
    "--resolution",
    "16",
    "--style-dim",
    "16",
    "--channel-max",
    "16",
    "--batch",
    "8",  # 4 rows per process: one minibatch-stddev group of 4 each
    "--checkpoint-every",
    "3",
]


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`sgilo ARGS` in two torchrun processes; fails the test with their output if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*TORCHRUN, "-m", "sgilo.flows.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def checkpoint(folder: Path, name: str = "checkpoint.pt") -> dict:
    return torch.load(folder / name, map_location="cpu", weights_only=True)


def losses(folder: Path) -> list[dict[str, float]]:
    """The log's records without the timings."""
    timing = {"seconds", "images_per_s", "elapsed_s"}
    lines = (folder / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]


def assert_close_states(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), rtol=0, atol=atol), name


@pytest.fixture(scope="module")
def gan_runs(tmp_path_factory) -> dict[str, Path]:
    """3 steps of the same GAN in one process (in this one) and in two torchrun processes, on
    12 random 16² PNG images (a folder loads faster than mni-train in every process)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ddp-gan")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
    gan = [*GAN, "--data", str(images)]
    assert main([*gan, "--steps", "3", "--out", str(root / "one")]) == 0
    two = torchrun([*gan, "--steps", "3", "--out", str(root / "two")], root)
    return {
        "root": root,
        "gan": gan,
        "one": root / "one",
        "two": root / "two",
        "output": two.stderr,
    }


def test_gan_on_two_processes_matches_one(gan_runs):
    one, two = checkpoint(gan_runs["one"]), checkpoint(gan_runs["two"])
    assert (two["step"], two["images_seen"]) == (one["step"], one["images_seen"]) == (3, 24)
    for net in ("g", "d", "g_ema"):
        assert_close_states(one[net], two[net], atol=1e-4)
    for name in one["rng"]:  # every process drew the whole batch: the generators are in step
        assert torch.equal(one["rng"][name], two["rng"][name]), name
    for a, b in zip(losses(gan_runs["one"]), losses(gan_runs["two"]), strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)  # means over the global batch
    # rank 0 alone wrote and reported: one progress line per step, one "done"
    assert gan_runs["output"].count("step 3/3") == 1
    assert gan_runs["output"].count("done: step 3") == 1
    assert (gan_runs["two"] / "generator.pt").is_file()


def test_gan_resume_on_two_processes_is_exact(gan_runs):
    """2 steps, then --resume to 3, equals 3 steps at once, bit for bit, with two processes."""
    root, gan, out = gan_runs["root"], gan_runs["gan"], gan_runs["root"] / "resumed"
    torchrun([*gan, "--steps", "2", "--out", str(out)], root)
    torchrun([*gan, "--steps", "3", "--out", str(out), "--resume"], root)
    straight, resumed = checkpoint(gan_runs["two"]), checkpoint(out)
    for net in ("g", "d", "g_ema"):
        for name, value in straight[net].items():
            assert torch.equal(value, resumed[net][name]), (net, name)
    for name, state in straight["rng"].items():
        assert torch.equal(state, resumed["rng"][name]), name
    assert [r["step"] for r in losses(out)] == [2, 3]  # a record at the end of each call


def test_score_on_two_processes_matches_one(gan_runs):
    root = gan_runs["root"]
    args = ["train-score", "--generator", str(gan_runs["one"] / "generator.pt"), "--space", "1"]
    args += ["--steps", "3", "--batch", "8"]
    assert main([*args, "--out", str(root / "score-one")]) == 0
    output = torchrun([*args, "--out", str(root / "score-two")], root).stderr
    one = checkpoint(root / "score-one", "train_state.pt")
    two = checkpoint(root / "score-two", "train_state.pt")
    assert one["step"] == two["step"] == 3
    assert_close_states(one["network"], two["network"], atol=1e-5)
    assert_close_states(one["ema"], two["ema"], atol=1e-5)
    assert torch.equal(one["data_rng"], two["data_rng"])
    assert torch.equal(one["noise_rng"], two["noise_rng"])
    for a, b in zip(losses(root / "score-one"), losses(root / "score-two"), strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert output.count("done:") == 1


# ----------------------------------------------------------------------------- sharding


SPLITS = [(8, 4, 2), (16, 4, 2), (12, 3, 4), (6, 1, 3)]


@pytest.mark.parametrize(("batch", "group", "world"), SPLITS)
def test_shards_keep_the_stddev_groups_whole(batch, group, world):
    """Each process's minibatch-stddev feature equals the global one at its rows, and the shards
    together hold every row once."""
    x = torch.randn(batch, 3, 2, 2)
    whole = minibatch_stddev(x, group)
    rows = torch.arange(batch, dtype=torch.float64)
    seen = []
    for rank in range(world):
        p = DataParallel(rank, world)
        local = minibatch_stddev(p.shard(x, group), group)
        assert torch.allclose(local, p.shard(whole, group), atol=1e-6)
        seen += p.shard(rows, group).tolist()
    assert sorted(seen) == rows.tolist()


def test_one_process_is_untouched():
    x = torch.randn(6, 2)
    assert SINGLE.shard(x, 4) is x
    assert not SINGLE.active and SINGLE.writes
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.full((3,), 2.0)
    assert SINGLE.average([w], {"loss": torch.tensor(1.5)}) == {"loss": 1.5}
    assert torch.equal(w.grad, torch.full((3,), 2.0))


def test_batches_that_cannot_be_split_are_refused():
    p = DataParallel(1, 2)
    assert p.check_batch(8, 4) == 4
    with pytest.raises(ValueError, match="multiple of 8"):
        p.check_batch(4, 4)  # a group of 4 would be split over the two processes
    with pytest.raises(ValueError, match="multiple of the number of processes, 2"):
        p.check_batch(7)
    assert not DataParallel(1, 2).writes
    with pytest.raises(ValueError):
        DataParallel(2, 2)


@pytest.mark.parametrize("space", ["z", 1])
def test_gan_source_computes_only_its_rows(space):
    """A GAN latent source given a process's ``rows`` returns those rows of the whole batch and
    leaves its generator where the whole batch leaves it."""
    from sgilo.models.score.sources import gan_latent_source
    from sgilo.models.stylegan2.generator import Generator, GeneratorConfig

    torch.manual_seed(0)
    g = Generator(GeneratorConfig(resolution=16, style_dim=16, channel_max=16)).eval()
    source = gan_latent_source(g, space)
    whole_gen = torch.Generator().manual_seed(3)
    whole = source(8, whole_gen)
    for rank in range(2):
        p = DataParallel(rank, 2)
        gen = torch.Generator().manual_seed(3)
        part = source(8, gen, rows=p.shard)
        assert part.shape == (4, *whole.shape[1:])
        assert torch.allclose(part, p.shard(whole), atol=1e-6)
        assert torch.equal(gen.get_state(), whole_gen.get_state())


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def test_a_signal_to_one_process_stops_both_at_the_same_step(gan_runs):
    """SIGTERM to rank 1 only: both processes agree on the step (a multiple of the progress
    interval, 10), rank 0 writes that step's checkpoint and says so, and rank 1 stops too."""
    import threading
    import time

    root, gan = gan_runs["root"], gan_runs["gan"]
    out = root / "stopped"
    args = [*gan, "--steps", "100000", "--checkpoint-every", "100000", "--out", str(out)]
    proc = subprocess.Popen(
        [*TORCHRUN, "-m", "sgilo.flows.cli", *args],
        cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("step 20/") for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        workers = [p for p in _children(proc.pid) if _rank_of(p) == "1"]
        assert len(workers) == 1, (workers, _children(proc.pid))
        os.kill(workers[0], 15)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    text = "".join(lines)
    step = int(torch.load(out / "checkpoint.pt", weights_only=True)["step"])
    assert step >= 20 and step % 10 == 0, text
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == step
    assert f"interrupted by SIGTERM; checkpoint written at step {step} " in text, text
    assert "sgilo: SIGTERM: stopping after this step" in text, text


LEAVE_TOGETHER = """
import time
from pathlib import Path
from sgilo.models.data_parallel import joined

with joined("cpu") as (parallel, _):
    parallel.any(False)  # a collective: both processes are in the group
    if parallel.rank == 0:
        time.sleep(2.0)  # rank 0 still busy (writing its checkpoint) when rank 1 is done
    done = time.time()
# a file per process (the two share torchrun's stderr, where lines can interleave)
Path(f"rank{parallel.rank}.txt").write_text(f"{done} {time.time()}")
"""


def test_processes_leave_the_group_together(tmp_path):
    """A process that finishes first waits for the others before the group is destroyed (it
    must not tear the group down under rank 0); fails without the barrier in `joined`."""
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_TOGETHER)
    done = subprocess.run(
        [*TORCHRUN, str(script)],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    times = {
        rank: [float(t) for t in (tmp_path / f"rank{rank}.txt").read_text().split()]
        for rank in (0, 1)
    }
    assert times[1][1] >= times[0][0] - 0.05, times  # rank 1 left after rank 0 was done
