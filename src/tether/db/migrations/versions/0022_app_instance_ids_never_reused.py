"""app_instances.id never reused on SQLite (AUTOINCREMENT)

An instance's id names its sandbox (``a1``: network namespace, interfaces, nftables
sets, cgroups, /data image): an id handed out again after ``tether app rm`` would let
a new instance inherit what is left of the old one. SQLite without AUTOINCREMENT reuses
the largest rowid once its row is gone; with it, never (``sqlite_sequence`` keeps the
largest ever given). PostgreSQL's SERIAL sequence never hands out a number twice, so
nothing changes there. Ids deleted before this migration cannot be known: the sequence
starts at the largest id present.

SQLite cannot add AUTOINCREMENT to a table: the table is copied (Alembic's batch mode).
Dropping the old one with foreign keys on deletes what cascades from it (grants,
shares), so those rows are kept and put back.

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

CHILDREN = ("app_grants", "app_shares")  # ON DELETE CASCADE from app_instances


def _recreate(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    kept = {t: [dict(r) for r in bind.execute(sa.text(f"SELECT * FROM {t}")).mappings()] for t in CHILDREN}
    with op.batch_alter_table("app_instances", recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass
    for table, rows in kept.items():
        bind.execute(sa.text(f"DELETE FROM {table}"))
        if rows:
            cols = list(rows[0])
            bind.execute(sa.text(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"),
                         rows)


def upgrade() -> None:
    _recreate(True)


def downgrade() -> None:
    _recreate(False)
