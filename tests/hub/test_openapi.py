"""The API's description is true (issue 19, points 9 and 11): errors as problem+json,
real patterns, distinct operation ids, a true Allow, a bearer scheme, and a Swagger
page that loads nothing from outside the hub."""

from __future__ import annotations

import re

import pytest

ERRORS = ("400", "401", "403", "404", "409", "413", "429")


@pytest.fixture(scope="module")
def doc(hub):
    with hub.client() as c:
        return c.get("/api/v1/openapi.json").json()


def operations(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_every_operation_declares_the_errors_the_hub_answers_as_problems(doc):
    assert doc["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail"]
    for path, method, op in operations(doc):
        for status in ERRORS + (("422",) if op.get("parameters") or op.get("requestBody") else ()):
            content = op["responses"][status]["content"]
            assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}} \
                or "text/html" in content, (method, path, status)  # downloads: a browser gets the sign-in page
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_a_bearer_scheme_guards_every_api_operation(doc):
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "a tether token: `Authorization: Bearer tth_…`"}
    for path, method, op in operations(doc):
        want = [{"bearer": []}, {}] if path.startswith("/files/") else [{"bearer": []}]
        assert op["security"] == want, (method, path)


def test_names_ids_digests_and_scopes_have_their_patterns(doc):
    def param(path, method, name):
        return next(p for p in doc["paths"][path][method]["parameters"] if p["name"] == name)["schema"]

    assert param("/api/v1/users/{name}", "get", "name")["pattern"] == "^[a-z_][a-z0-9_.-]{0,31}$"
    assert param("/api/v1/spaces/{name}", "get", "name")["pattern"] == "^[a-z0-9][a-z0-9._-]{0,63}$"
    assert param("/api/v1/tokens/{token_id}", "delete", "token_id")["pattern"] == "^[0-9a-f]{16}$"
    assert param("/api/v1/blobs/sha256/{digest}", "put", "digest")["pattern"] == "^[0-9a-f]{64}$"
    assert param("/api/v1/blobs/sha256/{digest}", "put", "build")["pattern"].startswith("^[A-Za-z0-9]")
    assert param("/api/v1/log/{space}", "get", "space")["pattern"] == "^[a-z0-9][a-z0-9._-]{0,63}$"
    schemas = doc["components"]["schemas"]
    scope = re.compile(schemas["TokenIn"]["properties"]["scopes"]["anyOf"][0]["items"]["pattern"])
    assert scope.match("publish:builds/android:read") and not scope.match("publish builds")
    entry = schemas["ManifestIn"]["properties"]["files"]["anyOf"][0]["items"]
    assert entry["additionalProperties"] is False and set(entry["properties"]) == {"path", "digest", "size", "mode"}


def test_operation_ids_are_distinct(doc):
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    assert doc["paths"]["/files/{space}/{path}"]["head"]["operationId"].endswith("_head")


def test_a_405_allows_every_method_served_at_the_path(hub):
    with hub.client() as c:
        for path, allowed in (("/api/v1/tokens/0123456789abcdef", "GET, DELETE"), ("/files/s/a/b", "GET, HEAD"),
                              ("/api/v1/spaces/s", "GET, PATCH"), ("/api/v1/tokens/self", "GET"),
                              # paths that overlap another operation's template: each URL is one's alone
                              ("/api/v1/forward/routes/alice/links", "GET, POST"),
                              ("/api/v1/forward/routes/alice/shares", "GET"),
                              ("/api/v1/forward/routes/alice/demo", "DELETE"),
                              ("/api/v1/app-instances/demo/logs", "GET"), ("/api/v1/app-instances/demo/stop", "POST")):
            r = c.request("OPTIONS", path)
            assert r.status_code == 405 and r.headers["allow"] == allowed, (path, r.headers.get("allow"))
            assert r.headers["content-type"] == "application/problem+json"
        assert c.delete("/api/v1/tokens/self").headers["allow"] == "GET"


def test_the_swagger_page_loads_only_the_hubs_own_assets(hub):
    with hub.client() as c:
        page = c.get("/api/v1/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        urls = re.findall(r'(?:src|href)="([^"]*)"', page.text) + re.findall(r"url: '([^']*)'", page.text)
        assert len(urls) >= 4, urls
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), url  # this hub, no other host
            r = c.get(url)
            assert r.status_code == 200 and r.content, url
        assert "javascript" in c.get("/api/v1/docs/assets/swagger-ui-bundle.js").headers["content-type"]


def test_the_latest_url_declares_the_methods_its_allow_names(hub, doc):
    """``.../{build}/latest`` serves POST (make the build the latest) and PUT (a one-file
    build whose file is named ``latest``): the description declares both there, as the
    405's Allow names them, and the PUT does publish the file."""
    assert set(doc["paths"]["/api/v1/publish/{space}/{type}/{build}/latest"]) == {"post", "put"}
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "admin"})
    with hub.client(token) as c:
        r = c.request("OPTIONS", f"/api/v1/publish/{space}/ci/1/latest")
        assert r.status_code == 405 and r.headers["allow"] == "POST, PUT", r.headers.get("allow")
        r = c.put(f"/api/v1/publish/{space}/ci/1/latest", content=b"named latest\n")
        assert r.status_code == 201 and r.json()["url"].endswith(f"/files/{space}/ci/1/"), r.text
        assert c.get(f"/files/{space}/ci/1/latest").content == b"named latest\n"
        assert c.post(f"/api/v1/publish/{space}/ci/1/latest").status_code == 200
