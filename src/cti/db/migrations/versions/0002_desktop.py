"""Agent desktop: users, tickets, call_customers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), server_default="fr", nullable=False),
        sa.Column("interfaces", sa.JSON(), nullable=False),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.current_timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "tickets",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("server", sa.Text(), nullable=False),
        sa.Column("linkedid", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=True),
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("opened_at", TIMESTAMP, nullable=False),
        sa.Column("resolved_at", TIMESTAMP, nullable=True),
        sa.Column("hold_started_at", TIMESTAMP, nullable=True),
        sa.Column("held_s", sa.Double(), server_default="0", nullable=False),
        sa.Column("sla_target_s", sa.Double(), nullable=True),
        sa.Column("breached_at", TIMESTAMP, nullable=True),
        sa.Column("reopened", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.current_timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name="fk_tickets_customer_id_customers", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
    )
    op.create_index("ix_tickets_linkedid", "tickets", ["linkedid"])
    op.create_index("ix_tickets_customer_id", "tickets", ["customer_id"])
    op.create_index("ix_tickets_agent_status", "tickets", ["agent", "status"])
    op.create_index("ix_tickets_opened_at", "tickets", ["opened_at"])
    op.create_table(
        "call_customers",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("server", sa.Text(), nullable=False),
        sa.Column("linkedid", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("chosen_by", sa.Text(), nullable=True),
        sa.Column("chosen_at", TIMESTAMP, server_default=sa.func.current_timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_call_customers_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_call_customers"),
        sa.UniqueConstraint("server", "linkedid", name="uq_call_customers_server_linkedid"),
    )
    op.create_index("ix_call_customers_customer_id", "call_customers", ["customer_id"])


def downgrade() -> None:
    op.drop_table("call_customers")
    op.drop_index("ix_tickets_opened_at", "tickets")
    op.drop_index("ix_tickets_agent_status", "tickets")
    op.drop_index("ix_tickets_customer_id", "tickets")
    op.drop_index("ix_tickets_linkedid", "tickets")
    op.drop_table("tickets")
    op.drop_table("users")
