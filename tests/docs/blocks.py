"""Run a docs page's sh blocks top to bottom, as a reader would, against a hub."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def sh_blocks(text: str) -> list[tuple[str, str]]:
    """Every sh block, with the text block right after it if there is one (its output)."""
    return [(m.group(1), m.group(3) or "")
            for m in re.finditer(r"```sh\n(.*?)```(\n\n```text\n(.*?)```)?", text, re.S)]


def run_blocks(pairs: list[tuple[str, str]], workdir: Path, replace: dict[str, str]) -> tuple[list[str], str]:
    """Run the blocks in one bash in ``workdir`` with a clean environment; return each
    block's stdout and everything printed (stdout and stderr)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(workdir / "home"),
           "XDG_CONFIG_HOME": str(workdir / "xdg"), "XDG_CACHE_HOME": str(workdir / "cache"), "LANG": "C.UTF-8"}
    os.makedirs(env["HOME"], exist_ok=True)
    script = "\n".join(f"echo '=====BLOCK {i}'\n{sh}" for i, (sh, _) in enumerate(pairs))
    for old, new in replace.items():
        script = script.replace(old, new)
    r = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    shown = r.stdout.split("=====BLOCK ")[1:]
    assert len(shown) == len(pairs), out
    return shown, out


def exit_lines(text: str) -> list[str]:
    return re.findall(r"^exit \d+$", text, re.M)
