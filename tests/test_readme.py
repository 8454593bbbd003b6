"""The README's Layout names every top-level module and folder of the package, and every relative link in the README
and docs/ points at a file that exists."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def top_level_names() -> list[str]:
    names = []
    for package in ("zoo", "ops"):
        for path in sorted((ROOT / package).iterdir()):
            if path.name.startswith("__") or path.name.startswith("."):
                continue
            if path.is_dir() and package == "zoo":
                names.append(path.name + "/")
            elif path.suffix == ".py":
                names.append(path.name)
    names += [path.name for path in sorted((ROOT / "scripts").iterdir()) if path.suffix in (".sh", ".py")]
    names += [path.name + "/" for path in sorted(ROOT.iterdir()) if path.is_dir() and not path.name.startswith(".")
              and path.name not in ("outputs", "bench_results") and not path.name.endswith(".egg-info")]
    return names


@pytest.mark.parametrize("name", top_level_names())
def test_layout_names_every_top_level_module(name):
    assert re.search(rf"(?<![\w.]){re.escape(name)}", layout_block()), f"README's Layout does not name {name}"


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_relative_links_resolve(document):
    for target in re.findall(r"\]\(([^)#\s]+)", document.read_text()):
        if "://" in target:
            continue
        assert (document.parent / target).exists(), f"{document.name} links to {target}, which does not exist"


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
