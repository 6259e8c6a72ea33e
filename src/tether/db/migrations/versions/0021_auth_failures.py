"""auth_failures: failed authentications per source and minute, so the limiter holds across replicas

One row per source address and minute (``minute``: seconds since the epoch // 60, on
the database's clock) with the failures counted in it, added to by one upsert per
failed authentication on PostgreSQL (``tether.auth.failures``); successes write
nothing. A replica deletes the rows older than the previous minute once a minute. A
single hub on SQLite keeps counting in its memory and leaves the table empty.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("source", sa.String(length=64), primary_key=True),
        sa.Column("minute", sa.BigInteger(), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
    )
    op.create_index("ix_auth_failures_minute", "auth_failures", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_auth_failures_minute", table_name="auth_failures")
    op.drop_table("auth_failures")
