"""space_blobs: which blobs each space has proven it holds (dedup scoped per space)

Every blob a build of the space names is proven already: those rows are filled here.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "space_blobs",
        sa.Column("space_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["space_id"], ["spaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("space_id", "digest"),
    )
    op.execute(
        "INSERT INTO space_blobs (space_id, digest) "
        "SELECT DISTINCT builds.space_id, build_files.digest FROM build_files "
        "JOIN builds ON builds.id = build_files.build"
    )


def downgrade() -> None:
    op.drop_table("space_blobs")
