"""`tether job run` killed (a job timeout, `kill PID`): the signal goes on to its command,
the node is reported failed with it, and the others' waits end at once naming it. Before,
SIGTERM ended `tether job run` alone: the script ran on with the node's token, the node
stayed "joined", and the others waited for it until --lost-after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time



def test_sigterm_to_job_run_ends_the_command_and_reports_the_node_failed(scheduler, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "LAVA_"))}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"), TETHER_HUB=scheduler.hub.url)
    job = [sys.executable, "-m", "tether", "job"]
    made = subprocess.run([*job, "create", f"sig-{time.monotonic_ns()}", "--space", scheduler.space, "--role",
                           "server=1", "--role", "client=1", "--json"], env={**env, "TETHER_TOKEN": scheduler.token},
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    nodes = json.loads(made.stdout)
    script = "echo started > started; sleep 3; echo on > continued"
    runner = subprocess.Popen([*job, "run", "--", "sh", "-c", script], cwd=tmp_path, text=True,
                              env={**env, "TETHER_TOKEN": nodes[0]["token"]}, stderr=subprocess.PIPE)
    waiter = None
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert runner.poll() is None and time.monotonic() < deadline, runner.stderr.read()
            time.sleep(0.05)
        waiter = subprocess.Popen([*job, "sync", "together", "--timeout", "60s"], text=True, stderr=subprocess.PIPE,
                                  env={**env, "TETHER_TOKEN": nodes[1]["token"]}, cwd=tmp_path)
        time.sleep(0.5)  # the client now waits at the barrier for the server
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(10) == 128 + signal.SIGTERM, runner.stderr.read()
        assert waiter.wait(10) == 1
        err = waiter.stderr.read()
        assert nodes[0]["node"] in err and "killed by signal 15" in err, err
    finally:
        for p in (runner, waiter):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    with scheduler.client() as c:
        state = {n["node"]: (n["state"], n["reason"]) for n in c.get(f"/api/v1/jobs/{nodes[0]['group']}").json()["nodes"]}
    assert state[nodes[0]["node"]][0] == "failed" and "killed by signal 15" in state[nodes[0]["node"]][1], state
    time.sleep(3.5)
    assert not (tmp_path / "continued").exists(), "the script ran on after its node was killed"

