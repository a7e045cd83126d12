"""Batches: files, batch jobs and their lines.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(64), nullable=False),
        sa.Column("output_file_id", sa.String(64)),
        sa.Column("error_file_id", sa.String(64)),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("stamps", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text),
    )
    op.create_index("ix_batches_status", "batches", ["status"])
    op.create_index("ix_batches_agent_time", "batches", ["agent", "time"])
    op.create_table(
        "batch_lines",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("custom_id", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.Text),
        sa.Column("owner", sa.String(128)),
        sa.Column("claimed_at", sa.Double),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_batch_lines_status", "batch_lines", ["batch_id", "status"])


def downgrade() -> None:
    op.drop_table("batch_lines")
    op.drop_table("batches")
    op.drop_table("files")
