"""`sgilo train-gan` and `sgilo train-score` from the command line, at toy sizes: they write their
files, resume, refuse to overwrite a run, and chain (a trained generator feeds the score model)."""

import json

import torch

from sgilo.flows.cli import main
from sgilo.models.score.model import load_score_model
from sgilo.models.stylegan2.checkpoint import load_generator

GAN = [
    "--resolution",
    "16",
    "--style-dim",
    "16",
    "--channel-max",
    "16",
    "--batch",
    "2",
    "--checkpoint-every",
    "2",
]


def test_train_gan_resume_then_score(tmp_path, capsys):
    out = tmp_path / "gan"
    assert main(["train-gan", "--data", "mni-train", "--out", str(out), "--steps", "2", *GAN]) == 0
    assert {"checkpoint.pt", "generator.pt", "log.jsonl"} <= {p.name for p in out.iterdir()}
    # a second fresh run into the same folder is refused, not overwritten
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["train-gan", "--data", "mni-train", "--out", str(out), "--steps", "2", *GAN]) == 2
    assert "resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before
    # resume continues to a larger step count
    assert (
        main(
            [
                "train-gan",
                "--data",
                "mni-train",
                "--out",
                str(out),
                "--steps",
                "4",
                "--resume",
                *GAN,
            ]
        )
        == 0
    )
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert int(ckpt["step"]) == 4
    generator, info = load_generator(out / "generator.pt")
    assert generator(torch.randn(1, 16)).shape == (1, 1, 16, 16)
    assert info.latent_stats is not None and bool((info.latent_stats.sigma > 0).all())

    score_out = tmp_path / "score"
    args = [
        "train-score",
        "--generator",
        str(out / "generator.pt"),
        "--space",
        "1",
        "--out",
        str(score_out),
        "--steps",
        "3",
        "--batch",
        "4",
    ]
    assert main(args) == 0
    model = load_score_model(score_out / "score_model.pt")
    h = generator.block_output(1, generator.mapping(torch.randn(2, 16))).features
    assert model.denoise(h, 0.01).shape == h.shape
    log = [json.loads(line) for line in (score_out / "log.jsonl").read_text().splitlines()]
    assert log and log[-1]["step"] == 3

    # the sample sheet: 2 rows (GAN, after the prior) of 3 tiles of 16² with 2-pixel gaps
    sheet = tmp_path / "sheet.png"
    assert (
        main(
            [
                "sample",
                "--generator",
                str(out / "generator.pt"),
                "--score",
                str(score_out / "score_model.pt"),
                "--block",
                "1",
                "--n",
                "3",
                "--out",
                str(sheet),
            ]
        )
        == 0
    )
    from PIL import Image

    assert Image.open(sheet).size == (3 * 18 + 2, 2 * 18 + 2)
    assert (
        main(
            [
                "sample",
                "--generator",
                str(out / "generator.pt"),
                "--score",
                str(score_out / "score_model.pt"),
                "--block",
                "0",
                "--out",
                str(sheet),
            ]
        )
        == 2
    )
    assert "block 0" in capsys.readouterr().err


def test_train_commands_report_bad_input(tmp_path, capsys):
    assert (
        main(["train-gan", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *GAN])
        == 2
    )
    assert "nope" in capsys.readouterr().err
    assert (
        main(
            [
                "train-score",
                "--generator",
                str(tmp_path / "missing.pt"),
                "--space",
                "z",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "missing.pt" in capsys.readouterr().err
