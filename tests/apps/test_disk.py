"""Each instance's /data is a filesystem of --disk bytes: an app that writes past it gets
ENOSPC (and keeps serving), the host's filesystem holds only the sparse image, the data
outlives a restart, and removing the instance leaves no mount, loop device or image."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.apps.hubs import AppsHub, clean, gateway_get, wait_for

FILL = """
import os, runpy
wrote = 0
try:
    with open("/data/fill", "ab") as f:
        while True:
            f.write(b"x" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
            wrote += 1
except OSError as exc:
    print(f"fill: errno={exc.errno} wrote={wrote}MiB", flush=True)
runpy.run_path("/app/app.py", run_name="__main__")  # then serve, as the demo does
"""


@pytest.fixture
def w(tmp_path):
    w = AppsHub(tmp_path).start().setup({"alice": "read", "olga": "admin"})
    src = tmp_path / "filler"
    src.mkdir()
    (src / "app.py").write_text((w.demo_dir() / "app.py").read_text())
    (src / "fill.py").write_text(FILL)
    w.src = src
    yield w
    try:
        w.stop()
    finally:
        clean(w.sandbox_root)


def register(w, *extra):
    return w.cli("olga", "register", "filler", "--space", "apps", "--dir", str(w.src), *extra,
                 "--cmd", "python3", "fill.py")


def mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def test_absurd_sizes_are_refused_and_nothing_is_registered(w):
    for size, why in (("0", "out of range"), ("-1G", "negative"), ("1K", "out of range"), ("2T", "out of range"),
                      ("lots", "--disk")):
        r = register(w, "--disk", size)
        assert r.returncode == 2 and "--disk" in r.stderr and why in r.stderr, (size, r.stderr)
    with w.api("olga") as c:  # the hub refuses it too, whatever the client checked
        r = c.post("/api/v1/apps/filler", json={"space": "apps", "version": "1", "build": "apps/x/1",
                                                "cmd": ["true"], "disk": "0"})
        assert r.status_code == 400 and "--disk" in r.json()["detail"]
    assert json.loads(w.cli("olga", "list", "--apps", "--json").stdout) == []


def test_an_app_writing_past_its_disk_gets_enospc_and_rm_cleans_up(w):
    assert register(w, "--disk", "16M").returncode == 0
    assert w.cli("alice", "spawn", "filler").returncode == 0
    st = json.loads(w.cli("alice", "status", "filler", "--json").stdout)
    assert st["limits"]["disk"] == 16 << 20
    logs = wait_for(lambda: (out := w.cli("alice", "logs", "filler").stdout) and "fill:" in out and out,
                    what="the app to fill its disk")
    assert "errno=28" in logs  # ENOSPC, inside its own filesystem
    assert int(logs.split("wrote=")[1].split("MiB")[0]) <= 16
    root = w.hub.data_dir / "apps"
    image, data = root / "disks" / f"{st['id']}.img", root / "data" / st["id"]
    assert f" {data} " in mounts()
    assert image.stat().st_size == 16 << 20 and image.stat().st_blocks * 512 <= 17 << 20  # all the host gave
    assert image.stat().st_mode & 0o777 == 0o600
    # the app still serves, and the hub with it
    code, _, body = gateway_get(w.gw_port, f"filler--alice.localhost:{w.gw_port}", "/api/whoami",
                                {"Authorization": f"Bearer {w.tokens['alice']}"})
    assert code == 200 and json.loads(body)["user"] == "alice"
    # a restart keeps /data (the same filesystem, still full: nothing more is written)
    assert w.cli("alice", "restart", "filler").returncode == 0
    wait_for(lambda: "errno=28 wrote=0MiB" in w.cli("alice", "logs", "filler").stdout,
             what="the restarted app to find its disk full")
    # removed: no mount, no loop device, no image, no data directory
    r = w.cli("alice", "rm", "filler")
    assert r.returncode == 0, r.stderr
    assert f" {data} " not in mounts() and not image.exists() and not data.exists()
    assert str(image) not in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
