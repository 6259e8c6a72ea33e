"""docs/job.md's sh blocks run top to bottom against a fresh hub (with the LAVA
listener), and show what they print: every line of the text block after a block
(but for times) is in its output, and so are its exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.hubproc import HubProcess, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def test_every_sh_block_of_the_job_page_runs_as_shown(tmp_path):
    text = (DOCS / "job.md").read_text()
    pairs = [(m.group(1), m.group(3) or "")
             for m in re.finditer(r"```sh\n(.*?)```(\n\n```text\n(.*?)```)?", text, re.S)]
    assert len(pairs) >= 7, "docs/job.md lost its examples"
    lava = free_port()
    hub = HubProcess(tmp_path / "data", args=["--lava-listen", f"127.0.0.1:{lava}"]).start()
    try:
        bin_dir = str(Path(sys.executable).parent)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
               "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "LANG": "C.UTF-8"}
        os.makedirs(env["HOME"])
        script = "\n".join(f"echo '=====BLOCK {i}'\n{sh}" for i, (sh, _) in enumerate(pairs))
        script = script.replace("127.0.0.1:8580", hub.url.removeprefix("http://"))
        script = script.replace("127.0.0.1/3079", f"127.0.0.1/{lava}")
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    finally:
        hub.stop()
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    shown = r.stdout.split("=====BLOCK ")[1:]
    assert len(shown) == len(pairs), out
    for i, ((sh, expected), got) in enumerate(zip(pairs, shown, strict=True)):
        assert re.findall(r"^exit \d+$", got, re.M) == re.findall(r"^exit \d+$", expected, re.M), (i, sh, got)
        for line in expected.splitlines():
            if line.strip() and not TIME.search(line):
                where = out if line.startswith("tether: ") else got
                assert line.rstrip() in where, f"block {i}: {line!r} not in\n{got}"
