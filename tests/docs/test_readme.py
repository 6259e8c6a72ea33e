"""README's quick start runs as written: the operator's, the scheduler's and the builder's
blocks, top to bottom in one shell, against a real hub (what `make run` starts), with no
jq; only the hub's address and the builders' network (this machine's loopback) differ."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.docs.blocks import run_blocks, sh_blocks
from tests.hubproc import HubProcess

ROOT = Path(__file__).resolve().parents[2]


def _quick_start() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Quick start", 1)[1].split("\n### ", 1)[0]


def test_make_run_and_make_test_are_shown_as_alternatives():
    blocks = [sh for sh, _ in sh_blocks(_quick_start())]
    assert blocks[0].startswith("make run") and blocks[1].startswith("make test")  # two blocks, not one sequence
    assert "two terminals" in _quick_start()


def test_the_quick_start_runs_as_written(tmp_path):
    pairs = [(sh, out) for sh, out in sh_blocks(_quick_start()) if not sh.startswith("make ")]
    script = "".join(sh for sh, _ in pairs)
    assert "jq" not in script, "the quick start needs no jq: token mint prints the bare token"
    for i in range(3):
        (tmp_path / "out" / "img").mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / "img" / f"part{i}.img").write_bytes(bytes([i]) * 1000)
    hub = HubProcess(tmp_path / "data", env={"TETHER_AUDIT_READ_INTERVAL": "0.5"}).start()
    try:
        shown, everything = run_blocks(pairs, tmp_path, {
            ". .venv/bin/activate": ":",  # the test's python is the venv's
            "127.0.0.1:8580": hub.url.removeprefix("http://"),
            "10.0.0.0/8": "127.0.0.0/8",
            "tether audit --token": "sleep 1.5; tether audit --token",  # reads show at their interval's end
        })
    finally:
        hub.stop()
    texts = dict(zip((sh.splitlines()[0] for sh, _ in pairs), shown, strict=True))
    assert "error" not in everything.lower(), everything
    publish = next(v for k, v in texts.items() if "tether publish" in k)
    assert "published 3 files" in everything and "/files/builds/android/123/" in everything, everything
    assert "<a href=\"img/\">img/</a>" in publish, publish  # the curl browse: the build's index
    audit = next(v for k, v in texts.items() if k.startswith("tether audit"))
    assert "publish.write" in audit and "allowed" in audit, audit
    assert "publish.read" in audit and "space:builds/android/123" in audit, audit  # the curl browse


def test_the_venv_fallback_updates_the_package_index_first(tmp_path):
    """`make`'s python3-venv fallback runs apt-get update before apt-get install (on a fresh
    machine the index is empty and the install fails without it)."""
    r = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={tmp_path / 'v'}", f"{tmp_path / 'v'}/bin/python"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.search(r"apt-get update\b.*&& apt-get install -y -qq python3-venv", r.stdout), r.stdout


def test_readme_names_every_package_make_test_installs():
    """'What `make test` installs' lists exactly the Debian packages scripts/install-system-deps
    may install (those of --bench included, as the README says)."""
    script = (ROOT / "scripts" / "install-system-deps").read_text()
    installed = set()
    for names in re.findall(r"need\+=\(([^)]*)\)", script):
        installed.update(names.split())
    readme = (ROOT / "README.md").read_text()
    said = readme.split("### What `make test` installs", 1)[1].split("\n### ", 1)[0]
    said = said.split("Debian packages", 1)[1].split("The list, with why", 1)[0]
    named = set(re.findall(r"`([a-z0-9][a-z0-9.+-]*)`", said)) - {"make", "make test", "make bench", "sudo", "apt-get"}
    assert installed - named == set(), "install-system-deps installs these, the README does not say so"
    assert named - installed == set(), "the README names these, install-system-deps does not install them"


def test_make_run_takes_the_hubs_env_vars_when_no_make_variable_is_given():
    """`TETHER_LISTEN=… make run` serves there (README says so); LISTEN= still wins."""
    def hub_line(*args: str, **env: str) -> str:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith("TETHER_") and k not in ("LISTEN", "DATA", "MAKEFLAGS", "MAKELEVEL")}
        out = subprocess.run(["make", "-n", "run", *args], cwd=ROOT, env={**base, **env}, capture_output=True,
                             text=True, check=True).stdout
        return next(ln for ln in out.splitlines() if "tether hub" in ln)

    assert "--data ./data --listen 127.0.0.1:8580" in hub_line()
    assert "--listen 127.0.0.1:8590" in hub_line(TETHER_LISTEN="127.0.0.1:8590")
    assert "--data /srv/tether" in hub_line(TETHER_DATA_DIR="/srv/tether")
    assert "--listen 127.0.0.1:8591" in hub_line("LISTEN=127.0.0.1:8591", TETHER_LISTEN="127.0.0.1:8590")
    assert "--listen 127.0.0.1:8592" in hub_line(LISTEN="127.0.0.1:8592", TETHER_LISTEN="127.0.0.1:8590")
    assert "TETHER_LISTEN=127.0.0.1:8590 make run" in _quick_start()
