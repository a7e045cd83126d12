"""The console: decisions summed per minute and per hour, console sessions, approvals by decision.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LATENCY_BUCKETS = 14  # gateway.store.schema.LATENCY_EDGES_MS, and one for the rest
CONFIDENCE_BUCKETS = 10


def upgrade() -> None:
    for name in ("decision_minutes", "decision_hours"):
        op.create_table(
            name,
            sa.Column("slot", sa.Integer, primary_key=True),
            sa.Column("agent", sa.String(128), primary_key=True),
            sa.Column("route", sa.String(128), primary_key=True),
            sa.Column("tier", sa.String(128), primary_key=True),
            sa.Column("requests", sa.Integer, nullable=False),
            sa.Column("errors", sa.Integer, nullable=False),
            sa.Column("refused", sa.Integer, nullable=False),
            sa.Column("loops", sa.Integer, nullable=False),
            sa.Column("cache_hits", sa.Integer, nullable=False),
            sa.Column("prompt_tokens", sa.Integer, nullable=False),
            sa.Column("completion_tokens", sa.Integer, nullable=False),
            sa.Column("cost_usd", sa.Double, nullable=False),
            sa.Column("baseline_usd", sa.Double, nullable=False),
            *(sa.Column(f"lat_{i}", sa.Integer, nullable=False) for i in range(LATENCY_BUCKETS)),
            *(sa.Column(f"conf_{i}", sa.Integer, nullable=False) for i in range(CONFIDENCE_BUCKETS)),
        )
        op.create_index(f"ix_{name}_agent", name, ["agent", "slot"])
        op.create_index(f"ix_{name}_route", name, ["route", "slot"])
    op.create_table(
        "console_sessions",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("expires", sa.Double, nullable=False),
    )

    op.create_index("ix_approvals_decision", "approvals", ["decision_id"])


def downgrade() -> None:
    op.drop_index("ix_approvals_decision", "approvals")
    op.drop_table("console_sessions")
    op.drop_table("decision_hours")
    op.drop_table("decision_minutes")
