"""builds.manifest: the sha256 of each build's manifest (see publish.core.manifest_digest)

A client re-publishing an unchanged tree commits "the same files as the build with
this manifest" instead of sending every entry again. Builds committed before this
revision have no manifest digest and are simply never matched.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("manifest", sa.String(length=64), nullable=True))
    op.create_index("ix_builds_space_manifest", "builds", ["space_id", "manifest"])


def downgrade() -> None:
    op.drop_index("ix_builds_space_manifest", table_name="builds")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("manifest")
