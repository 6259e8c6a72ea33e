"""docs/apps.md's tour runs as shown, as root: its sh blocks, top to bottom, against a hub
with a gateway and real sandboxes, each block's output matching the text block after it
("…" stands for anything). The README's apps section runs as written too, after its
quick start's login, and gives alice a link to her instance and bob none to it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.apps.hubs import PREFIX, clean, gateway_get
from tests.docs.blocks import run_blocks, sh_blocks
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


def test_the_readme_apps_section_runs_as_written(tmp_path):
    readme = (DOCS.parent / "README.md").read_text()
    section = readme.split("### A sandboxed app for every user", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    [(block, _)] = sh_blocks(section)
    login = 'tether login http://127.0.0.1:8580 --token "$(cat data/admin.token)"\n'  # the quick start's
    assert login in readme
    gw = free_port()
    hub = HubProcess(tmp_path / "data", args=["--gateway-listen", f"127.0.0.1:{gw}"],
                     env={"TETHER_APPS_PREFIX": PREFIX}).start()
    try:
        shown, out = run_blocks([(login, ""), (block, "")], tmp_path, {"127.0.0.1:8580": hub.url.removeprefix("http://"),
                                                                      ":8081": f":{gw}"})
        assert "error" not in out.lower(), out
        assert f"demo--alice is running at http://demo--alice.localhost:{gw}/" in out
        assert f"demo--bob is running at http://demo--bob.localhost:{gw}/" in out
        assert "granted tcp:192.0.2.10:5432 to demo--alice" in out
        link = shown[1].strip().splitlines()[-1]
        assert link.startswith(f"http://demo--alice.localhost:{gw}/_tether/signin?ticket="), out
        code, headers, _ = gateway_get(gw, f"demo--alice.localhost:{gw}", link.split(f":{gw}", 1)[1])
        assert code == 303
        cookie = {"Cookie": headers["set-cookie"].split(";", 1)[0]}
        code, _, body = gateway_get(gw, f"demo--alice.localhost:{gw}", "/api/whoami", cookie)
        assert code == 200 and b'"user": "alice"' in body
        assert gateway_get(gw, f"demo--bob.localhost:{gw}", "/api/whoami", cookie)[0] in (401, 403)  # not bob's
    finally:
        hub.stop()
        clean(tmp_path / "data" / "apps" / "sandboxes")
