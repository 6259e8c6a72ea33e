"""Shared by the benchmark scripts: replace one ``## `` section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nMeasured numbers for tether, with the command that produced each table. "
          "Scripts live in `benchmarks/`.\n")


def write_section(heading: str, body: str, docs: Path = DOCS) -> None:
    """Put ``body`` (which starts with ``heading``) in place of that section, or append it;
    the other sections are left as they are, one blank line between sections."""
    text = docs.read_text() if docs.exists() else HEADER
    body = body.strip("\n") + "\n"
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        rest = text[nxt + 1:] if nxt != -1 else ""
        text = text[:start] + body + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text.rstrip("\n") + "\n")
