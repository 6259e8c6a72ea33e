"""Hostile input: random JSON bodies, odd path segments and query values never produce a 500.

Hypothesis drives a real hub process (both backends) with the admin token, so every
request gets past authentication and reaches validation and storage.
"""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=60),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                           st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)

FIELDS = {
    "/api/v1/tokens": ["for_user", "inherit", "scopes", "expires", "not_before", "sources",
                       "max_uses", "max_files", "max_bytes", "label"],
    "/api/v1/users": ["name", "kind", "admin"],
    "/api/v1/spaces": ["name", "description"],
    "/api/v1/authz/check": ["action", "space", "path", "job", "user", "files", "bytes"],
}
fuzz_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def bodies(fields):
    # Mostly well-shaped objects with random values, sometimes anything at all.
    shaped = st.fixed_dictionaries({}, optional={f: json_values for f in fields})
    scoped = st.fixed_dictionaries({}, optional={
        "scopes": st.lists(st.text(alphabet="publogsignajb:/.-_*read\x00\\ ", max_size=30), max_size=3),
        "expires": st.text(alphabet="0123456789PTHMSDW:-Z.hms ", max_size=20),
        "sources": st.lists(st.text(alphabet="0123456789abcdef:./", max_size=40), max_size=3),
    })
    return st.one_of(shaped, scoped, json_values)


def assert_sane(r):
    assert r.status_code < 500, (r.request.method, r.request.url, r.text)
    if 300 <= r.status_code < 400 or r.status_code == 204:  # e.g. a trailing-slash redirect
        return
    assert r.headers["content-type"].startswith(("application/json", "application/problem+json")), r.headers


@fuzz_settings
@given(path=st.sampled_from(sorted(FIELDS)), data=st.data())
def test_random_bodies_never_500(hub, path, data):
    body = data.draw(bodies(FIELDS[path]))
    with hub.admin() as c:
        assert_sane(c.post(path, json=body))


@fuzz_settings
@given(segment=st.text(min_size=1, max_size=80), value=st.text(max_size=40))
@example(segment="\u00b2", value="")  # a Unicode digit: str.isdigit() but not int()-able (was a 500)
@example(segment="/", value="\x00")
def test_random_path_and_query_never_500(hub, segment, value):
    seg = quote(segment, safe="")
    with hub.admin() as c:
        for method, path, kw in [
            ("GET", f"/api/v1/users/{seg}", {}),
            ("GET", f"/api/v1/spaces/{seg}", {}),
            ("GET", f"/api/v1/tokens/{seg}", {}),
            ("DELETE", f"/api/v1/tokens/{seg}", {}),
            ("GET", f"/api/v1/users/{seg}/keys", {}),
            ("DELETE", f"/api/v1/users/admin/keys/{seg}", {}),
            ("PUT", f"/api/v1/spaces/{seg}/grants/{seg}", {"json": {"level": value}}),
            ("GET", "/api/v1/audit", {"params": {"since": value, "user": value, "action": value, "token": value}}),
            ("GET", "/api/v1/tokens", {"params": {"user": value}}),
        ]:
            assert_sane(c.request(method, path, **kw))
