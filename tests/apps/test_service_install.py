"""`--install` runs once per version, in a sandbox, before any instance: what it writes to
/data is every instance's /app/.install, read-only; a failing install fails the spawn with
its output, and the instance does not run."""

from __future__ import annotations

import json

import pytest

from tests.apps.hubs import AppsHub, clean, gateway_get

INSTALL = ("import os, pathlib; pathlib.Path('/data/lib').mkdir(); "
           "pathlib.Path('/data/lib/greeting.txt').write_text('installed by ' + str(os.getuid())); "
           "os.symlink('/etc', '/data/etc-link')")
APP = """
import http.server, os, socket, pathlib
class H(http.server.BaseHTTPRequestHandler):
    def address_string(self):
        return 'gateway'

    def do_GET(self):
        try:
            open('/app/.install/lib/new', 'w')
            writable = True
        except OSError:
            writable = False
        try:
            body = (pathlib.Path('/app/.install/lib/greeting.txt').read_text() + ' writable=' + str(writable)).encode()
        except OSError as exc:
            body = repr(exc).encode()
        self.send_response(200); self.send_header('content-length', str(len(body))); self.end_headers()
        self.wfile.write(body)
class S(http.server.HTTPServer):
    address_family = socket.AF_UNIX
    def server_bind(self):
        self.socket.bind(self.server_address); self.server_name, self.server_port = 'app', 0
S(os.environ['TETHER_SOCKET'], H).serve_forever()
"""


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    w = AppsHub(tmp_path_factory.mktemp("appinst")).start().setup({"alice": "read", "olga": "admin"})
    yield w
    try:
        w.stop()
    finally:
        clean(w.sandbox_root)


def test_install_output_is_every_instances_read_only(w):
    src = w.tmp / "inst"
    src.mkdir()
    (src / "app.py").write_text(APP)
    r = w.cli("olga", "register", "inst", "--space", "apps", "--dir", str(src), "--install", "python3", "-c",
              INSTALL, "--cmd", "python3", "app.py")
    assert r.returncode == 0, r.stderr
    bodies = []
    for user in ("alice", "olga"):
        r = w.cli(user, "spawn", "inst", "--json")
        assert r.returncode == 0, r.stderr
        code, _, body = gateway_get(w.gw_port, f"inst--{user}.localhost:{w.gw_port}", "/",
                                    {"Authorization": f"Bearer {w.tokens[user]}"})
        assert code == 200 and body.startswith(b"installed by ") and body.endswith(b"writable=False"), body
        bodies.append(body)
    assert bodies[0] == bodies[1]  # installed once (by the first spawn's uid), read by both
    trees = list((w.hub.data_dir / "apps" / "trees").iterdir())
    assert len(trees) == 1 and (trees[0] / ".install" / "etc-link").is_symlink()
    import os

    assert os.stat("/etc/shadow").st_mode & 0o777 in (0o640, 0o600, 0o000)  # the link was not followed


def test_a_failing_install_fails_the_spawn_with_its_output(w):
    src = w.tmp / "broken"
    src.mkdir()
    (src / "app.py").write_text(APP)
    r = w.cli("olga", "register", "broken", "--space", "apps", "--dir", str(src), "--install", "python3", "-c",
              "import sys; print('no network here'); sys.exit(7)", "--cmd", "python3", "app.py")
    assert r.returncode == 0, r.stderr
    r = w.cli("alice", "spawn", "broken")
    assert r.returncode == 1 and "exited 7" in r.stderr and "no network here" in r.stderr, r.stderr
    st = json.loads(w.cli("alice", "status", "broken", "--json").stdout)
    assert st["state"] == "failed" and "exited 7" in st["reason"]
    code, _, body = gateway_get(w.gw_port, f"broken--alice.localhost:{w.gw_port}", "/",
                                {"Authorization": f"Bearer {w.tokens['alice']}"})
    assert code == 503 and b"did not start" in body  # and the request does not run the install again
