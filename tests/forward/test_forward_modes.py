"""The gateway over HTTPS (a wildcard certificate; __Host- Secure cookies) and in path
mode (/apps/USER/NAME/ on one origin: a cookie per route, X-Forwarded-Prefix)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.forward.conftest import start_app, start_forward_hub



def _app(tmp: Path) -> tuple[subprocess.Popen, Path]:
    return start_app(tmp / "app.sock"), tmp / "app.sock"


def _hold(w, user: str, name: str, sock: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["ssh", "-N", "-p", str(w["ssh_port"]), "-i", str(w["keys"][user]), "-o",
                             "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={w['known']}", "-o", "BatchMode=yes",
                             "-o", "ExitOnForwardFailure=yes", "-R", f"/{name}:{sock}", f"{user}@127.0.0.1"],
                            stdin=subprocess.DEVNULL)
    time.sleep(0.2)
    return proc


def _signin(w, user: str, name: str) -> dict:
    with w["hub"].client(w["tokens"][user]) as c:
        deadline = time.monotonic() + 20
        while True:
            r = c.post(f"/api/v1/forward/routes/{name}/signin", json={})
            if r.status_code == 200 or time.monotonic() > deadline:
                return r.json()
            time.sleep(0.1)


def _curl(*args: str) -> tuple[int, dict, str]:
    r = subprocess.run(["curl", "-s", "-D", "-", *args], capture_output=True, text=True, timeout=30)
    head, _, body = r.stdout.partition("\n\n")  # text mode: curl's CRLFs arrive as LFs
    lines = head.split("\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return status, headers, body


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fwdtls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=gw.localhost",
                    "-addext", "subjectAltName=DNS:gw.localhost,DNS:*.gw.localhost"],
                   check=True, capture_output=True)
    w = start_forward_hub(tmp, ("alice",), {"TETHER_GATEWAY_DOMAIN": "gw.localhost",
                                            "TETHER_GATEWAY_TLS_CERT": str(cert), "TETHER_GATEWAY_TLS_KEY": str(key)})
    app, sock = _app(tmp)
    ssh = _hold(w, "alice", "demo", sock)
    w.update(cert=cert)
    yield w
    for p in (ssh, app):
        p.terminate()
        p.wait(10)
    w["hub"].stop()


def test_over_https_the_session_cookie_is_host_bound_and_secure(tls):
    made = _signin(tls, "alice", "demo")
    assert made["url"] == f"https://demo--alice.gw.localhost:{tls['gw_port']}/"
    status, headers, _ = _curl("--cacert", str(tls["cert"]), made["signin"])
    assert status == 303 and "set-cookie" in headers, headers
    cookie = headers["set-cookie"]
    assert cookie.startswith("__Host-tether-gw=") and "Secure" in cookie and "Path=/;" in cookie
    assert "Domain" not in cookie
    status, _, body = _curl("--cacert", str(tls["cert"]), "-H", f"Cookie: {cookie.split(';')[0]}",
                            made["url"] + "echo")
    assert status == 200 and dict(json.loads(body)["headers"])["x-forwarded-proto"] == "https"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fwdpath")
    w = start_forward_hub(tmp, ("alice",), {"TETHER_GATEWAY_PATH_MODE": "true"})
    app, sock = _app(tmp)
    holders = [_hold(w, "alice", name, sock) for name in ("one", "two")]
    yield w
    for p in (*holders, app):
        p.terminate()
        p.wait(10)
    w["hub"].stop()


def test_path_mode_gives_each_route_its_prefix_and_its_own_cookie(paths):
    one, two = _signin(paths, "alice", "one"), _signin(paths, "alice", "two")
    assert one["url"] == f"http://localhost:{paths['gw_port']}/apps/alice/one/"
    jar = paths["tmp"] / "jar"
    for made in (one, two):
        status, headers, _ = _curl("-b", str(jar), "-c", str(jar), made["signin"])
        assert status == 303 and headers["location"] == made["url"].split(str(paths["gw_port"]))[1]
    cookies = [line.split("\t") for line in jar.read_text().splitlines() if "\ttether-gw" in line]
    assert sorted((c[2], c[5]) for c in cookies) == [("/apps/alice/one/", "tether-gw-alice-one"),
                                                     ("/apps/alice/two/", "tether-gw-alice-two")]
    status, _, body = _curl("-b", str(jar), one["url"] + "echo?x=1")
    seen = json.loads(body)
    headers = dict(seen["headers"])
    assert status == 200 and seen["path"] == "/echo" and headers["x-forwarded-prefix"] == "/apps/alice/one"
    assert "tether-gw" not in headers.get("cookie", "")  # neither route's session reaches the app
    status, _, _ = _curl(two["url"] + "echo")
    assert status == 401
