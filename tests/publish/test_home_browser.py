"""The hub's front page in a real browser (Debian's chromium, headless, driven by
playwright): anonymous, `/` says how to sign in; signed in with a token, the browser
lands on `/files/`, which lists the spaces, build types and builds that token may read
(and nothing else), linked down to the files. Against a real hub (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from tests.browser import ARGS, CHROMIUM, require_chromium

HOSTILE = "<img src=x onerror=alert(1)> & co"


def _publish(hub, token: str, space: str, btype: str, build: str, files: dict[str, bytes]) -> None:
    with hub.client(token) as c:
        entries = []
        for path, data in files.items():
            digest = hashlib.sha256(data).hexdigest()
            c.put(f"/api/v1/blobs/sha256/{digest}", params={"space": space, "type": btype, "build": build},
                  content=data).raise_for_status()
            entries.append({"path": path, "digest": digest, "size": len(data)})
        r = c.post(f"/api/v1/publish/{space}/{btype}/{build}", json={"files": entries, "public": False})
        assert r.status_code == 201, r.text


@pytest.fixture
def world(hub):
    """Space `mine` (the reader may read it: two types, three private builds) and space
    `theirs` (a build the reader may not see); the reader holds a read-only scoped token."""
    mine, theirs, empty = hub.make_space(), hub.make_space(), hub.make_space()
    with hub.admin() as c:
        c.patch(f"/api/v1/spaces/{mine}", json={"description": HOSTILE}).raise_for_status()
    _, writer = hub.make_user(grants={mine: "write", theirs: "write"})
    app = os.urandom(2000)
    _publish(hub, writer, mine, "android", "101", {"out/app.txt": b"build 101 says hello"})
    _publish(hub, writer, mine, "android", "102", {"out/app.bin": app})
    _publish(hub, writer, mine, "docs", "7", {"index.html": b"<p>docs</p>"})
    _publish(hub, writer, theirs, "secret", "1", {"x": b"not for the reader"})
    _, reader_root = hub.make_user(grants={mine: "read", theirs: "none", empty: "read"})
    with hub.client(reader_root) as c:
        reader = c.post("/api/v1/tokens", json={"scopes": [f"publish:{mine}:read", f"publish:{empty}:read"],
                                                "expires": "2h"}).json()["token"]
    return {"hub": hub, "mine": mine, "theirs": theirs, "empty": empty, "reader": reader}


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_anonymous_front_page_says_how_to_sign_in(world, browser):
    hub = world["hub"]
    page = browser.new_page()
    response = page.goto(hub.url + "/")
    assert response.status == 200
    assert "Not signed in" in page.inner_text("body")
    assert world["mine"] not in page.content()  # nothing listed to an anonymous visitor
    assert page.get_attribute("a[href^='/login']", "href") == "/login?next=/files/"
    page.close()


def test_a_browser_signs_in_and_lands_on_what_its_token_may_read(world, browser):
    hub, mine, theirs = world["hub"], world["mine"], world["theirs"]
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(hub.url + "/")
    page.click("a[href='/login?next=/files/']")
    page.fill("input[name=token]", world["reader"])
    page.click("button[type=submit]")
    page.wait_for_url(hub.url + "/files/")

    body = page.inner_text("body")
    assert "Signed in as" in body
    assert mine in body and theirs not in body  # only what the token may read
    assert HOSTILE in body and page.locator("img").count() == 0  # text, never markup
    # (the session's hub is shared: other tests' public spaces may be listed too)
    ours = {mine, theirs, world["empty"]}
    assert [a.inner_text() for a in page.locator("section.space h2 a").all() if a.inner_text() in ours] == [mine]
    assert world["empty"] in body and "No builds yet." in body  # a readable space with nothing in it
    assert page.locator(f"a[href='/files/{mine}/android/']").count() == 1  # the build types
    assert page.locator(f"a[href='/files/{mine}/docs/']").count() == 1
    builds = [a.inner_text() for a in page.locator("section.space td:first-child a").all()]
    assert builds == ["7", "102", "101"]  # newest first

    cookie, = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and world["reader"] not in cookie["value"]

    page.click(f"a[href='/files/{mine}/android/101/']")  # a build, down to a file
    page.click("a[href='out/']")
    page.click("a[href='app.txt']")
    assert "build 101 says hello" in page.inner_text("body")
    page.goto(hub.url + f"/files/{mine}/android/102/out/")
    with page.expect_download() as dl:
        page.click("a[href='app.bin']")
    assert os.path.getsize(dl.value.path()) == 2000

    page.goto(hub.url + "/logout")
    page.click("button[type=submit]")
    page.goto(hub.url + "/")
    assert "Not signed in" in page.inner_text("body") and mine not in page.content()
    context.close()


def test_front_page_headers_and_json(world):
    hub, mine = world["hub"], world["mine"]
    with httpx.Client(base_url=hub.url, timeout=30) as c:
        r = c.get("/", headers={"Accept": "text/html"})
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
        assert c.get("/?format=json").json() == {"user": None, "spaces": [], "sign_in": "/login"}
        ours = {mine, world["theirs"], world["empty"]}
        got = c.get("/files/", params={"format": "json"}, headers={"Authorization": f"Bearer {world['reader']}"})
        spaces = [s for s in got.json()["spaces"] if s["space"] in ours]  # (others' public spaces aside)
        assert [s["space"] for s in spaces] == sorted([mine, world["empty"]])
        got_mine = next(s for s in spaces if s["space"] == mine)
        assert got_mine["types"] == ["android", "docs"] and [b["build"] for b in got_mine["recent"]] == ["7", "102", "101"]
        bad = c.get("/", headers={"Authorization": "Bearer tth_0000000000000000_" + "A" * 43})
        assert bad.status_code == 401  # a bad token is refused, not taken for anonymous


def test_over_https_the_session_cookie_is_host_prefixed(tmp_path, browser):
    """Over HTTPS the session cookie is `__Host-tether_session`: Secure, Path=/, no Domain
    (chromium refuses such a cookie otherwise, so signing in working shows it is right)."""
    import ssl
    import subprocess

    from tests.hubproc import HubProcess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    (tmp_path / "tls").mkdir()
    hub = HubProcess(tmp_path / "tls" / "data", args=["--tls-cert", str(cert), "--tls-key", str(key)])
    hub.verify = ssl.create_default_context(cafile=str(cert))
    hub.start()
    try:
        space = hub.make_space()
        _, writer = hub.make_user(grants={space: "write"})
        _publish(hub, writer, space, "ci", "1", {"a.txt": b"over tls"})
        context = browser.new_context(ignore_https_errors=True)  # the test's own certificate
        page = context.new_page()
        page.goto(hub.url + "/login?next=/files/")
        page.fill("input[name=token]", writer)
        page.click("button[type=submit]")
        page.wait_for_url(hub.url + "/files/")
        assert space in page.inner_text("body")
        cookie, = context.cookies()
        assert cookie["name"] == "__Host-tether_session" and cookie["secure"] and cookie["path"] == "/"
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["domain"].startswith(".")
        page.goto(hub.url + "/logout")
        page.click("button[type=submit]")
        assert context.cookies() == []
        context.close()
    finally:
        hub.stop()
