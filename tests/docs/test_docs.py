"""The docs say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from tether.auth.policy import action_table_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_action_table_in_docs_matches_policy():
    text = (DOCS / "hub.md").read_text()
    m = re.search(r"<!-- actions:begin -->\n(.*?)<!-- actions:end -->", text, re.S)
    assert m, "docs/hub.md lost its actions markers"
    assert m.group(1).strip() == action_table_markdown().strip(), (
        "docs/hub.md's action table is stale: paste the output of "
        "tether.auth.policy.action_table_markdown() between the markers"
    )


def test_every_sh_block_of_the_cli_page_runs_as_shown(tmp_path):
    """docs/cli.md says its sh blocks run top to bottom against a fresh hub: run them
    (with the hub on a free port) and check that each block's exit codes are the ones
    its text block shows."""
    from tests.docs.blocks import exit_lines, run_blocks, sh_blocks
    from tests.hubproc import HubProcess

    pairs = sh_blocks((DOCS / "cli.md").read_text())
    assert len(pairs) >= 20, "docs/cli.md lost its examples"
    hub = HubProcess(tmp_path / "data").start()
    try:
        shown, _ = run_blocks(pairs, tmp_path, {"127.0.0.1:8580": hub.url.removeprefix("http://")})
    finally:
        hub.stop()
    for i, ((sh, expected), got) in enumerate(zip(pairs, shown, strict=True)):
        want, have = exit_lines(expected), exit_lines(got)
        assert have == want, f"block {i} of docs/cli.md:\n{sh}\nshowed {want}, ran {have}:\n{got}"
