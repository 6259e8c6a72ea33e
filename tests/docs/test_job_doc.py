"""docs/job.md's sh blocks run top to bottom against a fresh hub (with the LAVA
listener) and show what they print: every line of the text block after a block
(but for times) is in its output, and so are its exit codes."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.blocks import exit_lines, run_blocks, sh_blocks
from tests.hubproc import HubProcess, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def test_every_sh_block_of_the_job_page_runs_as_shown(tmp_path):
    pairs = sh_blocks((DOCS / "job.md").read_text())
    assert len(pairs) >= 7, "docs/job.md lost its examples"
    lava = free_port()
    hub = HubProcess(tmp_path / "data", args=["--lava-listen", f"127.0.0.1:{lava}"]).start()
    try:
        shown, out = run_blocks(pairs, tmp_path, {"127.0.0.1:8580": hub.url.removeprefix("http://"),
                                                  "127.0.0.1/3079": f"127.0.0.1/{lava}"})
    finally:
        hub.stop()
    for i, ((sh, expected), got) in enumerate(zip(pairs, shown, strict=True)):
        assert exit_lines(got) == exit_lines(expected), (i, sh, got)
        for line in expected.splitlines():
            if line.strip() and not TIME.search(line):
                where = out if line.startswith("tether: ") else got  # messages go to stderr
                assert line.rstrip() in where, f"block {i}: {line!r} not in\n{got}"
