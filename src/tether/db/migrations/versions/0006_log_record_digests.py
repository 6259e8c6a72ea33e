"""log_records.digest: each record's 8-byte content tag, for reconciliation

Existing records get theirs here, computed as ``tether.log.store.record_digest``
does (repeated below so this migration keeps meaning what it meant).

Revision ID: 0006
Revises: 0005
"""

import hashlib
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _digest(id_: bytes, created: int, author: str, kind: str, body: str) -> bytes:
    h = hashlib.sha256(b"tether-record-v1\x00")
    h.update(uuid.UUID(bytes=bytes(id_)).bytes)
    h.update(created.to_bytes(8, "big", signed=True))
    for field in (author, kind, body):
        b = field.encode("utf-8")
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.digest()[:8]


def upgrade() -> None:
    with op.batch_alter_table("log_records") as batch:
        batch.add_column(sa.Column("digest", sa.LargeBinary(length=8), nullable=True))
    bind = op.get_bind()
    t = sa.table("log_records", sa.column("space_id"), sa.column("id"), sa.column("created"),
                 sa.column("author"), sa.column("kind"), sa.column("body"), sa.column("digest"))
    upd = (sa.update(t).where(t.c.space_id == sa.bindparam("sid"), t.c.id == sa.bindparam("rid"))
           .values(digest=sa.bindparam("d")))
    while True:  # in pages, so a large log never sits in memory whole
        rows = bind.execute(sa.select(t.c.space_id, t.c.id, t.c.created, t.c.author, t.c.kind, t.c.body)
                            .where(t.c.digest.is_(None)).limit(5000)).all()
        if not rows:
            break
        bind.execute(upd, [{"sid": r[0], "rid": r[1], "d": _digest(*r[1:])} for r in rows])
    # A hub loads a space's ids and tags in one index-only scan, not reading the bodies.
    op.create_index("ix_log_records_tags", "log_records", ["space_id", "id", "digest"])
    # Cached ids of every space are stale now: give each head a new version.
    bind.execute(sa.text("UPDATE log_heads SET version = 'migrated-0006'"))


def downgrade() -> None:
    op.drop_index("ix_log_records_tags", table_name="log_records")
    with op.batch_alter_table("log_records") as batch:
        batch.drop_column("digest")
