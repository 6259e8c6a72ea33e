"""uploads in progress as leases in the database, so their caps hold across replicas

One row per upload in progress (blob PUT, batch, one-file PUT, resumable chunk),
held by the replica serving it and renewed while the upload runs. A request is
let in only while its token and its user hold fewer than ``uploads_per_token`` and
``uploads_per_user`` live leases, counted in the database, so a client spread over
several replicas gets the limits once. A replica that dies stops renewing its leases,
and they lapse after ``upload_lease_seconds``.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_leases",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_upload_leases_user", "upload_leases", ["user"])


def downgrade() -> None:
    op.drop_index("ix_upload_leases_user", table_name="upload_leases")
    op.drop_table("upload_leases")
