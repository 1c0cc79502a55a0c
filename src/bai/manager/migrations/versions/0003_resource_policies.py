"""Keypair resource policies; every keypair gets one ("default"); sessions keep their limits.

Revision ID: 0003
Revises: 0002
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: the policy every keypair starts on. Its values follow ManagerConfig's defaults (no
#: exec timeout) and Backend.AI's (an hour's idle timeout); a test checks them.
DEFAULT_POLICY: dict[str, object] = {
    "name": "default",
    "total_resource_slots": {},
    "max_session_slots": {},
    "max_pids": None,
    "max_scratch_bytes": None,
    "exec_timeout_s": None,
    "idle_timeout_s": 3600.0,
    "max_session_lifetime_s": None,
    "max_output_bytes": None,
}


def upgrade() -> None:
    policies = op.create_table(
        "resource_policies",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("total_resource_slots", sa.JSON, nullable=False),
        sa.Column("max_session_slots", sa.JSON, nullable=False),
        sa.Column("max_pids", sa.Integer, nullable=True),
        sa.Column("max_scratch_bytes", sa.BigInteger, nullable=True),
        sa.Column("exec_timeout_s", sa.Float, nullable=True),
        sa.Column("idle_timeout_s", sa.Float, nullable=True),
        sa.Column("max_session_lifetime_s", sa.Float, nullable=True),
        sa.Column("max_output_bytes", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(policies, [{**DEFAULT_POLICY, "created_at": datetime.now(UTC)}])
    with op.batch_alter_table("keypairs") as batch:
        batch.add_column(sa.Column("resource_policy", sa.String(64), nullable=False, server_default="default"))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("limits", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("limits")
    with op.batch_alter_table("keypairs") as batch:
        batch.drop_column("resource_policy")
    op.drop_table("resource_policies")
