"""The hub's own SSH server (`tether hub --ssh-listen`): log sync with no system sshd.

Real parts: a hub process serving HTTP and SSH, the system's OpenSSH client, keys
from ssh-keygen registered through the API."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.hubproc import HubProcess, free_port


@pytest.fixture
def ssh_hub(tmp_path):
    (tmp_path / "hub").mkdir()
    port = free_port()
    hub = HubProcess(tmp_path / "hub" / "data", args=["--ssh-listen", f"127.0.0.1:{port}"]).start()
    hub.ssh_port = port
    keys = {}
    with hub.admin() as c:
        c.post("/api/v1/spaces", json={"name": "shared"}).raise_for_status()
        for user, level in (("user1", "write"), ("user2", "write"), ("user3", None)):
            c.post("/api/v1/users", json={"name": user}).raise_for_status()
            if level:
                c.put(f"/api/v1/spaces/shared/grants/{user}", json={"level": level}).raise_for_status()
            key = tmp_path / f"{user}_key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            c.post(f"/api/v1/users/{user}/keys", json={"public_key": (tmp_path / f"{user}_key.pub").read_text()}
                   ).raise_for_status()
            keys[user] = key
    host_pub = (hub.data_dir / "ssh_host_ed25519_key.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    yield hub, keys, known, tmp_path
    hub.stop()


def run_as(ctx, user, *args):
    hub, keys, known, tmp = ctx
    prefix = ["ssh", "-i", str(keys[user]), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known}",
              "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    env = {**os.environ, "TETHER_SSH": shlex.join(prefix), "TETHER_LOG_DB": str(tmp / f"{user}.db"),
           "TETHER_LOG_AUTHOR": user, "HOME": str(tmp)}
    env.pop("TETHER_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "tether", *args], capture_output=True, text=True, env=env,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_log_sync_over_the_hubs_own_ssh_server(ssh_hub):
    hub = ssh_hub[0]
    url = f"ssh://anyname@127.0.0.1:{hub.ssh_port}/shared"  # the key decides the user, not the name
    for u in ("user1", "user2", "user3"):
        assert run_as(ssh_hub, u, "log", "remote", "add", "origin", url).returncode == 0
        assert run_as(ssh_hub, u, "log", "add", f"from {u}").returncode == 0
    r = run_as(ssh_hub, "user3", "log", "push")
    assert r.returncode == 4 and "user3" in r.stderr, r.stderr
    r = run_as(ssh_hub, "user1", "log", "push", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["pushed"] == 1, r.stderr
    r = run_as(ssh_hub, "user2", "log", "sync", "--json")
    assert r.returncode == 0, r.stderr
    assert (json.loads(r.stdout)["pushed"], json.loads(r.stdout)["pulled"]) == (1, 1)
    with hub.admin() as c:
        assert c.get("/api/v1/log/shared").json()["records"] == 2
        denied = c.get("/api/v1/audit", params={"user": "user3"}).json()["records"]
    assert denied and denied[-1]["outcome"] == "denied"


def test_no_shell_and_no_unknown_keys(ssh_hub):
    hub, keys, known, tmp = ssh_hub
    base = ["ssh", "-p", str(hub.ssh_port), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
    r = subprocess.run([*base, "-i", str(keys["user1"]), "x@127.0.0.1"], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "no shell" in r.stderr
    stranger = tmp / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    r = subprocess.run([*base, "-i", str(stranger), "x@127.0.0.1", "tether-log", "pull", "shared"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 255 and "Permission denied" in r.stderr
