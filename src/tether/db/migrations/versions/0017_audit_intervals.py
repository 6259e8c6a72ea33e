"""Audit records carry the end of the interval they count

Reads by scoped tokens (downloads) are now audited, counted per token and path over
``audit_read_interval`` (so a bulk download is one row per file, not one per request),
as refusals of unauthenticated requests already were (0013). ``at`` is the first
request's time, ``last_at`` the last one's, ``count`` how many there were; records
that stand for one request have no ``last_at``.

(Numbered 0017 by the branch that made it; it follows 0014 here. Migrations merged
between them go before it: set ``down_revision`` to the newest of them.)

Revision ID: 0017
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("last_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("last_at")
