"""The Asterisk server a campaign dials on (issue 20: several PBXs in one daemon).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 01:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: the first configured server, which is where every campaign dialled before.
    with op.batch_alter_table("dialer_campaigns") as batch:
        batch.add_column(sa.Column("server", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dialer_campaigns") as batch:
        batch.drop_column("server")
