"""Today's abandoned calls, for the supervisor's callback list: each caller who hung up waiting
(or was timed out of a queue), whether someone has reached them since (a later answered call
from or to the same number), newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import Call

LOST = ("abandoned", "timeout")
REACHED = ("answered", "outbound_answered")
COLUMNS: list[Any] = [Call.linkedid, Call.server, Call.caller_e164, Call.caller_raw, Call.queue]
COLUMNS += [Call.started_at, Call.wait_s, Call.outcome]


async def abandoned_since(engine: AsyncEngine, since: datetime, limit: int = 200) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        lost = (
            await conn.execute(
                select(*COLUMNS)
                .where(Call.started_at >= since, Call.outcome.in_(LOST), Call.direction == "inbound")
                .order_by(Call.started_at.desc())
                .limit(limit)
            )
        ).all()
        numbers = sorted({row.caller_e164 for row in lost if row.caller_e164})
        reached = (
            (
                await conn.execute(
                    select(Call.caller_e164, Call.called, Call.started_at).where(
                        Call.started_at >= since,
                        Call.outcome.in_(REACHED),
                        or_(Call.caller_e164.in_(numbers), Call.called.in_(numbers)),
                    )
                )
            ).all()
            if numbers
            else []
        )
    last_reached: dict[str, datetime] = {}
    for row in reached:
        for number in (row.caller_e164, row.called):
            if number and (number not in last_reached or row.started_at > last_reached[number]):
                last_reached[number] = row.started_at
    return [
        {
            "server": row.server,
            "linkedid": row.linkedid,
            "number": row.caller_e164,
            "raw": row.caller_raw,
            "queue": row.queue,
            "started_at": row.started_at.isoformat(),
            "wait_s": row.wait_s,
            "outcome": row.outcome,
            "called_back": row.caller_e164 is not None
            and last_reached.get(row.caller_e164, since) > row.started_at,
        }
        for row in lost
    ]
