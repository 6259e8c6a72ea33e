"""The issue's "done when": a scheduler creates a server and three clients; four
processes, each with only its own token, run a LAVA-style script through the
installed lava-* helpers; `tether job status` shows each step; killing a client
mid-way makes the others' next wait fail at once, naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.hubproc import free_port

SERVER = """
set -e
mkdir -p www && echo "payload from the server" > www/file.txt
python3 -m http.server {port} --bind 127.0.0.1 --directory www >/dev/null 2>&1 &
HTTP=$!
trap 'kill $HTTP' EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), 1)" 2>/dev/null; do sleep 0.1; done
lava-network broadcast lo
lava-send server-ready port={port}
lava-sync clients-ready
lava-sync fetched
lava-sync finished
"""

CLIENT = """
set -e
echo $$ > pid
lava-network collect lo server
lava-wait server-ready
SERVER=$(lava-group server)
IP=$(lava-network query "$SERVER" ipv4)
PORT=$(grep ":port=" "$LAVA_MULTI_NODE_CACHE" | cut -d= -f2)
lava-sync clients-ready
python3 -c "import urllib.request, sys; sys.stdout.write(urllib.request.urlopen('http://$IP:$PORT/file.txt').read().decode())" > fetched.txt
lava-sync fetched
if [ -e ../hang-{node} ]; then touch hanging; exec sleep 300; fi
lava-sync finished
"""


def start_nodes(scheduler, tmp_path: Path, hang: int | None = None):
    """Create the group and start its four nodes; node number ``hang`` stops after the fetch."""
    env0 = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "LAVA_"))}
    env0.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"), TETHER_HUB=scheduler.hub.url)
    tether = [sys.executable, "-m", "tether", "job"]
    out = subprocess.run([*tether, "create", f"dw-{time.monotonic_ns()}", "--space", scheduler.space,
                          "--role", "server=1", "--role", "client=3", "--json"],
                         env={**env0, "TETHER_TOKEN": scheduler.token}, capture_output=True, text=True, check=True)
    nodes = json.loads(out.stdout)
    bin_dir = tmp_path / "lava-bin"
    subprocess.run([*tether, "install-helpers", str(bin_dir)], env=env0, check=True, capture_output=True)
    port = free_port()
    procs = {}
    for n in nodes:
        work = tmp_path / n["node"]
        work.mkdir()
        script = (SERVER if n["role"] == "server" else CLIENT).format(port=port, node=n["node"])
        (work / "test.sh").write_text(script)
        if hang is not None and n is nodes[hang]:
            (tmp_path / f"hang-{n['node']}").touch()
        env = {**env0, "TETHER_TOKEN": n["token"], "PATH": f"{bin_dir}:{env0['PATH']}",
               "LAVA_MULTI_NODE_CACHE": str(work / "cache.txt"),
               "LAVA_MULTI_NODE_NETWORK_CACHE": str(work / "net-cache.txt")}
        procs[n["node"]] = subprocess.Popen([*tether, "run", "--", "sh", "test.sh"], cwd=work, env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return nodes, procs


def status(scheduler, group: str) -> dict:
    with scheduler.client() as c:
        return c.get(f"/api/v1/jobs/{group}").json()


def test_server_and_three_clients_run_a_lava_script(scheduler, tmp_path):
    nodes, procs = start_nodes(scheduler, tmp_path)
    try:
        codes = {name: p.wait(120) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    errors = {name: p.stderr.read() for name, p in procs.items()}
    assert codes == dict.fromkeys(procs, 0), errors
    for n in nodes[1:]:
        assert (tmp_path / n["node"] / "fetched.txt").read_text() == "payload from the server\n"
    s = status(scheduler, nodes[0]["group"])
    assert [n["state"] for n in s["nodes"]] == ["done"] * 4
    sent = {m["id"]: sorted(m["sent"]) for m in s["messages"]}
    assert sent == {"server-ready": [nodes[0]["node"]], "network_info": [nodes[0]["node"]]}
    everyone = sorted(n["node"] for n in nodes)
    assert {b["id"]: (b["arrived"], b["awaited"]) for b in s["barriers"]} == {
        b: (everyone, []) for b in ("clients-ready", "fetched", "finished")}


def test_killing_a_client_fails_the_others_next_wait_at_once_naming_it(scheduler, tmp_path):
    nodes, procs = start_nodes(scheduler, tmp_path, hang=2)
    victim = nodes[2]["node"]
    try:
        hanging = tmp_path / victim / "hanging"
        deadline = time.monotonic() + 90
        while not hanging.exists():
            ended = {n: p for n, p in procs.items() if p.poll() is not None}
            assert not ended and time.monotonic() < deadline, {n: (p.returncode, p.stderr.read()) for n, p in
                                                               ended.items()}
            time.sleep(0.1)
        time.sleep(1)  # the others now wait at "finished"
        pid = int((tmp_path / victim / "pid").read_text())
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # the test script dies; `tether job run` reports it
        codes = {name: p.wait(30) for name, p in procs.items()}
        took = time.monotonic() - killed_at
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = {name: p.stderr.read() for name, p in procs.items()}
    assert codes[victim] == 128 + signal.SIGKILL
    for name, code in codes.items():
        if name != victim:
            assert code == 1 and victim in errors[name] and "killed by signal 9" in errors[name], errors[name]
    assert took < 10
    s = status(scheduler, nodes[0]["group"])
    state = {n["node"]: (n["state"], n["reason"]) for n in s["nodes"]}
    assert state[victim][0] == "failed" and "killed by signal 9" in state[victim][1]
    finished = next(b for b in s["barriers"] if b["id"] == "finished")
    assert finished["awaited"] == [victim]
