"""Live figures after a restart: today's tables rebuilt from the database.

The live view is a sum of contributions (`stats/live.py`): one per call, one per agent-state
span. After a restart the stored calls and spans give them back, through the same functions the
live path uses (`LiveStats.restore_call` / `restore_span`), so the rebuilt day equals the one the
previous daemon showed and the one `cti stats` computes (docs/metrics.md, "Live figures after a
restart"). Read here:

- spans started today, summed in SQL per agent, state, reason and queue (every counter of a
  span is proportional to its duration, so a sum counts as one span);
- calls started today, a page at a time, and the few that started earlier but joined a queue
  today or were still in progress at the stop (`closed_by="shutdown"`: they are open again).

Pages are small and each stored call is absorbed between yields to the loop (`cti.slices`): the
loop carries the screen pops. The caller decides which stored calls to leave to their events
(`left_to_events`): those this daemon itself ended, which the call writer may store before the
pages reach them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, union
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.calls_store import load_calls, record_from_row
from cti.slices import Slice, next_turn
from cti.stats.history import CALLS, SEGMENTS, SPANS
from cti.stats.live import CallKey, LiveStats

# Calls per page: a page's rows are converted in one step of the loop (about 40 µs a call with
# its segments), so a page stays near one slice of background work.
PAGE_CALLS = 25
# Ids of calls started before today, per read.
PAGE_IDS = 500


@dataclass
class Restored:
    """What a rebuild found (logged at start)."""

    day: date
    calls: int = 0
    open_calls: int = 0
    left_to_events: int = 0
    span_groups: int = 0
    agents: int = 0
    seconds: float = 0.0

    def to_log(self) -> dict[str, Any]:
        out = asdict(self)
        out["day"] = self.day.isoformat()
        out["seconds"] = round(self.seconds, 3)
        return out


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def span_totals_statement(start: float, end: float) -> Select[Any]:
    """Time per agent, state, reason and queue over the spans that started in [start, end)
    (spans are stored cut at quarter hours: each piece lies within one local day)."""
    p = SPANS.c
    return (
        select(
            p.server,
            p.interface,
            p.state,
            p.reason,
            p.queue,
            func.max(p.agent).label("agent"),
            func.sum(p.duration_s).label("seconds"),
            func.max(p.ended_at).label("last_ended_at"),
        )
        .where(p.started_at >= _utc(start), p.started_at < _utc(end))
        .group_by(p.server, p.interface, p.state, p.reason, p.queue)
    )


def earlier_calls_statement(start: float, horizon: float) -> Select[Any]:
    """Calls started before `start` that still matter today: a queue joined since `start`, or
    in progress at the stop and started since `horizon` (yesterday's start)."""
    c, s = CALLS.c, SEGMENTS.c
    joined_today = (
        select(s.call_id.label("id"))
        .select_from(SEGMENTS.join(CALLS, c.id == s.call_id))
        .where(s.joined_at >= _utc(start), c.started_at < _utc(start))
    )
    still_open = select(c.id).where(
        c.closed_by == "shutdown", c.started_at >= _utc(horizon), c.started_at < _utc(start)
    )
    return select(union(joined_today, still_open).subquery().c.id)


async def restore_today(
    engine: AsyncEngine,
    live: LiveStats,
    now: float,
    left_to_events: Callable[[CallKey], bool] = lambda _key: False,
) -> Restored:
    """Add today's stored calls and spans to `live` (whose own events, if any, are held by the
    caller until this returns)."""
    started = time.perf_counter()
    today = live.day_of(now)
    start = live.day_start(today)
    end = live.day_start(today + timedelta(days=1))
    done = Restored(today)
    await _restore_spans(engine, live, today, start, end, done)
    async with engine.connect() as conn:
        earlier = sorted(row.id for row in await conn.execute(earlier_calls_statement(start, start - 86400)))
    for i in range(0, len(earlier), PAGE_IDS):
        rows = await load_calls(engine, where=CALLS.c.id.in_(earlier[i : i + PAGE_IDS]))
        await _absorb(live, rows, today, left_to_events, done)
    after: tuple[datetime, int] | None = None
    while True:
        page = CALLS.c.started_at >= _utc(start)
        if after is not None:
            page = and_(
                page,
                or_(
                    CALLS.c.started_at > after[0], and_(CALLS.c.started_at == after[0], CALLS.c.id > after[1])
                ),
            )
        rows = await load_calls(engine, where=page, limit=PAGE_CALLS)
        await _absorb(live, rows, today, left_to_events, done)
        if len(rows) < PAGE_CALLS:
            break
        after = (rows[-1]["started_at"], rows[-1]["id"])
    live.finish_restore(now)
    done.agents = len(live.board.agents)
    done.seconds = time.perf_counter() - started
    return done


async def _restore_spans(
    engine: AsyncEngine, live: LiveStats, today: date, start: float, end: float, done: Restored
) -> None:
    async with engine.connect() as conn:
        rows = (await conn.execute(span_totals_statement(start, end))).all()
    work = Slice()
    for row in rows:
        last = row.last_ended_at.timestamp() if row.last_ended_at is not None else 0.0
        live.restore_span(
            row.server,
            row.interface,
            row.agent,
            row.state,
            row.reason,
            row.queue,
            row.seconds or 0.0,
            today,
            last,
        )
        done.span_groups += 1
        if work.over():
            await next_turn()
            work.restart()


async def _absorb(
    live: LiveStats,
    rows: Sequence[dict[str, Any]] | Iterable[dict[str, Any]],
    today: date,
    left_to_events: Callable[[CallKey], bool],
    done: Restored,
) -> None:
    work = Slice()
    for row in rows:
        if left_to_events((row["server"], row["linkedid"])):
            # This daemon ended it (and its writer stored it): its CallEnded counts it.
            done.left_to_events += 1
            continue
        still_open = row["closed_by"] == "shutdown"
        live.restore_call(record_from_row(row), today, still_open)
        done.calls += 1
        done.open_calls += still_open
        if work.over():
            await next_turn()
            work.restart()
