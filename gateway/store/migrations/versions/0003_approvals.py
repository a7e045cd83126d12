"""Approvals: answers held for a person, and the trust agents earn.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("decision_id", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("condition", sa.Text, nullable=False),
        sa.Column("tier", sa.String(128), nullable=False),
        sa.Column("confidence", sa.Double, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("decided_at", sa.Double),
        sa.Column("note", sa.Text),
        sa.Column("edited", sa.Text),
        sa.Column("automatic", sa.Boolean, nullable=False),
        sa.Column("review", sa.String(16)),
        sa.Column("delivered", sa.Boolean, nullable=False),
    )
    op.create_index("ix_approvals_status_time", "approvals", ["status", "time"])
    op.create_index("ix_approvals_agent_request", "approvals", ["agent", "request_hash", "time"])
    op.create_table(
        "trust",
        sa.Column("agent", sa.String(128), primary_key=True),
        sa.Column("condition", sa.String(512), primary_key=True),
        sa.Column("streak", sa.Integer, nullable=False),
        sa.Column("trusted", sa.Boolean, nullable=False),
        sa.Column("since", sa.Double, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trust")
    op.drop_table("approvals")
