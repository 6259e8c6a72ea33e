"""app_versions.tcp_port: a version whose app listens on 127.0.0.1:PORT inside its own
network namespace (``tether app register --tcp PORT``) instead of on $TETHER_SOCKET

(Numbered 0020 by the branch that made it; it follows 0019, app shares and disk. Migrations
merged between them go before it: set ``down_revision`` to the newest of them.)

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("app_versions") as batch:
        batch.add_column(sa.Column("tcp_port", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("app_versions") as batch:
        batch.drop_column("tcp_port")
