"""resumable uploads any replica can continue: their state in the database

``uploads.received`` is where an upload stands (the bytes recorded so far), and
``upload_pieces`` lists the pieces that hold them, each a file or object of its
own in the shared blob store (``uploads/<id>/<name>``), in order of ``start``.
``uploads.finishing_at`` marks an upload being stored as its blob by one replica.

Uploads in progress when this runs kept their bytes in one hub's DATA/uploads:
they now stand at 0, and their clients send them again (`tether gc` removes the
old files a day on).

Revision ID: 0016
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("received", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("finishing_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "upload_pieces",
        sa.Column("upload_id", sa.String(length=32), sa.ForeignKey("uploads.id", ondelete="CASCADE"), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "start"),
    )


def downgrade() -> None:
    op.drop_table("upload_pieces")
    # the pieces in the blob store stay until `tether gc` finds no upload for them
    op.execute("DELETE FROM uploads")
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("finishing_at")
        batch.drop_column("received")
