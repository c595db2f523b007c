"""Work that must happen once happens once (issue 20, item 4): unique keys and named leases.

- `tickets.seq`: the call's first, second... ticket, unique per (server, linkedid): two daemons
  handling the same answer insert the same (server, linkedid, seq) and only one row survives.
- `agent_state_spans`: unique per (server, interface, started_at): one state at a time per
  interface, so two trackers of one PBX store a span once.
- `resource_leases`: a lease with a fencing token on any named resource (a dialer campaign).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 03:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tickets", sa.Column("seq", sa.Integer(), server_default="1", nullable=False))
    # The tickets a call already has, numbered in the order they were opened.
    op.execute(
        "UPDATE tickets SET seq = (SELECT count(*) FROM tickets t2 WHERE t2.server = tickets.server"
        " AND t2.linkedid = tickets.linkedid AND t2.id <= tickets.id)"
    )
    op.create_index("ix_tickets_server_linkedid_seq", "tickets", ["server", "linkedid", "seq"], unique=True)
    # Spans a second tracker of the same PBX wrote again: the first one stays.
    op.execute(
        "DELETE FROM agent_state_spans WHERE id NOT IN"
        " (SELECT min(id) FROM agent_state_spans GROUP BY server, interface, started_at)"
    )
    op.create_index(
        "ix_agent_state_spans_server_interface_started_at",
        "agent_state_spans",
        ["server", "interface", "started_at"],
        unique=True,
    )
    op.create_table(
        "resource_leases",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_resource_leases"),
    )


def downgrade() -> None:
    op.drop_table("resource_leases")
    op.drop_index("ix_agent_state_spans_server_interface_started_at", table_name="agent_state_spans")
    op.drop_index("ix_tickets_server_linkedid_seq", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("seq")
