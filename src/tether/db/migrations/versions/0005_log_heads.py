"""log_heads: one row per space with records, whose version changes with every push

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_heads",
        sa.Column("space_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["space_id"], ["spaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("space_id"),
    )
    # Spaces that already hold records get a head (no hub has cached them yet).
    op.execute(
        "INSERT INTO log_heads (space_id, version, records) "
        "SELECT space_id, 'migrated-0005', count(*) FROM log_records GROUP BY space_id"
    )


def downgrade() -> None:
    op.drop_table("log_heads")
