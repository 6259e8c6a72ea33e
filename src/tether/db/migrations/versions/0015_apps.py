"""apps, app_versions, app_instances, app_grants: sandboxed per-user apps

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op


revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("space_id", sa.Integer(), sa.ForeignKey("spaces.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False, unique=True),
        sa.Column("current_version", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_apps_space_id", "apps", ["space_id"])
    op.create_table(
        "app_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("app_id", sa.Integer(), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("build_id", sa.Integer(), sa.ForeignKey("builds.id", ondelete="SET NULL"), nullable=True),
        sa.Column("build_ref", sa.String(length=400), nullable=False),
        sa.Column("manifest", sa.String(length=64), nullable=False),
        sa.Column("argv", sa.JSON(), nullable=False),
        sa.Column("install_argv", sa.JSON(), nullable=True),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("pids", sa.Integer(), nullable=False),
        sa.Column("grants", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("app_id", "version", name="uq_app_versions_app_version"),
    )
    op.create_index("ix_app_versions_app_id", "app_versions", ["app_id"])
    op.create_table(
        "app_instances",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("app_id", sa.Integer(), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("app_versions.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=False, unique=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("desired", sa.String(length=16), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("token_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("refused", sa.JSON(), nullable=False),
        sa.Column("oom_kills", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("last_activity_at", TZ, nullable=False),
        sa.Column("bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("bytes_down", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("app_id", "user_id", name="uq_app_instances_app_user"),
    )
    op.create_index("ix_app_instances_app_id", "app_instances", ["app_id"])
    op.create_index("ix_app_instances_user_id", "app_instances", ["user_id"])
    op.create_table(
        "app_grants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("instance_id", sa.Integer(), sa.ForeignKey("app_instances.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("proto", sa.String(length=3), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("on_hub", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=True),
        sa.UniqueConstraint("instance_id", "proto", "address", "port", name="uq_app_grants_dest"),
    )
    op.create_index("ix_app_grants_instance_id", "app_grants", ["instance_id"])
    op.create_index("ix_app_grants_expires_at", "app_grants", ["expires_at"])


def downgrade() -> None:
    op.drop_table("app_grants")
    op.drop_table("app_instances")
    op.drop_table("app_versions")
    op.drop_table("apps")
