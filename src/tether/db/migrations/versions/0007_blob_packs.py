"""blobs.pack, blobs.pack_offset: small blobs stored together in pack files

A blob uploaded in a batch lives at ``pack_offset`` inside the pack file named
``pack`` (filesystem store); ``pack`` is NULL for a blob stored on its own.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("pack", sa.String(32), nullable=True))
        batch.add_column(sa.Column("pack_offset", sa.BigInteger(), nullable=True))
        batch.create_index("ix_blobs_pack", ["pack"])


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.drop_index("ix_blobs_pack")
        batch.drop_column("pack_offset")
        batch.drop_column("pack")
