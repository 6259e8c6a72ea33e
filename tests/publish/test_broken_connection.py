"""A connection that breaks in the middle of a large upload: the real ``tether publish``
resumes from what the real hub kept, instead of sending the file again from the start.

A small TCP relay on loopback stands between the two and cuts the first connection
that has carried more than ``cut_after`` bytes towards the hub (both directions closed
at once, as when a builder's network drops); every other connection passes untouched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

TETHER = str(Path(sys.executable).with_name("tether"))
MiB = 1 << 20


class CuttingRelay:
    def __init__(self, upstream: tuple[str, int], cut_after: int):
        self.upstream = upstream
        self.cut_after = cut_after
        self.cuts = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            up = socket.create_connection(self.upstream)
            with self._lock:
                self.connections += 1
            pair = (down, up)
            for src, dst, toward_hub in ((down, up, True), (up, down, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, toward_hub, pair), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, toward_hub: bool, pair) -> None:
        moved = 0
        try:
            while data := src.recv(256 * 1024):
                moved += len(data)
                if toward_hub and moved > self.cut_after:
                    with self._lock:
                        cut = self.cuts == 0
                        self.cuts += cut
                    if cut:
                        for s in pair:
                            s.shutdown(socket.SHUT_RDWR)
                        return
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._listener.close()
        for t in self._threads:
            t.join(timeout=10)


def test_a_large_upload_cut_half_way_resumes_where_the_hub_stopped(hub, tmp_path):
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "write"})
    work = tmp_path / "w"
    (work / "out").mkdir(parents=True)
    big = os.urandom(150 * MiB)  # above 64 MiB: sent in resumable chunks
    (work / "out/disk.img").write_bytes(big)
    host, port = hub.url.removeprefix("http://").rsplit(":", 1)
    relay = CuttingRelay((host, int(port)), cut_after=100 * MiB)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env.update({"TETHER_HUB": f"http://127.0.0.1:{relay.port}", "TETHER_TOKEN": token,
                    "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)})
        r = subprocess.run([TETHER, "publish", "--type", "ci", "--space", space, "--json", "1", "out/**"],
                           env=env, cwd=work, capture_output=True, text=True, timeout=300)
    finally:
        relay.stop()
    assert r.returncode == 0, r.stderr
    assert relay.cuts == 1 and relay.connections >= 2  # it was cut, and the client came back
    summary = json.loads(r.stdout)
    # resumed: what had reached the hub before the cut was not sent again (from the start,
    # it would be about 150 + 100 MiB)
    assert len(big) <= summary["bytes_sent"] < len(big) + 40 * MiB, summary
    with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        got = c.get(f"/files/{space}/ci/1/out/disk.img")
        assert got.status_code == 200 and got.content == big
