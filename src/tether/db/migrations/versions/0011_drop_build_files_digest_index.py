"""Drop the index of build_files by digest

Every file a build commits added an entry to ``ix_build_files_digest``, keyed by
a random digest: for a 10,000-file build, 10,000 inserts scattered over the whole
index, which took more of the commit's time than the rows themselves (the commit,
serial at the end of every publish, went from ~0.12 to ~0.08 s on the benchmark's
machine). Its only reader was gc, asking per blob whether any build names it. gc
now answers that for all blobs at once, with one pass over build_files (an
anti-join), so it does not need the index: publishing is frequent, gc is not.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_build_files_digest", table_name="build_files")


def downgrade() -> None:
    op.create_index("ix_build_files_digest", "build_files", ["digest"], unique=False)
