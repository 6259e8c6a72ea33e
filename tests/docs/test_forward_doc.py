"""docs/forward.md's tour runs as shown: its sh blocks, top to bottom, against a hub with
an SSH server and a gateway, each block's output matching the text block after it
("…" stands for anything)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.hubproc import HubProcess

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _matches(expected: str, got: str) -> bool:
    want = [line for line in expected.strip("\n").splitlines()]
    have = [line for line in got.strip("\n").splitlines()]
    if len(want) != len(have):
        return False
    return all(re.fullmatch(".*".join(map(re.escape, w.split("…"))), h) for w, h in zip(want, have))


def test_the_forward_tour_runs_as_shown(tmp_path):
    text = (DOCS / "forward.md").read_text()
    tour = text.split("## The tour", 1)[1].split("\n## ", 1)[0]
    pairs = [(m.group(1), m.group(3)) for m in re.finditer(r"```sh\n(.*?)```(\n\n(?:[^`]*\n\n)?```text\n(.*?)```)?",
                                                           tour, re.S)]
    assert pairs[0][0].startswith("make run"), "the tour starts the hub with make run"
    hub = HubProcess(tmp_path / "data", listeners=("--ssh-listen", "--gateway-listen")).start()
    ssh_port, gw_port = hub.ports["--ssh-listen"], hub.ports["--gateway-listen"]
    try:
        bin_dir = str(Path(sys.executable).parent)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8",
               "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
        os.makedirs(env["HOME"])
        script = "set -u\n" + "\n".join(f"echo '=====BLOCK {i}'\n{sh}" for i, (sh, _) in enumerate(pairs) if i)
        script = (script.replace("127.0.0.1:8580", hub.url.removeprefix("http://"))
                  .replace("127.0.0.1:2222", f"127.0.0.1:{ssh_port}").replace("]:2222", f"]:{ssh_port}").replace(":8081", f":{gw_port}"))
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    finally:
        hub.stop()
    assert "Traceback" not in r.stderr, r.stderr
    shown = dict(re.findall(r"=====BLOCK (\d+)\n(.*?)(?======BLOCK |\Z)", r.stdout, re.S))
    for i, (sh, expected) in enumerate(pairs):
        if i == 0 or expected is None:
            continue
        got = shown.get(str(i), "").replace(str(gw_port), "8081")
        assert _matches(expected, got), f"block {i} of the tour:\n{sh}\nshould show:\n{expected}\nshowed:\n{got}\n{r.stderr}"
