"""docs/log.md's "runnable walk-through on one machine" runs as written: its `$ ` lines,
top to bottom in one shell, against a real hub (the block's own `tether hub ... &` is
the test's hub), and every line it shows after a command is in that command's output
(but for `bytes`, which depends on the ids)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.blocks import run_blocks
from tests.hubproc import HubProcess

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _walk_through() -> list[tuple[str, str]]:
    text = (DOCS / "log.md").read_text()
    block = text.split("A runnable walk-through on one machine", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:] + "\n", ""))
        elif steps and line.strip():
            cmd, out = steps[-1]
            steps[-1] = (cmd, out + line + "\n")
    return steps


def test_the_log_walk_through_runs_as_written(tmp_path):
    steps = _walk_through()
    assert steps[0][0].startswith("tether hub --data ./hubdata") and len(steps) >= 15, "docs/log.md lost its walk-through"
    hub = HubProcess(tmp_path / "hubdata").start()
    try:
        shown, out = run_blocks(steps[1:], tmp_path, {"127.0.0.1:8580": hub.url.removeprefix("http://")})
    finally:
        hub.stop()
    assert "error" not in out.lower(), out
    for (cmd, expected), got in zip(steps[1:], shown, strict=True):
        for line in expected.splitlines():
            if re.fullmatch(r'\s*"bytes": \d+,', line):
                assert re.search(r'"bytes": \d+,', got), (cmd, got)
                continue
            assert line.rstrip().replace("127.0.0.1:8580", hub.url.removeprefix("http://")) in got, \
                f"{cmd.strip()}: {line!r} not in\n{got}"
    listed = shown[-1]
    assert [r.split()[-1] for r in listed.splitlines()[2:]] == ["first", "second", "third", "bob"], listed
