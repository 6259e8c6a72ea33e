"""app_shares (an instance shared with a named user), app_versions.disk_bytes (/data's size),
app_instances.data_at (the replica whose apps_root holds an instance's /data)

(Numbered 0019 by the branch that made it; it follows 0018, upload leases. Migrations merged
between them go before it: set ``down_revision`` to the newest of them.)

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_shares",
        sa.Column("instance_id", sa.Integer(), sa.ForeignKey("app_instances.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("app_versions") as batch:
        batch.add_column(sa.Column("disk_bytes", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("app_instances") as batch:
        batch.add_column(sa.Column("data_at", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("app_instances") as batch:
        batch.drop_column("data_at")
    with op.batch_alter_table("app_versions") as batch:
        batch.drop_column("disk_bytes")
    op.drop_table("app_shares")
