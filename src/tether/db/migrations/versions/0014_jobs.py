"""jobs: multi-node rendezvous groups, their nodes, messages and barriers

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op


revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("space_id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_after", sa.Float(), nullable=True),
        sa.Column("essential", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["space_id"], ["spaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_job_groups_space_id", "job_groups", ["space_id"])

    op.create_table(
        "job_nodes",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=128), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waiting_on", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["job_groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "name"),
    )
    op.create_table(
        "job_messages",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["job_groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "message_id", "node"),
    )
    op.create_table(
        "job_syncs",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("sync_id", sa.String(length=128), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("reached", sa.Integer(), nullable=False),
        sa.Column("told", sa.Integer(), nullable=False),
        sa.Column("call", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["job_groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "sync_id", "node"),
    )


def downgrade() -> None:
    for table in ("job_syncs", "job_messages", "job_nodes"):
        op.drop_table(table)
    op.drop_index("ix_job_groups_space_id", table_name="job_groups")
    op.drop_table("job_groups")
