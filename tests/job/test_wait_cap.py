"""A hub replica holds at most ``job_max_waits`` long-polls: past it a wait is answered at
once (503, Retry-After, problem+json saying what to do), and ``tether job wait`` waits as
told and asks again until it is held and completes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

from tests.job.conftest import Scheduler, node_client
from tests.job.test_api import path, wait

CAP = 3


def _metric(hub, name: str) -> float:
    with hub.client() as c:
        text = c.get("/metrics").text
    found = re.findall(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(found[0]) if found else 0.0


def _refused(hub) -> float:
    with hub.client() as c:
        text = c.get("/metrics").text
    return sum(float(v) for v in re.findall(
        r'^tether_http_requests_total\{method="POST",route="/api/v1/jobs/\{group\}/nodes/\{node\}/wait",'
        r'status="503"\} ([0-9.e+]+)$', text, re.M))


def _until(what, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_waits_past_the_cap_are_refused_with_retry_after_and_the_cli_asks_again(start_hub, tmp_path):
    hub = start_hub(args=["--job-max-waits", str(CAP)])
    scheduler = Scheduler(hub)
    g = scheduler.create(roles={"r": CAP + 2})
    sender, late, *waiters = g["nodes"]
    answers: list = []
    threads = [threading.Thread(target=lambda n=n: answers.append(wait(hub, g, n, "go", timeout=20)))
               for n in waiters]
    for t in threads:
        t.start()
    _until(lambda: _metric(hub, "tether_job_waits_held") == CAP)

    # one more: refused at once, saying when to ask again and why
    started = time.monotonic()
    r = wait(hub, g, late, "go", timeout=20)
    assert time.monotonic() - started < 5
    assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:tether:problem:too-many-waits"
    assert "job_max_waits" in problem["detail"] and "ask again" in problem["detail"]

    # `tether job wait` started past the cap keeps asking (each time refused) ...
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "LAVA_"))}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"), TETHER_HUB=hub.url,
               TETHER_TOKEN=late["token"], LAVA_MULTI_NODE_CACHE=str(tmp_path / "cache.txt"))
    cli = subprocess.Popen([sys.executable, "-m", "tether", "job", "wait", "go", "--timeout", "60s"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        refused = _refused(hub)
        _until(lambda: _refused(hub) >= refused + 1)
        first = time.monotonic()
        _until(lambda: _refused(hub) >= refused + 2)  # asked again after Retry-After, refused again
        assert time.monotonic() - first > 0.8  # it waited the second Retry-After said, no sooner
        assert cli.poll() is None, cli.stderr.read()
        # ... a send releases the held waits, and the CLI's next ask is under the cap: done
        with node_client(hub, sender) as c:
            assert c.post(path(g, sender, "send"), json={"id": "go", "data": {"k": "v"}}).status_code == 200
        for t in threads:
            t.join(20)
        assert [a.json()["state"] for a in answers] == ["done"] * CAP
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(5)
    assert cli.returncode == 0, err
    assert (tmp_path / "cache.txt").read_text() == f"{sender['node']}:k=v\n"
    assert _metric(hub, "tether_job_waits_held") == 0
