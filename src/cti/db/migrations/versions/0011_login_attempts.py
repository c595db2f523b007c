"""Login attempts shared by the nodes of one database (issue 20: the login limiter counted per
node, so an attacker spreading attempts over three nodes got three times the tries).

`login_attempts`: one row per attempt that reached a password check, by limiter key
("u:<username>", "a:<address>"), stamped on PostgreSQL's clock; web/login_limits.py counts
them over a sliding minute and deletes the expired ones. SQLite (one node) gets the table too
and leaves it empty.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 06:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_attempts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_login_attempts"),
    )
    op.create_index("ix_login_attempts_key_at", "login_attempts", ["key", "at"])


def downgrade() -> None:
    op.drop_index("ix_login_attempts_key_at", table_name="login_attempts")
    op.drop_table("login_attempts")
