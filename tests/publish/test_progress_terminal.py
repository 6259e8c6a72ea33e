"""The progress bar: drawn on a terminal, never in a log.

The real ``tether publish`` runs with its stderr on a pseudo-terminal (as in a shell)
and once on a pipe (as in a CI log), against a real hub."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

TETHER = str(Path(sys.executable).with_name("tether"))


def _env(hub, tmp_path: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "NO_COLOR", "FORCE_COLOR"))}
    env.update({"TETHER_HUB": hub.url, "TETHER_TOKEN": token, "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "HOME": str(tmp_path), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"})
    return env


def _tree(root: Path) -> int:
    (root / "out").mkdir(parents=True)
    size = 0
    for i in range(5):
        data = os.urandom(300_000 + i)
        (root / f"out/f{i}.bin").write_bytes(data)
        size += len(data)
    return size


def _run_on_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, bytes, str]:
    """Run with stderr on a pseudo-terminal; exit code, what the terminal showed, stdout."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=follower)
    finally:
        os.close(follower)
    shown = bytearray()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the last holder of the terminal is gone
                break
            if not chunk:
                break
            shown += chunk
        out = proc.stdout.read().decode()
        return proc.wait(timeout=30), bytes(shown), out
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_terminal_shows_a_progress_bar_for_hashing_and_uploading(hub, tmp_path):
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "write"})
    size = _tree(tmp_path / "w")
    code, shown, out = _run_on_terminal([TETHER, "publish", "--type", "ci", "--space", space, "1", "out/**"],
                                        _env(hub, tmp_path, token), tmp_path / "w")
    text = shown.decode("utf-8", "replace")
    assert code == 0, text
    assert out == ""  # the bar and the summary go to stderr: stdout stays for --json
    assert "hashing" in text and "uploading" in text, text
    assert "━" in text, text  # the bar itself
    total = f"{size / 1e6:.1f}"  # rich shows the total in MB (decimal units)
    assert total in text, text
    assert "\x1b[" in text  # drawn and redrawn in place
    assert "published 5 files" in text and "sent 1.5 MB" in text, text


def test_a_log_gets_the_summary_line_alone(hub, tmp_path):
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "write"})
    _tree(tmp_path / "w")
    r = subprocess.run([TETHER, "publish", "--type", "ci", "--space", space, "1", "out/**"],
                       env=_env(hub, tmp_path, token), cwd=tmp_path / "w", capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("published 5 files"), r.stderr
    assert "\x1b" not in r.stderr and "━" not in r.stderr and "\r" not in r.stderr
