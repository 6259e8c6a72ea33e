"""spaces.public_builds: a space-wide default for build visibility

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("spaces") as batch:
        batch.add_column(sa.Column("public_builds", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), not a batch rebuild: rebuilding drops the table,
    # and with foreign keys on SQLite that deletes every grant, build and file of every space.
    op.execute("ALTER TABLE spaces DROP COLUMN public_builds")
