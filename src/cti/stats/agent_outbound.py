"""An agent's outbound figures since a given instant (the desktop's "Ma journée"): the calls they
qualified, the contacts argued (argued, sale, appointment: the right person heard the whole
pitch) and the conversion (sales and appointments ÷ contacts argued), from the dispositions they
gave (`dialer_attempts.disposition_by`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import DialerAttempt
from cti.dialer.dispositions import ARGUED, CONVERTED


async def outbound_figures(engine: AsyncEngine, agent: str, since: datetime) -> dict[str, Any]:
    a = DialerAttempt
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(a.disposition, func.count())
                .where(a.disposition_by == agent, a.disposition_at >= since, a.disposition.is_not(None))
                .group_by(a.disposition)
            )
        ).all()
    counts = {str(d): int(n) for d, n in rows}
    argued = sum(counts.get(d, 0) for d in ARGUED)
    converted = sum(counts.get(d, 0) for d in CONVERTED)
    return {
        "qualified": sum(counts.values()),
        "argued": argued,
        "converted": converted,
        "conversion": round(converted / argued, 4) if argued else None,
    }
