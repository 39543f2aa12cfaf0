"""Shipped priors are found by name; paths pass through; unknown names give one-line errors."""

from __future__ import annotations

import pytest

from sgilo.models import registry


def test_shipped_name_resolves_to_its_files(tmp_path, monkeypatch):
    folder = tmp_path / "brain-x"
    folder.mkdir()
    (folder / "generator.pt").write_bytes(b"g")
    (folder / "score_z.pt").write_bytes(b"z")
    (folder / "score_block2.pt").write_bytes(b"b")
    (tmp_path / "incomplete").mkdir()  # no generator.pt: not a prior
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    assert registry.shipped_models() == ["brain-x"]
    files = registry.resolve_model("brain-x")
    assert files.shipped and files.generator == folder / "generator.pt"
    assert [p.name for p in files.score_models] == ["score_block2.pt", "score_z.pt"]


def test_path_and_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    gen = tmp_path / "mine.pt"
    gen.write_bytes(b"g")
    files = registry.resolve_model(str(gen))
    assert files.generator == gen and files.score_models == [] and not files.shipped
    run = tmp_path / "runs" / "candidate"  # a prior's folder by path: with its score models
    run.mkdir(parents=True)
    (run / "generator.pt").write_bytes(b"g")
    (run / "score_block1.pt").write_bytes(b"s")
    files = registry.resolve_model(str(run))
    assert files.generator == run / "generator.pt" and not files.shipped
    assert files.name == "candidate" and [p.name for p in files.score_models] == ["score_block1.pt"]
    with pytest.raises(ValueError, match="no such model file"):  # a folder without a generator
        registry.resolve_model(str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="no-such-prior: no such model file") as err:
        registry.resolve_model("no-such-prior")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="default prior 'brain-t1-128' is not installed"):
        registry.resolve_model(None)


@pytest.mark.parametrize("name", registry.shipped_models())
def test_shipped_priors_load_and_generate(name):
    import torch

    from sgilo.pipeline.methods import load_prior

    prior = load_prior(name)
    g = prior.generator
    assert prior.latent_stats is not None  # fitted at release, stored with the generator
    with torch.no_grad():
        image = g(torch.randn(2, g.config.style_dim, generator=torch.Generator().manual_seed(0)))
    r = g.config.resolution
    assert image.shape == (2, g.config.image_channels, r, r) and torch.isfinite(image).all()
    for space, model in prior.score_models.items():
        assert space == "z" or space.startswith("block")
        assert model.data_shape  # shapes the solver checks against the generator
    # every shipped score model is reached by SGILO's default schedule (as `solve` truncates it)
    from sgilo.pipeline.solvers.sgilo import SGILOConfig, check_score_models, used_spaces

    spaces = check_score_models(prior.score_models, g)
    steps = SGILOConfig().steps[: g.num_blocks]
    assert used_spaces(spaces, steps) == sorted(spaces, key=str)
    assert (registry.WEIGHTS_DIR / "PROVENANCE.md").is_file()
