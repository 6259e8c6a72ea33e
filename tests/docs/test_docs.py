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
    import os
    import subprocess
    import sys

    from tests.hubproc import HubProcess

    text = (DOCS / "cli.md").read_text()
    # every sh block, with the text block right after it if there is one (its output)
    pairs = [(m.group(1), m.group(3) or "")
             for m in re.finditer(r"```sh\n(.*?)```(\n\n```text\n(.*?)```)?", text, re.S)]
    assert len(pairs) >= 20, "docs/cli.md lost its examples"
    hub = HubProcess(tmp_path / "data").start()
    try:
        bin_dir = str(Path(sys.executable).parent)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
               "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
               "LANG": "C.UTF-8"}
        os.makedirs(env["HOME"])
        script = "\n".join(f"echo '=====BLOCK {i}'\n{sh}" for i, (sh, _) in enumerate(pairs))
        script = script.replace("127.0.0.1:8580", hub.url.removeprefix("http://"))
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    finally:
        hub.stop()
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    shown = r.stdout.split("=====BLOCK ")[1:]
    assert len(shown) == len(pairs), out
    for i, ((sh, expected), got) in enumerate(zip(pairs, shown, strict=True)):
        want = re.findall(r"^exit \d+$", expected, re.M)
        have = re.findall(r"^exit \d+$", got, re.M)
        assert have == want, f"block {i} of docs/cli.md:\n{sh}\nshowed {want}, ran {have}:\n{got}"
