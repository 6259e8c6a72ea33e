"""uploads.digest may be NULL; an index of the large blobs by size

A client may start a resumable upload of a large file before it has hashed it,
when the space holds no blob of that size (so the hub cannot already have the
content), and declare the digest once the last byte is sent: hashing and sending
then overlap. ``uploads.digest`` is NULL until declared. The partial index
``ix_blobs_large_size`` answers "does this space hold a blob of N bytes?" for
the sizes where that is asked (64 MiB and more, ``publish.core.UNHASHED_MIN``)
without adding an index entry for every small blob.

``uploads`` is rebuilt on SQLite (it cannot drop NOT NULL in place); no table
refers to it, so nothing cascades.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LARGE = "size >= 67108864"  # publish.core.UNHASHED_MIN; the queries repeat it so the planner uses the index


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column("digest", existing_type=sa.String(64), nullable=True)
    op.create_index("ix_blobs_large_size", "blobs", ["size"],
                    sqlite_where=sa.text(LARGE), postgresql_where=sa.text(LARGE))


def downgrade() -> None:
    op.drop_index("ix_blobs_large_size", table_name="blobs")
    # Uploads still waiting for their digest cannot be kept; their clients start over.
    # Their files stay in DATA/uploads until `tether gc` finds them without a row (a day on).
    op.execute("DELETE FROM uploads WHERE digest IS NULL")
    with op.batch_alter_table("uploads") as batch:
        batch.alter_column("digest", existing_type=sa.String(64), nullable=False)
