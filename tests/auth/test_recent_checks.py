"""tether.auth.recent.Checks, the credential checks forward's and apps' resolvers reuse: a
key never holds the secret, an allowed answer is reused only while its caveats (expiry,
source) hold for the request at hand, and a token that counts its uses is never reused
(each use must reach the database to be counted). Recent's bound and epoch are in
tests/forward/test_gateway_cache.py; the bounds end to end, with two replicas, in
tests/forward/test_forward_replicas.py and tests/apps/test_gateway_cache_apps.py."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from tether.auth.caveats import Caveats
from tether.db.models import utcnow
from tether.auth.recent import Checks


def ctx(*, caveats=None, uses=None):
    token = SimpleNamespace(limited={"uses": uses} if uses else {})
    return SimpleNamespace(caveats=caveats, token=token)


def test_the_key_names_the_secret_by_its_digest_only():
    key = Checks.key(7, "tok", "127.0.0.1", b"GET", False, secret="tth_abc_SECRET")
    assert "tth_abc_SECRET" not in repr(key) and key != Checks.key(7, "tok", "127.0.0.1", b"GET", False,
                                                                     secret="tth_abc_OTHER")
    assert key != Checks.key(7, "tok", "127.0.0.1", b"POST", False, secret="tth_abc_SECRET")  # per method


def test_an_allowed_answer_is_reused_until_its_caveats_fail():
    checks = Checks()
    fine = ctx()
    checks.keep("k", fine)
    assert checks.allowed("k", "127.0.0.1") is fine
    expired = ctx(caveats=Caveats(expires_at=utcnow() - timedelta(seconds=1)))
    checks.keep("old", expired)
    assert checks.allowed("old", "127.0.0.1") is None  # past its expiry: checked again, in the database
    narrow = ctx(caveats=Caveats(sources=["10.0.0.0/8"]))
    checks.keep("net", narrow)
    assert checks.allowed("net", "10.1.2.3") is narrow and checks.allowed("net", "192.0.2.1") is None


def test_a_token_that_counts_its_uses_is_never_reused():
    checks = Checks()
    checks.keep("k", ctx(uses=3))
    assert checks.allowed("k", "127.0.0.1") is None
