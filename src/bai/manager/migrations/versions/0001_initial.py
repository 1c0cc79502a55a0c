"""Keypairs, sessions and agents.

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
        "keypairs",
        sa.Column("access_key", sa.String(20), primary_key=True),
        sa.Column("secret_key", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("concurrency_limit", sa.Integer, nullable=False),
        sa.Column("rate_limit", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, index=True),
        sa.Column("access_key", sa.String(20), nullable=False, index=True),
        sa.Column("image", sa.String(128), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("tag", sa.String(256), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("status_info", sa.Text, nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("requested_slots", sa.JSON, nullable=False),
        sa.Column("occupied_slots", sa.JSON, nullable=False),
        sa.Column("environ", sa.JSON, nullable=False),
        sa.Column("num_queries", sa.Integer, nullable=False),
        sa.Column("last_stat", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("terminated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("rpc_url", sa.String(256), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("capacity", sa.JSON, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agents")
    op.drop_table("sessions")
    op.drop_table("keypairs")
