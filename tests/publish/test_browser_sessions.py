"""Private downloads in a browser: sign in once with a token at /login, then browse with
the session cookie. Against a real hub (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import httpx
import pytest

HTML = {"Accept": "text/html,application/xhtml+xml"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def private_build(hub):
    """A space with one private build; a writer's token and a read-only child of it."""
    space = hub.make_space()
    _, writer = hub.make_user(grants={space: "write"})
    data = os.urandom(3000)
    with hub.client(writer) as c:
        c.put(f"/api/v1/blobs/sha256/{sha(data)}", params={"space": space, "type": "ci", "build": "1"},
              content=data).raise_for_status()
        r = c.post(f"/api/v1/publish/{space}/ci/1",
                   json={"files": [{"path": "out/app.bin", "digest": sha(data), "size": len(data)}], "public": False})
        assert r.status_code == 201, r.text
        reader = c.post("/api/v1/tokens", json={"scopes": [f"publish:{space}:read"], "expires": "2h"}).json()
    return hub, space, data, writer, reader


def _browser(hub) -> httpx.Client:
    return httpx.Client(base_url=hub.url, follow_redirects=False, timeout=30)


def _sign_in(b: httpx.Client, token: str, next_path: str) -> httpx.Response:
    return b.post("/login", data={"token": token, "next": next_path})


def test_a_browser_signs_in_with_a_token_and_reads_private_files(private_build):
    hub, space, data, writer, reader = private_build
    file_path = f"/files/{space}/ci/1/out/app.bin"
    with _browser(hub) as b:
        refused = b.get(file_path, headers=HTML)  # a browser gets the form, with the way back
        assert refused.status_code == 401 and "<form method='post' action='/login'>" in refused.text
        assert f"value='{file_path}'" in refused.text
        assert b.get(file_path).status_code == 401 and b.get(file_path).json()["type"].endswith("unauthenticated")
        r = _sign_in(b, reader["token"], file_path)
        assert r.status_code == 303 and r.headers["location"] == file_path, r.text
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("tether_session=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Path=/" in cookie and "Secure" not in cookie  # plain HTTP here
        assert reader["token"] not in cookie  # a session of its own, not the token
        assert 0 < int(cookie.split("Max-Age=")[1].split(";")[0]) <= 2 * 3600  # never past its parent
        got = b.get(file_path)
        assert got.status_code == 200 and got.content == data
        index = b.get(f"/files/{space}/ci/1/out/", headers=HTML)
        assert index.status_code == 200 and "app.bin" in index.text
        # the cookie is for reading files only: the API ignores it
        assert b.get("/api/v1/whoami").status_code == 401
        assert b.post("/api/v1/blobs/missing", json={"space": space, "type": "ci", "build": "2",
                                                     "digests": [sha(b"x")]}).status_code == 401
    with hub.client(writer) as c:  # the session is a child of the token it came from
        tokens = c.get("/api/v1/tokens").json()["tokens"]
        session = [t for t in tokens if t.get("label") == "browser session"]
        assert len(session) == 1 and session[0]["parent"] == reader["id"], tokens
    with hub.admin() as c:  # signing in is in the audit trail, as the mint it is
        trail = c.get("/api/v1/audit", params={"action": "token.mint"}).json()["records"]
        assert any(r["resource"] == f"token:{session[0]['id']}" and r["token_id"] == reader["id"] for r in trail)


def test_revoking_the_token_ends_its_sessions_and_logout_revokes_the_session(private_build):
    hub, space, data, writer, reader = private_build
    file_path = f"/files/{space}/ci/1/out/app.bin"
    with _browser(hub) as b:
        assert _sign_in(b, reader["token"], file_path).status_code == 303
        assert b.get(file_path).status_code == 200
        with hub.client(writer) as c:
            c.delete(f"/api/v1/tokens/{reader['id']}").raise_for_status()
        assert b.get(file_path).status_code == 401
    with _browser(hub) as b:
        assert _sign_in(b, writer, file_path).status_code == 303
        cookie = b.cookies["tether_session"]
        out = b.post("/logout")
        assert out.status_code == 200 and "tether_session=\"\"" in out.headers["set-cookie"]
        assert "tether_session" not in b.cookies
        b.cookies.set("tether_session", cookie)  # the old cookie, kept by someone
        assert b.get(file_path).status_code == 401


def test_what_a_session_cannot_do(private_build):
    hub, space, data, writer, reader = private_build
    other = hub.make_space()
    with _browser(hub) as b:
        r = _sign_in(b, "tth_0000000000000000_notatoken", f"/files/{space}/")
        assert r.status_code == 401 and "Not signed in" in r.text and "set-cookie" not in r.headers
        assert _sign_in(b, "", "/files/").status_code == 400
        junk = b.post("/login", content="&".join(f"f{i}=x" for i in range(50)),
                      headers={"content-type": "application/x-www-form-urlencoded"})
        assert junk.status_code == 400 and "not the sign-in form of this hub" in junk.text
        assert b.post("/login", content=b"token=" + b"x" * 5000).status_code == 413
        # only paths on this hub under /files/ are followed after signing in
        for bad in ("https://elsewhere.example/", "//elsewhere.example/files/", "/api/v1/gc", "/files/\\\\x"):
            r = _sign_in(b, reader["token"], bad)
            assert r.status_code == 303 and r.headers["location"] == "/files/", bad
        # the session reads what its token may read, no more
        assert b.get(f"/files/{space}/ci/1/out/app.bin").status_code == 200
        assert b.get(f"/files/{other}/").status_code in (403, 404)


def test_the_sign_in_page_is_inert(hub):
    with _browser(hub) as b:
        r = b.get("/login", params={"next": "/files/x/'><script>alert(1)</script>"})
    assert r.status_code == 200 and "<script>" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"


def test_a_session_never_outlives_its_token(private_build):
    hub, space, data, writer, reader = private_build
    with hub.client(writer) as c:
        short = c.post("/api/v1/tokens", json={"scopes": [f"publish:{space}:read"], "expires": "10m"}).json()
    with _browser(hub) as b:
        r = _sign_in(b, short["token"], "/files/")
        assert 0 < int(r.headers["set-cookie"].split("Max-Age=")[1].split(";")[0]) <= 600
    with hub.client(writer) as c:
        session = next(t for t in c.get("/api/v1/tokens").json()["tokens"]
                       if t.get("label") == "browser session" and t["parent"] == short["id"])
    parent_end = datetime.fromisoformat(short["expires_at"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(session["expires_at"].replace("Z", "+00:00")) <= parent_end
    assert parent_end - datetime.now(timezone.utc) <= timedelta(minutes=10)


def test_the_documented_curl_session_works(private_build, tmp_path):
    import subprocess

    from tests.publish.test_unhashed_upload import _doc_blocks

    hub, space, data, writer, reader = private_build
    script = _doc_blocks("**In a browser.**").replace("https://hub.example", hub.url).replace("builds", space)
    script = script.replace(f"/files/{space}/android/123/", f"/files/{space}/ci/1/out/app.bin")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env={**os.environ, "T": reader["token"]},
                       cwd=tmp_path, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(data)


def test_an_ended_session_leaves_the_browser_anonymous_not_locked_out(private_build):
    hub, space, data, writer, reader = private_build
    with hub.client(writer) as c:
        pub = os.urandom(100)
        c.put(f"/api/v1/blobs/sha256/{sha(pub)}", params={"space": space, "type": "ci", "build": "p"},
              content=pub).raise_for_status()
        c.post(f"/api/v1/publish/{space}/ci/p", json={"files": [{"path": "f", "digest": sha(pub), "size": 100}],
                                                     "public": True}).raise_for_status()
    with _browser(hub) as b:
        assert _sign_in(b, reader["token"], "/files/").status_code == 303
        with hub.client(writer) as c:
            c.delete(f"/api/v1/tokens/{reader['id']}").raise_for_status()
        for _ in range(70):  # more than the hub's failed authentications per minute: not counted
            assert b.get(f"/files/{space}/ci/p/f").content == pub
        refused = b.get(f"/files/{space}/ci/1/out/app.bin", headers=HTML)
        assert refused.status_code == 401 and "action='/login'" in refused.text
        assert _sign_in(b, writer, "/files/").status_code == 303  # not rate-limited either


def test_a_sign_in_form_from_another_site_is_refused(private_build):
    hub, space, data, writer, reader = private_build
    with _browser(hub) as b:
        for headers in ({"Origin": "https://elsewhere.example"}, {"Sec-Fetch-Site": "cross-site"}):
            r = b.post("/login", data={"token": reader["token"], "next": "/files/"}, headers=headers)
            assert r.status_code == 403 and r.json()["type"].endswith("cross-site-sign-in"), r.text
            assert "set-cookie" not in r.headers
        assert b.post("/login", data={"token": reader["token"]}, headers={"Origin": hub.url}).status_code == 303


def test_signing_out_and_the_pages_a_browser_sees(private_build):
    hub, space, data, writer, reader = private_build
    other = hub.make_space()
    with hub.admin() as c:  # a private build the reader's token may not read
        c.put(f"/api/v1/blobs/sha256/{sha(b'o')}", params={"space": other, "type": "ci", "build": "1"},
              content=b"o").raise_for_status()
        c.post(f"/api/v1/publish/{other}/ci/1", json={"files": [{"path": "o", "digest": sha(b"o"), "size": 1}]}
               ).raise_for_status()
    with _browser(hub) as b:
        first = b.get(f"/files/{space}/ci/1/out/app.bin", headers=HTML)
        assert first.status_code == 401 and "This build is private. Sign in with a token that may read it." in first.text
        assert "no session" in b.post("/logout", headers=HTML).text
        assert "<form method='post' action='/logout'>" in b.get("/logout").text  # a button, not a link
        assert _sign_in(b, reader["token"], "/files/").status_code == 303
        index = b.get(f"/files/{space}/ci/1/", headers=HTML)
        assert "href='/logout'" in index.text
        not_yours = b.get(f"/files/{other}/ci/1/o", headers=HTML)
        assert not_yours.status_code == 403 and "Your session may not read this" in not_yours.text
        assert "<form method='post' action='/login'>" in not_yours.text
        forged = b.post("/logout", headers={"Origin": "https://elsewhere.example", **HTML})
        assert forged.status_code == 403 and "own pages" in forged.text
        assert b.get(f"/files/{space}/ci/1/out/app.bin").status_code == 200  # still signed in
        out = b.post("/logout", headers={"Origin": hub.url})
        assert "Signed out: the session's token is revoked." in out.text
        b.cookies.set("tether_session", "tth_0000000000000000_" + "x" * 43)  # an ended session
        ended = b.get(f"/files/{space}/ci/1/out/app.bin", headers=HTML)
        assert ended.status_code == 401 and "Your session has ended" in ended.text
