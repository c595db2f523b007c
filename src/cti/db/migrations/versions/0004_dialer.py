"""Outbound dialer: dialer_campaigns, dialer_contacts, dialer_attempts, dialer_dnc.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
NOW = sa.func.current_timestamp()


def upgrade() -> None:
    _campaigns()
    _contacts()
    _attempts()
    op.create_table(
        "dialer_dnc",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("phone_e164", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("added_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dialer_dnc"),
        sa.UniqueConstraint("scope", "phone_e164", name="uq_dialer_dnc_scope_phone_e164"),
    )
    op.create_index("ix_dialer_dnc_phone_e164", "dialer_dnc", ["phone_e164"])


def _campaigns() -> None:
    op.create_table(
        "dialer_campaigns",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), server_default="outbound", nullable=False),
        sa.Column("agent_group", sa.JSON(), nullable=False),
        sa.Column("dial_mode", sa.Text(), nullable=False),
        sa.Column("caller_id", sa.Text(), nullable=True),
        sa.Column("ruleset", sa.Text(), nullable=False),
        sa.Column("ruleset_toml", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), server_default="FR", nullable=False),
        sa.Column("principal", sa.Text(), nullable=True),
        sa.Column("retry_policy", sa.JSON(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="4", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("ring_timeout_s", sa.Integer(), server_default="25", nullable=False),
        sa.Column("amd", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("max_ratio", sa.Double(), server_default="2.5", nullable=False),
        sa.Column("abandon_limit", sa.Double(), server_default="0.03", nullable=False),
        sa.Column("abandon_window_s", sa.Integer(), server_default="2592000", nullable=False),
        sa.Column("starts_at", TIMESTAMP, nullable=True),
        sa.Column("stops_at", TIMESTAMP, nullable=True),
        sa.Column("state", sa.Text(), server_default="draft", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dialer_campaigns"),
        sa.UniqueConstraint("name", name="uq_dialer_campaigns_name"),
    )


def _contacts() -> None:
    op.create_table(
        "dialer_contacts",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("phone_e164", sa.Text(), nullable=False),
        sa.Column("phone_raw", sa.Text(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=True),
        sa.Column("country", sa.Text(), nullable=True),
        sa.Column("subdivision", sa.Text(), nullable=True),
        sa.Column("consent", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("why_code", sa.Text(), nullable=True),
        sa.Column("why_not_dialed", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("callback_agent", sa.Text(), nullable=True),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["dialer_campaigns.id"],
            name="fk_dialer_contacts_campaign_id_dialer_campaigns",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dialer_contacts"),
        sa.UniqueConstraint("campaign_id", "phone_e164", name="uq_dialer_contacts_campaign_id_phone_e164"),
    )
    op.create_index(
        "ix_dialer_contacts_campaign_id_status_next_attempt_at",
        "dialer_contacts",
        ["campaign_id", "status", "next_attempt_at"],
    )


def _attempts() -> None:
    op.create_table(
        "dialer_attempts",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("phone_e164", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=True),
        sa.Column("server", sa.Text(), nullable=True),
        sa.Column("linkedid", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.Column("answered_at", TIMESTAMP, nullable=True),
        sa.Column("connected_at", TIMESTAMP, nullable=True),
        sa.Column("agent_at", TIMESTAMP, nullable=True),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("originate_reason", sa.Integer(), nullable=True),
        sa.Column("hangup_cause", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("abandoned", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("disposition", sa.Text(), nullable=True),
        sa.Column("disposition_at", TIMESTAMP, nullable=True),
        sa.Column("disposition_by", sa.Text(), nullable=True),
        sa.Column("callback_at", TIMESTAMP, nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["dialer_campaigns.id"],
            name="fk_dialer_attempts_campaign_id_dialer_campaigns",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["dialer_contacts.id"],
            name="fk_dialer_attempts_contact_id_dialer_contacts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_dialer_attempts"),
        sa.UniqueConstraint("action_id", name="uq_dialer_attempts_action_id"),
    )
    op.create_index(
        "ix_dialer_attempts_phone_e164_created_at", "dialer_attempts", ["phone_e164", "created_at"]
    )
    op.create_index(
        "ix_dialer_attempts_campaign_id_connected_at", "dialer_attempts", ["campaign_id", "connected_at"]
    )
    op.create_index("ix_dialer_attempts_state", "dialer_attempts", ["state"])
    op.create_index("ix_dialer_attempts_contact_id", "dialer_attempts", ["contact_id"])


def downgrade() -> None:
    op.drop_table("dialer_attempts")
    op.drop_table("dialer_contacts")
    op.drop_table("dialer_dnc")
    op.drop_table("dialer_campaigns")
