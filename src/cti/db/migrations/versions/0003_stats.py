"""Statistics: agent_state_spans, and an index on call_segments.joined_at for interval reports.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agent_state_spans",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("server", sa.Text(), nullable=False),
        sa.Column("interface", sa.Text(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_state_spans"),
    )
    op.create_index("ix_agent_state_spans_started_at", "agent_state_spans", ["started_at"])
    op.create_index(
        "ix_agent_state_spans_interface_started_at", "agent_state_spans", ["interface", "started_at"]
    )
    op.create_index("ix_agent_state_spans_state_started_at", "agent_state_spans", ["state", "started_at"])
    op.create_index("ix_call_segments_joined_at", "call_segments", ["joined_at"])


def downgrade() -> None:
    op.drop_index("ix_call_segments_joined_at", "call_segments")
    op.drop_index("ix_agent_state_spans_state_started_at", "agent_state_spans")
    op.drop_index("ix_agent_state_spans_interface_started_at", "agent_state_spans")
    op.drop_index("ix_agent_state_spans_started_at", "agent_state_spans")
    op.drop_table("agent_state_spans")
