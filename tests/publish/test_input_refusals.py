"""Input the hub must refuse (issue 19, points 5-8): a clear problem+json error, nothing written."""

from __future__ import annotations

import hashlib

import pytest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    return r.json()


def nothing_published(c, space: str) -> None:
    assert c.get(f"/files/{space}/", params={"format": "json"}).status_code == 404


@pytest.fixture
def publisher(hub):
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "write"})
    return hub, space, token


def test_unknown_fields_in_manifest_entries_are_refused(publisher):
    hub, space, token = publisher
    data = b"typo\n"
    with hub.client(token) as c:
        r = c.put(f"/api/v1/blobs/sha256/{sha(data)}", params={"space": space, "type": "ci", "build": "1"}, content=data)
        assert r.status_code == 201, r.text
        entry = {"path": "bin/tool", "digest": sha(data), "size": len(data), "mdoe": 493}
        body = problem(c.post(f"/api/v1/publish/{space}/ci/1", json={"files": [entry]}), 400)
        assert "'mdoe'" in body["detail"] and "bin/tool" in body["detail"]
        entry = {"path": "bin/tool", "digest": sha(data), "size": len(data)}  # mode left out: still refused
        body = problem(c.post(f"/api/v1/publish/{space}/ci/1", json={"files": [entry | {"sha256": "x"}]}), 400)
        assert "'sha256'" in body["detail"]
        nothing_published(c, space)
        r = c.post(f"/api/v1/publish/{space}/ci/1", json={"files": [entry]})  # the same, without the typo
        assert r.status_code == 201, r.text


def test_invalid_utf8_in_a_one_file_path_is_refused(publisher):
    hub, space, token = publisher
    uploads = hub.data_dir / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    with hub.client(token) as c:
        body = problem(c.put(f"/api/v1/publish/{space}/ci/1/dist/%FF%FEapp.bin", content=b"x" * 100), 400)
        assert "UTF-8" in body["detail"]
        body = problem(c.get(f"/files/{space}/ci/1/%C3%28"), 400)  # a download path, the same rule
        nothing_published(c, space)
        # a U+FFFD sent as UTF-8 is a character like any other
        r = c.put(f"/api/v1/publish/{space}/ci/2/%EF%BF%BD.bin", content=b"y")
        assert r.status_code == 201, r.text
        assert c.get(f"/files/{space}/ci/2/\ufffd.bin").content == b"y"
    assert (set(uploads.iterdir()) if uploads.exists() else set()) == before


def test_answer_urls_come_from_the_listen_address_not_the_host_header(publisher):
    hub, space, token = publisher
    with hub.client(token) as c:
        r = c.put(f"/api/v1/publish/{space}/ci/1/a.txt", content=b"a", headers={"Host": "evil.example"})
        assert r.status_code == 201, r.text
        assert r.json()["url"] == f"{hub.url}/files/{space}/ci/1/"


def test_with_a_public_url_answers_use_it_and_other_hosts_are_refused(start_hub):
    h = start_hub(env={"TETHER_PUBLIC_URL": "https://Hub.Example.org/"})
    space = h.make_space()  # through the listen address: the hub serves that too
    with h.admin() as c:
        r = c.put(f"/api/v1/publish/{space}/ci/1/a.txt", content=b"a", headers={"Host": "hub.example.org"})
        assert r.status_code == 201, r.text
        assert r.json()["url"] == f"https://Hub.Example.org/files/{space}/ci/1/"
        assert c.get("/api/v1/whoami", headers={"Host": "hub.example.org:443"}).status_code == 200
        for host in ("evil.example", "hub.example.org:8443", "hub.example.org.evil.example"):
            body = problem(c.put(f"/api/v1/publish/{space}/ci/2/a.txt", content=b"b", headers={"Host": host}), 421)
            assert "https://Hub.Example.org" in body["detail"]
        assert c.get("/healthz", headers={"Host": "10.1.2.3:8580"}).status_code == 200  # probes by address
        listing = c.get(f"/files/{space}/ci/", params={"format": "json"}).json()
        assert [e["name"] for e in listing["entries"]] == ["1"]  # the refused build was not published


def test_empty_segments_in_download_paths_are_refused_alike(publisher):
    hub, space, token = publisher
    with hub.client(token) as c:
        assert c.put(f"/api/v1/publish/{space}/ci/1/a/b.txt", content=b"b").status_code == 201
        assert c.get(f"/files/{space}/ci/1/a/b.txt").content == b"b"
        assert c.get(f"/files/{space}/ci/1/a/", params={"format": "json"}).status_code == 200
        for bad in (f"/files/{space}//ci/1/a/b.txt", f"/files/{space}/ci/1//a/b.txt", f"/files/{space}/ci/1/a//b.txt",
                    f"/files/{space}/ci/1/a//", f"/files/{space}//"):
            body = problem(c.get(bad), 400)
            assert "empty" in body["detail"], bad


def test_a_directory_asked_without_its_slash_redirects_whatever_its_name(publisher):
    hub, space, token = publisher
    with hub.client(token) as c:
        assert c.put(f"/api/v1/publish/{space}/ci/1/\u4e2d a%/x.txt", content=b"x").status_code == 201
        r = c.get(f"/files/{space}/ci/1/\u4e2d a%", headers={"Accept": "text/html"})
        assert r.status_code == 308, r.text  # was a 500: the name is not Latin-1
        assert r.headers["location"] == f"/files/{space}/ci/1/%E4%B8%AD%20a%25/"
        assert c.get(r.headers["location"]).status_code == 200
