"""A hub with its SSH server and gateway, and users whose SSH keys and tokens it knows."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.hubproc import HubProcess


def start_forward_hub(tmp: Path, users: tuple[str, ...], env: dict[str, str]) -> dict:
    hub = HubProcess(tmp / "data", listeners=("--ssh-listen", "--gateway-listen"), env=env).start()
    ssh_port, gw_port = hub.ports["--ssh-listen"], hub.ports["--gateway-listen"]
    keys, tokens = {}, {}
    with hub.admin() as c:
        for user in users:
            c.post("/api/v1/users", json={"name": user}).raise_for_status()
            key = tmp / f"{user}_key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            c.post(f"/api/v1/users/{user}/keys", json={"public_key": key.with_suffix(".pub").read_text()}
                   ).raise_for_status()
            keys[user] = key
            tokens[user] = c.post("/api/v1/tokens", json={"for_user": user, "expires": "1h"}).json()["token"]
    host_pub = (hub.data_dir / "ssh_host_ed25519_key.pub").read_text().split()
    known = tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh_port} {host_pub[0]} {host_pub[1]}\n")
    return {"hub": hub, "tmp": tmp, "ssh_port": ssh_port, "gw_port": gw_port, "keys": keys, "tokens": tokens,
            "known": known}


ROOT = Path(__file__).resolve().parents[2]


def start_app(sock: Path, timeout: float = 20) -> subprocess.Popen:
    """The gateway tests' app (tests/gateway/app.py) under uvicorn on UNIX socket ``sock``,
    once it accepts connections; the caller stops it by its pid."""
    import socket
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--uds", str(sock), "--log-level", "warning",
                             "tests.gateway.app:app"], cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the test app did not accept connections on {sock}")
