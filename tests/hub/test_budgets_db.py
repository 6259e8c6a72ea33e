"""Budget draws (max_files / max_bytes) at the storage layer, on SQLite and PostgreSQL.

Publishing draws on these; here the draws are driven directly, concurrently, to show
they are atomic along the whole token chain and leave nothing behind when refused.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tether.auth.service import AuthContext, MintRequest, create_bootstrap_admin, draw_budget, mint
from tether.db import Database
from tether.db.models import Token, User, utcnow
from tether.problems import Problem
from datetime import timedelta

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def setup(url):
    db = Database(url)
    db.migrate()
    create_bootstrap_admin(db, now=utcnow())
    with db.read() as s:
        admin = s.query(User).filter_by(name="admin").one()
        root = s.query(Token).filter_by(user_id=admin.id).one()
    return db, AuthContext(user=admin, token=root)


def mint_child(db, ctx, **caveats):
    row, _ = mint(db, ctx, MintRequest(**caveats), now=utcnow(), max_lifetime=timedelta(days=1),
                  default_lifetime=timedelta(hours=1))
    return row


def test_concurrent_draws_never_overspend(database_url):
    db, ctx = setup(database_url)
    tok = mint_child(db, ctx, max_files=25, max_bytes=10_000)

    def draw(_):
        try:
            with db.write() as s:
                draw_budget(s, tok, files=1, nbytes=100)
            return True
        except Problem as p:
            assert p.slug == "token-files-exhausted"
            return False

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(draw, range(60)))
    assert results.count(True) == 25
    with db.read() as s:
        row = s.get(Token, tok.id)
    assert (row.files, row.bytes) == (25, 2500)
    db.dispose()


def test_child_draws_count_against_parent_and_refusal_leaves_nothing(database_url):
    db, ctx = setup(database_url)
    parent = mint_child(db, ctx, max_bytes=1000)
    child_ctx = AuthContext(user=ctx.user, token=parent)
    child = mint_child(db, child_ctx, inherit=True, max_bytes=800)
    with db.write() as s:
        draw_budget(s, child, files=1, nbytes=700)
    with db.write() as s:
        draw_budget(s, parent, files=1, nbytes=250)
    # child has 100 left of its own, parent has 50: a draw of 60 fails on the parent
    with pytest.raises(Problem) as err:
        with db.write() as s:
            draw_budget(s, child, files=1, nbytes=60)
    assert err.value.slug == "token-bytes-exhausted" and "parent" in err.value.detail
    with db.read() as s:
        assert s.get(Token, child.id).bytes == 700
        assert s.get(Token, parent.id).bytes == 950
    db.dispose()


def test_minting_from_a_token_revoked_meanwhile_is_refused(database_url):
    """The caller authenticated, then its token (or an ancestor) was revoked before the
    mint's transaction: the mint looks again under lock and refuses."""
    from sqlalchemy import update

    db, ctx = setup(database_url)
    parent, _ = mint(db, ctx, MintRequest(), now=utcnow(), max_lifetime=timedelta(days=1),
                     default_lifetime=timedelta(hours=1))
    child, _ = mint(db, AuthContext(user=ctx.user, token=parent), MintRequest(inherit=True), now=utcnow(),
                    max_lifetime=timedelta(days=1), default_lifetime=timedelta(hours=1))
    with db.write() as s:  # only the grandparent: as if the cascade had not reached the child yet
        s.execute(update(Token).where(Token.id == parent.id).values(revoked_at=utcnow()))
    with pytest.raises(Problem) as err:
        mint(db, AuthContext(user=ctx.user, token=child), MintRequest(inherit=True), now=utcnow(),
             max_lifetime=timedelta(days=1), default_lifetime=timedelta(hours=1))
    assert err.value.slug == "token-revoked"
    db.dispose()
