"""Call scripts set by supervisors, per queue or campaign (`key`; "*" for every other): read by
every desktop, written from the management page. A key without one shows the shipped charter
(web/static/call-scripts.js)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import CallScript


async def load_scripts(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(CallScript.key, CallScript.script))).all()
    return {row.key: dict(row.script) for row in rows}


async def save_script(engine: AsyncEngine, key: str, script: dict[str, Any], by: str) -> None:
    """Create or replace the script of `key`."""
    values = {"script": script, "updated_by": by, "updated_at": datetime.now(UTC)}
    async with engine.begin() as conn:
        await conn.execute(delete(CallScript).where(CallScript.key == key))
        await conn.execute(CallScript.__table__.insert().values(key=key, **values))  # type: ignore[attr-defined]


async def drop_script(engine: AsyncEngine, key: str) -> bool:
    """Back to the shipped charter; False when there was none."""
    async with engine.begin() as conn:
        gone = await conn.execute(delete(CallScript).where(CallScript.key == key))
    return bool(gone.rowcount)
