"""Tests for tether.auth.policy: the action table and authorize()."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.auth.caveats import Level, Scope, parse_scope
from tether.auth.policy import (
    ACTIONS,
    Action,
    Decision,
    Principal,
    Resource,
    action_table_markdown,
    authorize,
)

R, W, A = Level.READ, Level.WRITE, Level.ADMIN


def scoped(*texts: str) -> tuple[Scope, ...]:
    return tuple(parse_scope(t) for t in texts)


ALICE = Principal("alice", grants={"builds": R, "ops": W, "lab": A})
ADMIN = Principal("root", is_admin=True)


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------

EXPECTED = {
    "whoami": ("authenticated", Level.NONE, None, True),
    "token.mint": ("authenticated", Level.NONE, None, True),
    "token.mint_for": ("hub_admin", Level.NONE, None, False),
    "token.list": ("self_or_admin", Level.NONE, None, False),
    "token.list_all": ("hub_admin", Level.NONE, None, False),
    "token.inspect": ("self_or_admin", Level.NONE, None, False),
    "token.revoke": ("self_or_admin", Level.NONE, None, True),
    "user.create": ("hub_admin", Level.NONE, None, False),
    "user.list": ("hub_admin", Level.NONE, None, False),
    "user.disable": ("hub_admin", Level.NONE, None, False),
    "user.enable": ("hub_admin", Level.NONE, None, False),
    "user.read": ("self_or_admin", Level.NONE, None, False),
    "key.add": ("self_or_admin", Level.NONE, None, False),
    "key.list": ("self_or_admin", Level.NONE, None, False),
    "key.remove": ("self_or_admin", Level.NONE, None, False),
    "space.create": ("hub_admin", Level.NONE, None, False),
    "space.delete": ("hub_admin", Level.NONE, None, False),
    "space.list": ("authenticated", Level.NONE, None, False),
    "space.read": ("space", R, "space", True),
    "space.grant": ("space", A, "space", True),
    "space.revoke": ("space", A, "space", True),
    "space.configure": ("space", A, "space", True),
    "audit.read": ("hub_admin", Level.NONE, None, False),
    "gc.run": ("hub_admin", Level.NONE, None, False),
    "publish.read": ("space", R, "publish", True),
    "publish.write": ("space", W, "publish", True),
    "publish.admin": ("space", A, "publish", True),
    "log.read": ("space", R, "log", True),
    "log.write": ("space", W, "log", True),
    "log.admin": ("space", A, "log", True),
    "signal.connect": ("authenticated", Level.NONE, None, False),  # NATS credentials: not for scoped tokens
    "signal.receive": ("space", R, "signal", True),
    "signal.send": ("space", W, "signal", True),
    "signal.admin": ("space", A, "signal", True),
    "job.read": ("space", R, "job", True),
    "job.write": ("space", W, "job", True),
    "job.admin": ("space", A, "job", True),
}


def test_action_table_is_exactly_the_spec():
    assert set(ACTIONS) == set(EXPECTED)
    for name, (needs, level, cap, scoped_ok) in EXPECTED.items():
        a = ACTIONS[name]
        assert isinstance(a, Action) and a.name == name
        assert (a.needs, a.level, a.capability, a.scoped_ok) == (needs, level, cap, scoped_ok), name
        assert a.description and a.description.endswith(".")


def test_action_table_markdown():
    md = action_table_markdown()
    lines = md.strip().splitlines()
    assert lines[0] == "| action | needs | scoped tokens | description |"
    assert len(lines) == 2 + len(ACTIONS)
    row = {ln.split("|")[1].strip().strip("`"): ln for ln in lines[2:]}
    assert "read on the space" in row["publish.read"]
    assert "publish: or space: scope covering the path" in row["publish.write"]
    assert "hub admin" in row["user.create"] and "| no |" in row["user.create"]
    assert "the user themself or a hub admin" in row["key.add"]
    assert "any authenticated principal" in row["whoami"]
    assert "job: scope" in row["job.write"]
    for ln in lines:
        assert ln.count("|") == 5


# --------------------------------------------------------------------------
# Rule order: unknown action, disabled user
# --------------------------------------------------------------------------


def test_unknown_action():
    d = authorize(ADMIN, "space.explode")
    assert d == Decision(False, "unknown-action", d.detail)
    assert "space.explode" in d.detail
    assert not d


def test_disabled_user_is_refused_even_for_whoami_and_admins():
    for p in (dataclasses.replace(ALICE, disabled=True), dataclasses.replace(ADMIN, disabled=True)):
        d = authorize(p, "whoami")
        assert (d.allowed, d.code) == (False, "user-disabled")
        assert p.user in d.detail


def test_unknown_action_wins_over_disabled():
    d = authorize(dataclasses.replace(ALICE, disabled=True), "nope")
    assert d.code == "unknown-action"


# --------------------------------------------------------------------------
# Grant checks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["whoami", "token.mint", "space.list"])
def test_authenticated_actions(action):
    d = authorize(Principal("bob"), action)
    assert (d.allowed, d.code) == (True, "ok")


@pytest.mark.parametrize(
    "action", ["token.mint_for", "user.create", "user.list", "user.disable", "user.enable",
               "space.create", "space.delete", "audit.read", "gc.run"],
)
def test_hub_admin_actions(action):
    assert authorize(ADMIN, action, Resource(user="x", space="s")).allowed
    d = authorize(ALICE, action, Resource(user="alice", space="builds"))
    assert (d.allowed, d.code) == (False, "forbidden")
    assert action in d.detail and "hub admin" in d.detail and "alice" in d.detail


@pytest.mark.parametrize(
    "action", ["token.list", "token.inspect", "token.revoke", "user.read", "key.add", "key.list",
               "key.remove"],
)
def test_self_or_admin_actions(action):
    assert authorize(ALICE, action, Resource(user="alice")).allowed
    assert authorize(ADMIN, action, Resource(user="alice")).allowed
    d = authorize(ALICE, action, Resource(user="bob"))
    assert (d.allowed, d.code) == (False, "forbidden")
    assert "'bob'" in d.detail and action in d.detail
    d = authorize(ALICE, action, Resource())
    assert (d.allowed, d.code) == (False, "forbidden")
    assert "needs a target user" in d.detail


@pytest.mark.parametrize("cap", ["publish", "log", "signal", "job"])
def test_space_actions_follow_grant_levels(cap):
    verbs = {"signal": ("receive", "send", "admin")}.get(cap, ("read", "write", "admin"))
    for verb, need in zip(verbs, (R, W, A)):
        action = f"{cap}.{verb}"
        for space, has in (("builds", R), ("ops", W), ("lab", A), ("other", Level.NONE)):
            d = authorize(ALICE, action, Resource(space=space, job="7", path="x"))
            assert d.allowed == (has >= need), (action, space)
            assert d.code == ("ok" if d.allowed else "forbidden")


def test_space_grant_detail_messages():
    d = authorize(ALICE, "publish.write", Resource(space="builds"))
    assert d.detail == "'alice' has read on space 'builds'; publish.write needs write"
    d = authorize(ALICE, "log.read", Resource(space="secret"))
    assert d.detail == "'alice' has no grant on space 'secret'; log.read needs read"


def test_space_read_grant_and_admin_actions():
    assert authorize(ALICE, "space.read", Resource(space="builds")).allowed
    assert not authorize(ALICE, "space.read", Resource(space="other")).allowed
    assert authorize(ALICE, "space.grant", Resource(space="lab")).allowed
    assert authorize(ALICE, "space.revoke", Resource(space="lab")).allowed
    d = authorize(ALICE, "space.grant", Resource(space="ops"))
    assert (d.allowed, d.code) == (False, "forbidden") and "needs admin" in d.detail


def test_space_action_needs_a_space():
    for p in (ALICE, ADMIN):
        d = authorize(p, "publish.read", Resource())
        assert (d.allowed, d.code) == (False, "forbidden")
        assert "needs a space" in d.detail


def test_admin_passes_every_grant_check():
    for name, a in ACTIONS.items():
        d = authorize(ADMIN, name, Resource(space="any", user="someone", job="1", path="p"))
        assert d.allowed, name


def test_grants_with_plain_ints_and_garbage_values():
    p = Principal("carol", grants={"a": 2, "b": "write", "c": 99})  # type: ignore[dict-item]
    assert authorize(p, "publish.write", Resource(space="a")).allowed
    assert not authorize(p, "publish.read", Resource(space="b")).allowed
    assert not authorize(p, "publish.read", Resource(space="c")).allowed


# --------------------------------------------------------------------------
# Scoped tokens
# --------------------------------------------------------------------------


def test_scoped_token_refused_for_unscoped_actions():
    p = dataclasses.replace(ALICE, scopes=scoped("publish:builds"))
    for name, a in ACTIONS.items():
        if a.scoped_ok:
            continue
        d = authorize(p, name, Resource(user="alice", space="builds"))
        assert not d.allowed, name
        if a.needs in ("self_or_admin", "authenticated"):
            assert d.code == "token-scope", name
            assert "publish:builds" in d.detail and "unrestricted token" in d.detail


def test_scopes_restrict_admins_too():
    p = dataclasses.replace(ADMIN, scopes=scoped("publish:builds"))
    d = authorize(p, "user.create")
    assert (d.allowed, d.code) == (False, "token-scope")
    assert authorize(p, "publish.admin", Resource(space="builds")).allowed is False
    assert authorize(p, "publish.write", Resource(space="builds")).allowed
    assert authorize(p, "publish.write", Resource(space="other")).code == "token-scope"


@pytest.mark.parametrize("action", ["whoami", "token.mint"])
def test_scoped_token_may_always_whoami_and_mint(action):
    for scopes in ((), scoped("log:ops:read")):
        p = dataclasses.replace(ALICE, scopes=scopes)
        assert authorize(p, action).allowed


def test_scoped_token_revoke_only_self_or_descendants():
    p = dataclasses.replace(ALICE, scopes=scoped("log:ops"), token_id="t1")
    assert authorize(p, "token.revoke", Resource(user="alice", token_ancestry=("t1",))).allowed
    assert authorize(p, "token.revoke", Resource(user="alice", token_ancestry=("t3", "t2", "t1", "t0"))).allowed
    d = authorize(p, "token.revoke", Resource(user="alice", token_ancestry=("t0",)))
    assert (d.allowed, d.code) == (False, "token-scope") and "derived" in d.detail
    d = authorize(p, "token.revoke", Resource(user="alice"))
    assert d.code == "token-scope"
    # the grant check comes first: another user's token is forbidden
    d = authorize(p, "token.revoke", Resource(user="bob", token_ancestry=("t1",)))
    assert d.code == "forbidden"
    # a scoped principal without a token id can revoke nothing
    q = dataclasses.replace(p, token_id=None)
    assert not authorize(q, "token.revoke", Resource(user="alice", token_ancestry=("t1",))).allowed
    # an unrestricted credential revokes any of its user's tokens
    assert authorize(ALICE, "token.revoke", Resource(user="alice", token_ancestry=("t9",))).allowed


def test_scoped_publish_prefix():
    p = dataclasses.replace(ALICE, grants={"builds": W}, scopes=scoped("publish:builds/android"))
    ok = authorize(p, "publish.write", Resource(space="builds", path="android/app.apk"))
    assert ok.allowed and ok.code == "ok"
    for path in ("androidx/app.apk", "ios/app.ipa", None, "android/../ios/x", "/android/x"):
        d = authorize(p, "publish.write", Resource(space="builds", path=path))
        assert (d.allowed, d.code) == (False, "token-scope"), path
        assert "publish:builds/android" in d.detail and "publish.write" in d.detail
    d = authorize(p, "publish.write", Resource(space="builds", path="ios/app.ipa"))
    assert "'ios/app.ipa'" in d.detail and "covering the path" in d.detail


def test_scope_access_level_limits():
    p = dataclasses.replace(ALICE, grants={"builds": A}, scopes=scoped("publish:builds:read"))
    assert authorize(p, "publish.read", Resource(space="builds")).allowed
    d = authorize(p, "publish.write", Resource(space="builds"))
    assert (d.allowed, d.code) == (False, "token-scope")


def test_grant_is_checked_before_scope():
    p = dataclasses.replace(ALICE, scopes=scoped("publish:builds:admin"))
    d = authorize(p, "publish.admin", Resource(space="builds"))
    assert d.code == "forbidden"  # alice only has read on builds


def test_space_scope_covers_other_capabilities():
    p = dataclasses.replace(ALICE, scopes=scoped("space:ops"))
    for action in ("log.write", "signal.send", "publish.write", "job.write"):
        assert authorize(p, action, Resource(space="ops", job="9")).allowed, action
    assert not authorize(p, "log.write", Resource(space="builds")).allowed


def test_kind_mismatch_is_refused():
    p = dataclasses.replace(ALICE, scopes=scoped("log:ops"))
    d = authorize(p, "signal.send", Resource(space="ops"))
    assert (d.allowed, d.code) == (False, "token-scope")
    assert "signal: or space: scope" in d.detail


def test_job_scopes():
    p = dataclasses.replace(ALICE, scopes=scoped("job:42"))
    assert authorize(p, "job.write", Resource(space="ops", job="42")).allowed
    d = authorize(p, "job.write", Resource(space="ops", job="43"))
    assert (d.allowed, d.code) == (False, "token-scope") and "job '43'" in d.detail
    assert not authorize(p, "job.write", Resource(space="ops")).allowed
    # the space grant is still needed
    assert authorize(p, "job.write", Resource(space="secret", job="42")).code == "forbidden"
    # a job scope gives nothing else
    assert not authorize(p, "log.read", Resource(space="ops")).allowed
    assert not authorize(p, "space.read", Resource(space="ops")).allowed
    # publish scopes do not cover jobs
    q = dataclasses.replace(ALICE, scopes=scoped("publish:ops"))
    assert not authorize(q, "job.read", Resource(space="ops", job="42")).allowed


def test_space_read_with_any_non_job_scope_on_the_space():
    for s in ("publish:builds/android:read", "log:builds:read", "signal:builds", "space:builds:read"):
        p = dataclasses.replace(ALICE, scopes=scoped(s))
        assert authorize(p, "space.read", Resource(space="builds")).allowed, s
        d = authorize(p, "space.read", Resource(space="ops"))
        assert (d.allowed, d.code) == (False, "token-scope"), s


def test_space_grant_needs_admin_space_scope():
    for s, ok in (("space:lab:admin", True), ("space:lab", False), ("publish:lab:admin", False),
                  ("space:lab/x:admin", False)):
        p = dataclasses.replace(ALICE, scopes=scoped(s))
        assert authorize(p, "space.grant", Resource(space="lab")).allowed is ok, s


def test_empty_scopes_allow_only_whoami_and_mint():
    p = dataclasses.replace(ADMIN, scopes=())
    allowed = {n for n in ACTIONS if authorize(p, n, Resource(space="s", user="root", job="1")).allowed}
    assert allowed == {"whoami", "token.mint"}


def test_ok_detail_names_action_and_resource():
    d = authorize(ALICE, "job.read", Resource(space="builds", job="5"))
    assert d.allowed and "job.read" in d.detail and "'5'" in d.detail and "'builds'" in d.detail


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

SPACES = ["builds", "ops", "lab", "x"]
small_scopes = st.builds(
    lambda kind, target, prefix, access: Scope(
        kind, target, prefix if kind in ("publish", "space") else "", access
    ),
    st.sampled_from(["publish", "log", "signal", "job", "space"]),
    st.sampled_from(SPACES + ["42", "43"]),
    st.sampled_from(["", "a", "a/b", "b"]),
    st.sampled_from([R, W, A]),
)
principals = st.builds(
    Principal,
    user=st.sampled_from(["alice", "bob"]),
    is_admin=st.booleans(),
    disabled=st.booleans(),
    grants=st.dictionaries(st.sampled_from(SPACES), st.sampled_from(list(Level)), max_size=3),
    scopes=st.one_of(st.none(), st.lists(small_scopes, max_size=3).map(tuple)),
    token_id=st.sampled_from([None, "t1", "t2"]),
)
resources = st.builds(
    Resource,
    space=st.sampled_from([None] + SPACES),
    path=st.sampled_from([None, "", "a", "a/b", "a/b/c", "ab", "b", "../a", "a//b"]),
    user=st.sampled_from([None, "alice", "bob"]),
    job=st.sampled_from([None, "42", "43"]),
    token_ancestry=st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=3).map(tuple),
)
action_names = st.sampled_from(sorted(ACTIONS))


@settings(max_examples=400)
@given(principals, action_names, resources)
def test_prop_scopes_never_widen(p, action, r):
    scoped_d = authorize(p, action, r)
    unscoped_d = authorize(dataclasses.replace(p, scopes=None), action, r)
    if scoped_d.allowed:
        assert unscoped_d.allowed
    assert scoped_d.code in ("ok", "unknown-action", "user-disabled", "forbidden", "token-scope")
    assert scoped_d.allowed == (scoped_d.code == "ok")


@settings(max_examples=300)
@given(principals, action_names, resources, st.lists(small_scopes, max_size=2))
def test_prop_more_scopes_never_narrow(p, action, r, extra):
    """Adding scopes to a scoped token can only allow more (a union)."""
    if p.scopes is None:
        return
    wider = dataclasses.replace(p, scopes=p.scopes + tuple(extra))
    if authorize(p, action, r).allowed:
        assert authorize(wider, action, r).allowed


@settings(max_examples=300)
@given(principals, action_names, resources)
def test_prop_removing_admin_and_grants_never_widens(p, action, r):
    weaker = dataclasses.replace(p, is_admin=False, grants={})
    if authorize(weaker, action, r).allowed:
        assert authorize(p, action, r).allowed


@settings(max_examples=300)
@given(
    principals,
    st.one_of(action_names, st.text(max_size=20)),
    st.builds(
        Resource,
        space=st.one_of(st.none(), st.text(max_size=20)),
        path=st.one_of(st.none(), st.text(max_size=40)),
        user=st.one_of(st.none(), st.text(max_size=20)),
        job=st.one_of(st.none(), st.text(max_size=20)),
        token_ancestry=st.lists(st.text(max_size=5), max_size=3).map(tuple),
    ),
)
def test_prop_authorize_never_raises(p, action, r):
    d = authorize(p, action, r)
    assert isinstance(d, Decision)
    assert isinstance(d.detail, str) and d.detail


@given(st.one_of(st.none(), st.integers(), st.text(max_size=5)))
def test_prop_non_string_action_is_unknown(action):
    if isinstance(action, str) and action in ACTIONS:
        return
    assert authorize(ALICE, action).code == "unknown-action"  # type: ignore[arg-type]
