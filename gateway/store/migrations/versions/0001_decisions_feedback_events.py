"""Decisions, feedback and events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(128)),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_index("ix_decisions_time", "decisions", ["time", "id"])
    op.create_index("ix_decisions_agent_time", "decisions", ["agent", "time"])
    op.create_index("ix_decisions_route_time", "decisions", ["route", "time"])
    op.create_table(
        "feedback",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("label", sa.Text),
        sa.Column("correct", sa.Boolean),
        sa.Column("score", sa.Double),
        sa.Column("comment", sa.Text),
    )
    op.create_index("ix_feedback_route_time", "feedback", ["route", "time"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("route", sa.String(128)),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_events_time", "events", ["time"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("feedback")
    op.drop_table("decisions")
