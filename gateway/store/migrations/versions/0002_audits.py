"""Audits, and what feedback says of an answer (agreed, its tier and confidence).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audits",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("tier", sa.String(128), nullable=False),
        sa.Column("label", sa.Text),
        sa.Column("confidence", sa.Double),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("reference_label", sa.Text),
        sa.Column("agreed", sa.Boolean, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
    )
    op.create_index("ix_audits_route_time", "audits", ["route", "time"])
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("agreed", sa.Boolean))
        batch.add_column(sa.Column("tier", sa.String(128)))
        batch.add_column(sa.Column("confidence", sa.Double))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("confidence")
        batch.drop_column("tier")
        batch.drop_column("agreed")
    op.drop_table("audits")
