"""docs/signal.md's tour runs as written from `make run`'s hub: its embedded NATS, `tether login`,
`signal init`, `peer add`, a waiter that shows its command's output and a timeout that says so.
Nothing is installed or edited by hand; every line of each text block is in the block's output."""

from __future__ import annotations

from pathlib import Path

from tests.docs.blocks import exit_lines, run_blocks, sh_blocks
from tests.hubproc import HubProcess

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_signal_tour_runs_from_make_run(tmp_path):
    text = (DOCS / "signal.md").read_text()
    tour = text[text.index("## Five-minute tour"):text.index("### Without a hub")]
    pairs = sh_blocks(tour)
    assert len(pairs) >= 4, "docs/signal.md lost its tour"
    hub = HubProcess(tmp_path / "data").start()  # what `make run` starts: defaults, data in ./data
    try:
        assert "NATS for signal on nats://127.0.0.1:" in hub.log_text()
        # `export PATH="$PWD/.venv/bin:$PATH"`: the test's own venv is on PATH already
        shown, out = run_blocks(pairs, tmp_path, {"127.0.0.1:8580": hub.url.removeprefix("http://")})
    finally:
        hub.stop()
    for i, ((sh, expected), got) in enumerate(zip(pairs, shown, strict=True)):
        assert exit_lines(got) == exit_lines(expected), (i, sh, got, out)
        for line in expected.splitlines():
            if line.strip():
                where = out if line.startswith("tether: ") else got  # messages go to stderr
                assert line.rstrip() in where, f"block {i}: {line!r} not in\n{got}\n{out}"
    assert (tmp_path / "downloader.conf").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "downloader.conf.creds").stat().st_mode & 0o777 == 0o600
