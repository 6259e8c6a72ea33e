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
