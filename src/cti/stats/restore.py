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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, union
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cti.db.calls_store import record_from_row
from cti.slices import Slice, next_turn
from cti.stats.history import CALLS, SEGMENTS, SPANS
from cti.stats.live import CallKey, LiveStats

# Calls per read (with their segments in a second one): the rows come back in one piece, and are
# converted and absorbed between turns of the loop.
PAGE_CALLS = 100


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
    done = Restored(today)
    read = _Reading(live, today, now, left_to_events, done)
    async with engine.connect() as conn:
        await read.spans(conn)
        await read.earlier_calls(conn)
        await read.todays_calls(conn)
    live.finish_restore(now)
    done.agents = len(live.board.agents)
    done.seconds = time.perf_counter() - started
    return done


class _Turns:
    """Yields to the loop when the current slice of work is spent (`cti.slices`)."""

    def __init__(self) -> None:
        self.slice = Slice()

    async def turn(self) -> None:
        if self.slice.over():
            await next_turn()
            self.slice.restart()


async def _page(
    conn: AsyncConnection, where: Any, work: _Turns, limit: int | None = None
) -> list[dict[str, Any]]:
    """Calls (oldest first) with their segments, as `load_calls` gives them; the rows are
    converted one at a time between turns (a whole page at once would be one long step)."""
    calls = []
    for row in await conn.execute(
        select(CALLS).where(where).order_by(CALLS.c.started_at, CALLS.c.id).limit(limit)
    ):
        calls.append({**row._mapping, "segments": []})
        await work.turn()
    by_id = {call["id"]: call for call in calls}
    if by_id:
        segments = select(SEGMENTS).where(SEGMENTS.c.call_id.in_(list(by_id)))
        for row in await conn.execute(segments.order_by(SEGMENTS.c.call_id, SEGMENTS.c.seq)):
            by_id[row.call_id]["segments"].append(dict(row._mapping))
            await work.turn()
    return calls


@dataclass
class _Reading:
    live: LiveStats
    today: date
    now: float
    left_to_events: Callable[[CallKey], bool]
    done: Restored
    work: _Turns = field(default_factory=_Turns)

    @property
    def start(self) -> float:
        return self.live.day_start(self.today)

    async def spans(self, conn: AsyncConnection) -> None:
        end = self.live.day_start(self.today + timedelta(days=1))
        for row in await conn.execute(span_totals_statement(self.start, end)):
            last = row.last_ended_at.timestamp() if row.last_ended_at is not None else 0.0
            self.live.restore_span(
                row.server,
                row.interface,
                row.agent,
                row.state,
                row.reason,
                row.queue,
                row.seconds or 0.0,
                self.today,
                last,
            )
            self.done.span_groups += 1
            await self.work.turn()

    async def earlier_calls(self, conn: AsyncConnection) -> None:
        yesterday = self.live.day_start(self.today - timedelta(days=1))
        ids = [row.id for row in await conn.execute(earlier_calls_statement(self.start, yesterday))]
        for i in range(0, len(ids), PAGE_CALLS):
            await self._absorb(await _page(conn, CALLS.c.id.in_(ids[i : i + PAGE_CALLS]), self.work))

    async def todays_calls(self, conn: AsyncConnection) -> None:
        """A page at a time in (started_at, id) order: each read starts after the last call of
        the page before (calls starting at the same instant are told apart by id)."""
        after: tuple[datetime, int] | None = None
        while True:
            where = CALLS.c.started_at >= _utc(self.start)
            if after is not None:
                where = and_(
                    where,
                    or_(
                        CALLS.c.started_at > after[0],
                        and_(CALLS.c.started_at == after[0], CALLS.c.id > after[1]),
                    ),
                )
            calls = await _page(conn, where, self.work, PAGE_CALLS)
            await self._absorb(calls)
            if len(calls) < PAGE_CALLS:
                return
            after = (calls[-1]["started_at"], calls[-1]["id"])

    async def _absorb(self, rows: Iterable[dict[str, Any]]) -> None:
        done = self.done
        for row in rows:
            if self.left_to_events((row["server"], row["linkedid"])):
                # This daemon ended it (and its writer may have stored it): its event counts it.
                done.left_to_events += 1
                continue
            still_open = row["closed_by"] == "shutdown"
            self.live.restore_call(record_from_row(row), self.today, still_open, self.now)
            done.calls += 1
            done.open_calls += still_open
            await self.work.turn()
