"""The installed package: one import name, ``sgilo``, with a small public API."""

import doctest
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import sgilo

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("operators", "models", "pipeline", "flows")


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"sgilo": "."}
    found = {"sgilo"} | {
        "sgilo." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in PACKAGES
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert set(config["packages"]) == found


def test_the_package_is_this_checkout():
    assert Path(sgilo.__file__).resolve() == ROOT / "__init__.py"


def test_every_public_name_resolves():
    for name in sgilo.__all__:
        assert getattr(sgilo, name) is not None, name
    with pytest.raises(AttributeError):
        sgilo.no_such_name  # noqa: B018


def test_import_is_cheap():
    """``import sgilo`` (and so ``sgilo --help``) does not load torch: the API is lazy."""
    code = "import sys, sgilo; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_api_example():
    failures, tried = doctest.testmod(sgilo, verbose=False)
    assert tried > 0 and failures == 0


@pytest.mark.slow
def test_wheel_installs_one_top_level_name(tmp_path):
    """The built wheel holds ``sgilo`` (and its metadata) and nothing else at the top level."""
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the checkout
    skip = shutil.ignore_patterns(".*", "tests", "docs", "build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, source, ignore=skip)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            str(source),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("sgilo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"sgilo"}
    assert "sgilo/models/weights/brain-t1-128/generator.pt" in names
    assert "sgilo/pipeline/research/bench.py" in names
    assert not any(n.startswith("sgilo/tests/") for n in names)
