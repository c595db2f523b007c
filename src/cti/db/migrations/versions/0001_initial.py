"""Initial schema: calls, call_segments, customers, customer_phones.

Revision ID: 0001
Revises:
Create Date: 2024-06-01 00:00:00

Written by hand against cti.db.models; tests/test_db.py checks that an upgraded database has no
difference with the models on SQLite and PostgreSQL. Types are spelled out here rather than
imported from the models, so that later model changes cannot rewrite history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only auto-numbers INTEGER PRIMARY KEY columns.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def _create_calls() -> None:
    op.create_table(
        "calls",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("server", sa.Text(), nullable=False),
        sa.Column("linkedid", sa.Text(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("answered_at", TIMESTAMP, nullable=True),
        sa.Column("caller_raw", sa.Text(), nullable=True),
        sa.Column("caller_e164", sa.Text(), nullable=True),
        sa.Column("caller_name", sa.Text(), nullable=True),
        sa.Column("called", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("hangup_by", sa.Text(), nullable=False),
        sa.Column("hangup_cause", sa.Integer(), nullable=True),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("agent", sa.Text(), nullable=True),
        sa.Column("agent_interface", sa.Text(), nullable=True),
        sa.Column("wait_s", sa.Double(), nullable=True),
        sa.Column("ring_s", sa.Double(), nullable=True),
        sa.Column("talk_s", sa.Double(), nullable=True),
        sa.Column("transfers", sa.Integer(), nullable=False),
        sa.Column("transferred_to", sa.JSON(), nullable=False),
        sa.Column("originate_reason", sa.Integer(), nullable=True),
        sa.Column("campaign", sa.Text(), nullable=True),
        sa.Column("contact", sa.Text(), nullable=True),
        sa.Column("closed_by", sa.Text(), nullable=False),
        sa.Column("ivr_path", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.UniqueConstraint("server", "linkedid", name="uq_calls_server_linkedid"),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_queue_started_at", "calls", ["queue", "started_at"])
    op.create_index("ix_calls_agent_started_at", "calls", ["agent", "started_at"])
    op.create_index("ix_calls_caller_e164", "calls", ["caller_e164"])
    op.create_index("ix_calls_outcome", "calls", ["outcome"])


def _create_call_segments() -> None:
    op.create_table(
        "call_segments",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("call_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("joined_at", TIMESTAMP, nullable=False),
        sa.Column("left_at", TIMESTAMP, nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("agent", sa.Text(), nullable=True),
        sa.Column("interface", sa.Text(), nullable=True),
        sa.Column("wait_s", sa.Double(), nullable=True),
        sa.Column("ring_s", sa.Double(), nullable=True),
        sa.Column("talk_s", sa.Double(), nullable=True),
        sa.Column("completed_by", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("ring_attempts", sa.Integer(), nullable=False),
        sa.Column("ring_no_answer", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_segments"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_call_segments_call_id_calls", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("call_id", "seq", name="uq_call_segments_call_id_seq"),
    )
    op.create_index("ix_call_segments_queue_joined_at", "call_segments", ["queue", "joined_at"])


def _create_customers() -> None:
    op.create_table(
        "customers",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("account", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("vip", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("queue_priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.current_timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
    )
    op.create_index("ix_customers_account", "customers", ["account"])
    op.create_table(
        "customer_phones",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("e164", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_customer_phones"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_customer_phones_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("customer_id", "e164", name="uq_customer_phones_customer_id_e164"),
    )
    op.create_index("ix_customer_phones_e164", "customer_phones", ["e164"])


def upgrade() -> None:
    _create_calls()
    _create_call_segments()
    _create_customers()


def downgrade() -> None:
    op.drop_table("customer_phones")
    op.drop_table("customers")
    op.drop_table("call_segments")
    op.drop_table("calls")
