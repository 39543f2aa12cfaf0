"""Every file that the sources and the docs name exists: ``docs/….md`` citations in docstrings and
comments, repository paths such as ``pipeline/solvers/ilo.py`` in the docs, and the relative links
between the Markdown files."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("operators", "models", "pipeline", "flows", "tests")

#: a repository path: one of the top-level folders, then path characters, ending in a file suffix
PATH = re.compile(
    r"(?<![\w./-])((?:docs|operators|models|pipeline|flows|tests)/[\w./-]*\.(?:md|py|json|png))"
)
#: a relative Markdown link target: ](target) or ](target#anchor)
LINK = re.compile(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)")


def documents() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    docs += sorted((ROOT / "models").rglob("*.md"))
    return docs


def sources() -> list[Path]:
    return [ROOT / "__init__.py"] + sorted(f for d in FOLDERS for f in (ROOT / d).rglob("*.py"))


def named_paths(text: str) -> set[str]:
    names = set()
    for m in PATH.finditer(text):
        name = m.group(1).rstrip(".")
        if "*" in name or "<" in name or "{" in name:
            continue
        names.add(name)
    return names


def test_checker_finds_paths():
    text = "see docs/SPEED.md §3 and `pipeline/solvers/ilo.py`, not x/pipeline/a.py or docs/"
    assert named_paths(text) == {"docs/SPEED.md", "pipeline/solvers/ilo.py"}


def test_every_named_file_exists():
    missing = []
    for f in sources() + documents():
        for name in sorted(named_paths(f.read_text(encoding="utf-8"))):
            if name.startswith("tests/data/"):
                continue  # built on the fly by the tests
            if not (ROOT / name).exists():
                missing.append(f"{f.relative_to(ROOT)}: {name}")
    assert not missing, "named files that do not exist:\n" + "\n".join(missing)


def test_markdown_links_resolve():
    broken = []
    for doc in documents():
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if target.startswith(("http", "mailto")):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
