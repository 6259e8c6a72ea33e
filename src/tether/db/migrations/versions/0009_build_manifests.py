"""builds.manifest and builds.files_of: builds with the same files share one set of entries

``manifest`` is the sha256 of a build's manifest (see publish.core.manifest_digest):
a client re-publishing an unchanged tree commits "the same files as the build with
this manifest" instead of sending every entry again. ``files_of`` names the build
whose build_files rows a build uses when it has none of its own, so such a build
costs one row. Builds committed before this revision have no manifest digest and
are simply never matched.

Plain ADD/DROP COLUMN, not a batch rebuild: rebuilding ``builds`` on SQLite drops
the table, and with foreign keys on that deletes every build_files row.

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
    op.add_column("builds", sa.Column("manifest", sa.String(length=64), nullable=True))
    op.add_column("builds", sa.Column("files_of", sa.Integer(), nullable=True))
    op.create_index("ix_builds_space_manifest", "builds", ["space_id", "manifest"])
    op.create_index("ix_builds_files_of", "builds", ["files_of"])


def downgrade() -> None:
    # Builds sharing entries get their own copy back first, so nothing is lost.
    op.execute(
        "INSERT INTO build_files (build, path, digest, size, mode) "
        "SELECT builds.id, f.path, f.digest, f.size, f.mode FROM builds "
        "JOIN build_files f ON f.build = builds.files_of WHERE builds.files_of IS NOT NULL"
    )
    op.drop_index("ix_builds_files_of", table_name="builds")
    op.drop_index("ix_builds_space_manifest", table_name="builds")
    # plain DROP COLUMN (SQLite 3.35+) for the same reason as above: no table rebuild
    op.execute("ALTER TABLE builds DROP COLUMN files_of")
    op.execute("ALTER TABLE builds DROP COLUMN manifest")
