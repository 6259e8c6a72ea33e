"""Every relative link of the README and the docs pages leads somewhere: the file exists
and, with a #fragment, the page has that heading (GitHub's anchors: lowercase, spaces to
hyphens, punctuation dropped). A reader following one met a dead anchor (hub.md#security)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _prose(page: Path) -> str:
    return FENCE.sub("", page.read_text())


def test_every_relative_link_reaches_its_page_and_heading():
    anchors = {p: {_anchor(h) for h in re.findall(r"^#{1,6}\s+(.*)$", _prose(p), re.M)} for p in PAGES}
    dead = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not followed here
            path, _, fragment = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                dead.append(f"{page.name}: {target} (no such file)")
            elif fragment and where.suffix == ".md" and fragment not in anchors.get(where, set()):
                dead.append(f"{page.name}: {target} (no such heading)")
    assert not dead, dead
    assert sum(len(re.findall(r"\]\((?!https?:)", _prose(p))) for p in PAGES) > 20, "the pages lost their links?"


def test_the_readme_lists_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not missing, f"README.md's Documentation list lacks {missing}"
