"""docs/apps.md's tour runs as shown, as root: its sh blocks, top to bottom, against a hub
with a gateway and real sandboxes, each block's output matching the text block after it
("…" stands for anything)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.apps.hubs import PREFIX, clean
from tests.docs.blocks import run_blocks
from tests.hubproc import HubProcess, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _matches(expected: str, got: str) -> bool:
    want = expected.strip("\n").splitlines()
    have = got.strip("\n").splitlines()
    return len(want) == len(have) and all(
        re.fullmatch(".*".join(map(re.escape, w.split("…"))), h) for w, h in zip(want, have))


def test_the_apps_tour_runs_as_shown(tmp_path):
    tour = (DOCS / "apps.md").read_text().split("## The tour", 1)[1].split("\n## ", 1)[0]
    pairs = [(m.group(1), m.group(3)) for m in re.finditer(r"```sh\n(.*?)```(\n\n(?:[^`]*\n\n)?```text\n(.*?)```)?",
                                                           tour, re.S)]
    assert pairs[0][0].startswith("make run") and len(pairs) >= 8, "the tour starts the hub with make run"
    gw = free_port()
    hub = HubProcess(tmp_path / "data", args=["--gateway-listen", f"127.0.0.1:{gw}"],
                     env={"TETHER_APPS_PREFIX": PREFIX}).start()
    try:
        shown, out = run_blocks(pairs[1:], tmp_path, {"127.0.0.1:8580": hub.url.removeprefix("http://"),
                                                      ":8081": f":{gw}"})
    finally:
        hub.stop()
        clean(tmp_path / "data" / "apps" / "sandboxes")
    for i, ((sh, expected), got) in enumerate(zip(pairs[1:], shown, strict=True), start=1):
        if expected is None:
            continue
        got = got.split("\n", 1)[1].replace(f":{gw}", ":8081")
        assert _matches(expected, got), f"block {i} of the tour:\n{sh}\nshould show:\n{expected}\nshowed:\n{got}\n{out}"
