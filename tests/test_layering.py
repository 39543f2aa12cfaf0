"""The layering of docs/ARCHITECTURE.md, enforced on the source: imports point down only."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package → top-level modules it must never import
FORBIDDEN = {
    "operators": {"pipeline", "flows", "models", "prefect", "prefect_dask"},
    "models": {"pipeline", "flows", "prefect", "prefect_dask"},
    "pipeline": {"flows", "prefect", "prefect_dask"},
    "flows": set(),
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found in {package}/"
    offences = [
        f"{f.relative_to(ROOT)} imports {bad}"
        for f in files
        for bad in sorted(imported_top_levels(f) & FORBIDDEN[package])
    ]
    assert not offences, "\n".join(offences)


def test_checker_sees_imports(tmp_path):
    """The checker itself: a forbidden import in any form is found."""
    src = tmp_path / "m.py"
    src.write_text(
        "import prefect.tasks\nfrom flows.demo import x\ndef f():\n    import pipeline\n"
    )
    assert imported_top_levels(src) == {"prefect", "flows", "pipeline"}


def test_every_checkpoint_load_is_weights_only():
    offences = []
    for package in FORBIDDEN:
        for f in (ROOT / package).rglob("*.py"):
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
