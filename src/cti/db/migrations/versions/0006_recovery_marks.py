"""Recovery after a gap: how far each Asterisk server's events were seen and stored.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recovery_marks",
        sa.Column("server", sa.Text(), nullable=False),
        sa.Column("seen_until", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("server", name="pk_recovery_marks"),
    )


def downgrade() -> None:
    op.drop_table("recovery_marks")
