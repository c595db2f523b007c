"""What the recovery after a gap reads and writes in cti's own database (calls/recovery.py): how
far each server's events were seen and stored (`recovery_marks`), and which calls are recorded."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.calls_store import Fence
from cti.db.models import Call, RecoveryMark
from cti.values import utc

CALLS: Table = Call.__table__  # type: ignore[assignment]
MARKS: Table = RecoveryMark.__table__  # type: ignore[assignment]
_CHUNK = 1000  # linkedids per IN (...): well under the bound-parameter limits
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class RecoveryStore:
    def __init__(self, engine: AsyncEngine, fence: Fence | None = None) -> None:
        self._engine = engine
        # Several daemons (db/leases.py): a mark is written only under this daemon's token.
        self._fence = fence
        self._insert = _INSERTS[engine.dialect.name]

    async def mark(self, server: str) -> float | None:
        """The instant (Asterisk's clock) up to which `server`'s calls are stored; None if the
        daemon never ran against it with recovery on."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(MARKS.c.seen_until).where(MARKS.c.server == server))
        return None if value is None else _aware(value).timestamp()

    async def save_mark(self, server: str, seen_until: float) -> None:
        at = utc(seen_until)
        if at is None:
            return
        row = {"server": server, "seen_until": at, "updated_at": datetime.now(UTC)}
        stmt: Any = self._insert(MARKS).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["server"], set_={"seen_until": at, "updated_at": row["updated_at"]}
        )
        async with self._engine.begin() as conn:
            if self._fence is not None:
                await self._fence(conn, (server,))
            await conn.execute(stmt)

    async def recorded(self, server: str, linkedids: Iterable[str]) -> set[str]:
        """Those of `linkedids` that `server` has a stored call for (in progress at a stop too)."""
        wanted = list(dict.fromkeys(linkedids))
        found: set[str] = set()
        async with self._engine.connect() as conn:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                query = select(CALLS.c.linkedid).where(CALLS.c.server == server, CALLS.c.linkedid.in_(chunk))
                found.update(await conn.scalars(query))
        return found


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
