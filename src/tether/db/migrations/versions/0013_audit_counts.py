"""Audit records carry a count

Refusals of requests with no authenticated user (no token, an unknown token, a
source over its failure budget, an unknown path) come in floods: one row each grew
the audit table by ~2,000 rows/s under one client. They are now written as one row
per source and reason per interval (``audit_anonymous_interval``) with the number
of requests it stands for in ``count``; every other record has count 1.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("count")
