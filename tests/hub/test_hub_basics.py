"""The hub as a server: health, OpenAPI, metrics, bootstrap, problem+json errors."""

from __future__ import annotations

import stat

import pytest

import httpx

from tests.hubproc import HubProcess

PROBLEM = "application/problem+json"


def test_health_openapi_metrics(hub):
    with hub.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        spec = c.get("/api/v1/openapi.json").json()
        assert "/api/v1/tokens" in spec["paths"] and "/api/v1/whoami" in spec["paths"]
        c.get("/api/v1/whoami")  # one refused request, counted
        metrics = c.get("/metrics").text
    assert "tether_http_requests_total" in metrics
    assert 'route="/api/v1/whoami"' in metrics
    assert "tether_auth_refusals_total" in metrics


def test_bootstrap_writes_private_admin_token(hub):
    token_file = hub.data_dir / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(hub.data_dir.stat().st_mode) == 0o700
    if hub.backend == "sqlite":  # the database and its WAL are the hub's alone too
        for name in ("tether.db", "tether.db-wal"):
            assert stat.S_IMODE((hub.data_dir / name).stat().st_mode) == 0o600, name
    token = token_file.read_text().strip()
    assert token.startswith("tth_")
    # The secret appears nowhere in what the hub printed.
    assert token not in hub.log_text()
    assert str(token_file) in hub.log_text()
    with hub.admin() as c:
        me = c.get("/api/v1/whoami").json()
    assert me["user"]["name"] == "admin" and me["user"]["admin"] is True
    assert me["token"]["expires_at"] is None


def test_restart_keeps_identity_and_makes_no_second_token(start_hub):
    h = start_hub()
    first = h.admin_token
    h.stop()
    h2 = HubProcess(h.data_dir).start()
    try:
        assert h2.admin_token == first
        assert "created user 'admin'" not in h2.log_text().split("Finished server process")[-1]
        with h2.admin() as c:
            assert c.get("/api/v1/whoami").status_code == 200
    finally:
        h2.stop()


def _problem(r: httpx.Response, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["type"] == f"urn:tether:problem:{slug}"
    assert body["status"] == status and body["detail"]
    return body


def test_missing_and_malformed_tokens_are_401(hub):
    with hub.client() as c:
        r = c.get("/api/v1/whoami")
        _problem(r, 401, "unauthenticated")
        assert r.headers["www-authenticate"].startswith("Bearer")
        _problem(c.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"}), 401, "invalid-token")
        _problem(c.get("/api/v1/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "unauthenticated")
        forged = "tth_0123456789abcdef_" + "A" * 43
        body = _problem(c.get("/api/v1/whoami", headers={"Authorization": f"Bearer {forged}"}), 401, "invalid-token")
        assert forged not in str(body)


def test_error_statuses_are_problems_never_500(hub):
    with hub.admin() as c:
        _problem(c.get("/api/v1/no-such-thing"), 404, "not-found")
        _problem(c.post("/api/v1/users", content=b"{not json", headers={"content-type": "application/json"}), 422, "invalid-request")
        body = _problem(c.post("/api/v1/users", json={"name": "x", "surprise": 1}), 422, "invalid-request")
        assert "surprise" in body["detail"]
        _problem(c.post("/api/v1/users", json={"name": "Bad Name!"}), 400, "invalid-name")
        _problem(c.post("/api/v1/users", json={"name": "x", "kind": "robot"}), 422, "invalid-request")
        _problem(c.patch("/api/v1/users"), 405, "method-not-allowed")
        _problem(c.post("/api/v1/users", content=b"x" * (2 << 20), headers={"content-type": "application/json"}), 413, "request-too-large")
        _problem(c.get("/api/v1/tokens/not-a-token-id"), 400, "bad-request")
        _problem(c.get("/api/v1/tokens/0123456789abcdef"), 404, "not-found")
        _problem(c.get("/api/v1/users/nobody-here"), 404, "not-found")
        _problem(c.put("/api/v1/spaces/nospace/grants/admin", json={"level": "read"}), 404, "not-found")
        _problem(c.get("/api/v1/audit", params={"since": "yesterday-ish"}), 400, "bad-request")
        _problem(c.get("/api/v1/audit", params={"limit": 0}), 422, "invalid-request")
        for weird in ["%00", "..%2F..%2Fetc", "a" * 5000, "%F0%9F%92%A9"]:
            r = c.get(f"/api/v1/users/{weird}")
            assert r.status_code in (400, 404, 422), (weird, r.status_code)
            assert r.headers["content-type"].startswith(PROBLEM)


def test_conflicts_are_409_and_change_nothing(hub):
    with hub.admin() as c:
        name = f"dup{hub.port}"
        assert c.post("/api/v1/users", json={"name": name, "kind": "service"}).status_code == 201
        _problem(c.post("/api/v1/users", json={"name": name, "kind": "person", "admin": True}), 409, "conflict")
        user = c.get(f"/api/v1/users/{name}").json()
        assert user["kind"] == "service" and user["admin"] is False


def test_failed_authentication_is_rate_limited_per_source(start_hub):
    h = start_hub(env={"TETHER_AUTH_FAILURES_PER_MINUTE": "3"})
    bad = "tth_0123456789abcdef_" + "B" * 43
    with h.client(bad) as c:
        statuses = [c.get("/api/v1/whoami").status_code for _ in range(5)]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429]
    with h.client(bad) as c:
        r = c.get("/api/v1/whoami")
    _problem(r, 429, "too-many-failures")
    assert int(r.headers["retry-after"]) > 0


def test_tls(start_hub, tmp_path):
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    h = HubProcess(tmp_path / "tlshub" / "data", args=["--tls-cert", str(cert), "--tls-key", str(key)])
    (tmp_path / "tlshub").mkdir()
    import ssl

    h.verify = ssl.create_default_context(cafile=str(cert))
    h.start()
    try:
        assert h.url.startswith("https://")
        with h.admin() as c:
            assert c.get("/api/v1/whoami").json()["user"]["name"] == "admin"
        # Plain HTTP to the TLS port does not work.
        try:
            httpx.get(h.url.replace("https://", "http://") + "/healthz", timeout=2)
            raise AssertionError("plain HTTP should not be served on the TLS port")
        except httpx.HTTPError:
            pass
    finally:
        h.stop()


def test_recover_admin_token(start_hub):
    import subprocess
    import sys

    h = start_hub()
    old = h.admin_token
    h.stop()
    argv = [sys.executable, "-m", "tether", "hub", "--data", str(h.data_dir)]
    r = subprocess.run(argv + ["--recover-admin-token", "nobody"], capture_output=True, text=True, env=h.env)
    assert r.returncode == 1 and "not an enabled hub admin" in r.stderr
    assert h.admin_token == old
    r = subprocess.run(argv + ["--recover-admin-token", "admin"], capture_output=True, text=True, env=h.env)
    assert r.returncode == 0, r.stderr
    new = h.admin_token
    assert new != old and new not in r.stderr + r.stdout
    assert stat.S_IMODE((h.data_dir / "admin.token").stat().st_mode) == 0o600
    h2 = HubProcess(h.data_dir).start()
    try:
        for t in (old, new):  # the old one is not revoked by recovery
            with h2.client(t) as c:
                assert c.get("/api/v1/whoami").json()["user"]["name"] == "admin"
    finally:
        h2.stop()


def test_a_gc_grace_that_is_not_a_duration_stops_the_hub_at_start(tmp_path):
    """Refused when the hub starts (exit 2, naming the setting), not with a 500 at the first gc."""
    import os
    import subprocess
    import sys

    for bad in ("0s", "soon", "-1h"):
        env = {**os.environ, "TETHER_GC_GRACE": bad}
        r = subprocess.run([sys.executable, "-m", "tether", "hub", "--data", str(tmp_path / "data"),
                            "--listen", "127.0.0.1:0"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 2 and "gc_grace must be a positive duration" in r.stderr, (bad, r.stderr)
    assert not (tmp_path / "data" / "tether.db").exists()  # nothing created


@pytest.mark.parametrize("flag", ["--listen", "--ssh-listen", "--gateway-listen", "--lava-listen"])
def test_a_taken_port_is_a_clear_error_before_anything_is_announced(tmp_path, flag):
    """The hub binds before it says it serves: a port another program holds exits 3 naming
    the address and the flag, with no "hub serving" line, no admin-token path, no file."""
    import os
    import socket
    import subprocess
    import sys

    from tests.hubproc import free_port

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = f"127.0.0.1:{holder.getsockname()[1]}"
    listen = taken if flag == "--listen" else f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "tether", "hub", "--data", str(tmp_path / "data"), "--listen", listen]
    if flag != "--listen":
        argv += [flag, taken]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=os.environ)
    finally:
        holder.close()
    assert r.returncode == 3, r.stderr
    assert f"cannot listen on {taken} ({flag}): the port is taken" in r.stderr
    assert "serving" not in r.stderr + r.stdout and "admin" not in r.stderr + r.stdout
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists()  # nothing written either
