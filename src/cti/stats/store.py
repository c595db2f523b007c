"""Writing agent-state spans: `SpanWriter` batches them in the background.

Spans close on the event path, which must never wait for the database: `submit` only appends to
a bounded buffer; one task writes it every `flush_interval_s`. An outage grows the buffer (the
oldest spans are dropped beyond `max_pending`, counted and logged) and the write is retried.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.calls_store import Fence
from cti.db.engine import insert_on_conflict
from cti.db.leases import LeaseLost
from cti.db.models import AgentStateSpan
from cti.stats.agents import Span
from cti.values import utc

log = structlog.get_logger(__name__)

SPANS: Table = AgentStateSpan.__table__  # type: ignore[assignment]
# Rows per statement: a statement's parameters are processed in one step of the event loop that
# carries the screen pops, so a second's spans are written in several short steps.
WRITE_ROWS = 100


def span_row(span: Span) -> dict[str, Any]:
    return {
        "server": span.server,
        "interface": span.interface,
        "agent": span.agent,
        "state": span.state,
        "reason": span.reason,
        "queue": span.queue,
        "started_at": datetime.fromtimestamp(span.started_at, UTC),
        "ended_at": datetime.fromtimestamp(span.ended_at, UTC),
        "duration_s": round(span.duration_s, 3),
    }


async def save_spans(engine: AsyncEngine, spans: Iterable[Span], fence: Fence | None = None) -> int:
    """Insert `spans`, each cut at quarter hours, in one transaction (refused whole, LeaseLost,
    when `fence` says this daemon no longer owns one of their servers' streams)."""
    pieces = [piece for span in spans if span.started_at > 0 for piece in span.cut()]
    # A piece no datetime can hold (past year 9999) would fail the whole batch: left out.
    pieces = [p for p in pieces if utc(p.ended_at) is not None]
    async with engine.begin() as conn:
        if fence is not None and pieces:
            await fence(conn, {p.server for p in pieces})
        for i in range(0, len(pieces), WRITE_ROWS):
            # A span another tracker of the same PBX stored already (same interface and start)
            # stays as it is: one state at a time per interface, so the key is natural.
            statement = insert_on_conflict(conn.dialect.name, SPANS).on_conflict_do_nothing(
                index_elements=["server", "interface", "started_at"]
            )
            await conn.execute(statement, [span_row(p) for p in pieces[i : i + WRITE_ROWS]])
    return len(pieces)


class SpanWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        flush_interval_s: float = 1.0,
        max_pending: int = 200_000,
        retry_max_s: float = 30.0,
        fence: Fence | None = None,
    ) -> None:
        self._engine = engine
        # Several daemons (db/leases.py): a server's spans are written only under its token.
        self._fence = fence
        self._fenced_said: set[tuple[str, int]] = set()
        self._interval = flush_interval_s
        self._max_pending = max_pending
        self._retry_max = retry_max_s
        self._pending: deque[Span] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.written = 0
        self.dropped = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cti-span-writer")

    def submit(self, spans: Iterable[Span]) -> None:
        """Never blocks: the spans are written by the background task."""
        self._pending.extend(s for s in spans if s.started_at > 0 and s.ended_at > s.started_at)
        excess = len(self._pending) - self._max_pending
        if excess > 0:
            for _ in range(excess):
                self._pending.popleft()
            self.dropped += excess
            log.error("agent-state spans dropped: the database is not keeping up", dropped_total=self.dropped)

    async def flush(self) -> bool:
        """Write what is pending now; False (and kept) when the database refused."""
        batch = list(self._pending)
        if not batch:
            return True
        try:
            self.written += await save_spans(self._engine, batch, self._fence)
        except LeaseLost as exc:
            self._drop_fenced(exc)
            return await self.flush()
        except Exception as exc:
            self.failures += 1
            log.error(
                "cannot write agent-state spans, keeping them", error=str(exc)[:300], pending=len(batch)
            )
            return False
        for _ in range(len(batch)):
            self._pending.popleft()
        self.failures = 0
        return True

    def _drop_fenced(self, exc: LeaseLost) -> None:
        """Another daemon owns `exc.server`'s stream now: its agents' spans are that daemon's
        to write; ours are dropped (said once per lost lease), the other servers' kept."""
        kept = [s for s in self._pending if s.server != exc.server]
        lost = len(self._pending) - len(kept)
        self._pending = deque(kept)
        self.dropped += lost
        if (exc.server, exc.token) not in self._fenced_said:
            self._fenced_said.add((exc.server, exc.token))
            log.warning(
                "agent-state spans dropped: another daemon owns the server's stream now",
                server=exc.server,
                lease_token=exc.token,
                count=lost,
            )

    async def _run(self) -> None:
        delay = self._interval
        while not self._stop.is_set():
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            ok = await self.flush()
            delay = self._interval if ok else min(self._retry_max, delay * 2)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop the task and write what is left (bounded by `timeout_s`)."""
        self._stop.set()
        if self._task is not None:
            with suppress(Exception):
                await asyncio.wait_for(self._task, timeout_s)
            self._task = None
        with suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout_s)
        if self._pending:
            log.error("agent-state spans not written at shutdown", count=len(self._pending))
