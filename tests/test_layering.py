"""The layering of docs/ARCHITECTURE.md, enforced on the source: imports point down only, the
production path never imports the research tools, and everything is imported as ``sgilo.*``."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("operators", "models", "pipeline", "flows")

#: package folder → module prefixes it must never import
FORBIDDEN = {
    "operators": {"sgilo.pipeline", "sgilo.flows", "sgilo.models", "prefect", "prefect_dask"},
    "models": {"sgilo.pipeline", "sgilo.flows", "prefect", "prefect_dask"},
    "pipeline": {"sgilo.flows", "prefect", "prefect_dask"},
    "flows": set(),
}

#: the research tools (benchmarks, tuning, speed and prior evaluation, the natural-image suite)
RESEARCH = "sgilo.pipeline.research"
#: the only production modules that may import them: the command line's research commands
RESEARCH_ENTRY = {"flows/cli/research.py"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, as written (``from a.b import c`` gives ``a.b`` and
    ``a.b.c``, since ``c`` may be a module); relative imports are given as ``.`` + name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def sources(*folders: str) -> list[Path]:
    return sorted(f for folder in folders for f in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package):
    files = sources(package)
    assert files, f"no sources found in {package}/"
    offences = [
        f"{f.relative_to(ROOT)} imports {m}"
        for f in files
        for m in sorted(imported_modules(f))
        if any(_matches(m, bad) for bad in FORBIDDEN[package])
    ]
    assert not offences, "\n".join(offences)


def test_production_never_imports_research():
    offences = [
        f"{rel} imports {m}"
        for f in sources(*PACKAGES)
        if not _matches("sgilo." + ".".join(f.relative_to(ROOT).with_suffix("").parts), RESEARCH)
        and (rel := f.relative_to(ROOT).as_posix()) not in RESEARCH_ENTRY
        for m in sorted(imported_modules(f))
        if _matches(m, RESEARCH)
    ]
    assert not offences, "\n".join(offences)


def test_everything_is_imported_through_sgilo():
    """``import pipeline`` would load a second copy of a module when run from the checkout (and
    is no installed name at all); relative imports hide the layer an import reaches into."""
    offences = [
        f"{f.relative_to(ROOT)} imports {m}"
        for f in sources(*PACKAGES, "tests")
        for m in sorted(imported_modules(f))
        if m.startswith(".") or m.split(".")[0] in PACKAGES
    ]
    assert not offences, "\n".join(offences)


def test_checker_sees_imports(tmp_path):
    """The checker itself: an import in any form is found, with its full name."""
    src = tmp_path / "m.py"
    src.write_text(
        "import prefect.tasks\nfrom sgilo.flows.demo import x\n"
        "def f():\n    import sgilo.pipeline.research.bench\n    from . import y\n"
    )
    assert imported_modules(src) == {
        "prefect.tasks",
        "sgilo.flows.demo",
        "sgilo.flows.demo.x",
        "sgilo.pipeline.research.bench",
        ".",
        "..y",
    }


def test_every_checkpoint_load_is_weights_only():
    offences = []
    for f in sources(*PACKAGES):
        for node in ast.walk(ast.parse(f.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                ok = any(
                    k.arg == "weights_only"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is True
                    for k in node.keywords
                )
                if not ok:
                    offences.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert not offences, "torch.load without weights_only=True: " + ", ".join(offences)
