"""The README a newcomer reads: short, and everything it names exists.

Every released model (``models/<name>.json``) is in its results table with its card, every model card
and ``docs/`` file it links exists (anchors too: GitHub's heading slugs), and the numbers of its table
are the cards' own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import REPO

README = (REPO / "README.md").read_text()


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _links(text: str) -> list[str]:
    return [link for link in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", link)]


def test_readme_is_short():
    assert len(README.encode()) < 8000, "the README is for a five-minute read; details go to docs/"


def test_every_link_of_the_readme_and_its_docs_exists():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        for link in _links(page.read_text()):
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            assert path.exists(), f"{page.name} links {link}: {path.relative_to(REPO)} is missing"
            if anchor and path.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)}
                assert anchor in slugs, f"{page.name} links {link}: no such heading in {path.name}"


def test_every_docs_path_the_readme_names_exists():
    for name in set(re.findall(r"\bdocs/[\w./-]+\.md\b", README)) | set(re.findall(r"\bbench/\w+\.py\b", README)):
        assert (REPO / name).is_file(), name


def test_every_released_model_is_in_the_results_table_with_its_cards_numbers():
    cards = sorted((REPO / "models").glob("*.json"))
    assert cards
    for path in cards:
        card = json.loads(path.read_text())
        name = card["name"]
        assert (REPO / "models" / card["file"]).is_file() and path.with_suffix(".md").is_file(), name
        row = next((line for line in README.splitlines() if line.startswith(f"| [`{name}`](models/{name}.md)")), None)
        assert row, f"{name} is not in the README's results table"
        test, gen = card["metrics"]["test"], card["metrics"].get("generalisation")  # none: not scored on new defects
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:5] == [f"{test['dsc_mean']:.3f}", f"{test['hd95_mean']:.2f}",
                              f"{gen['dsc_mean']:.3f}" if gen else "-"], name
