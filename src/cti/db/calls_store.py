"""Writing finished calls: `CallStore` saves batches, `CallWriter` batches in the background.

The tracker closes calls from the AMI reader, which must never wait on the database; so records
go through `CallWriter.submit`, are buffered in memory and written in batches by one task. A
database outage only grows the buffer (bounded by `max_pending`); a record the database refuses
is logged and set aside so it cannot block the ones behind it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import fields
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import structlog
from sqlalchemy import Insert, Table, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cti.calls.records import CallRecord, IvrStep, QueueSegment
from cti.config import DatabaseSettings, redact_url
from cti.db.leases import LeaseLost
from cti.db.models import Call, CallSegment
from cti.values import utc

log = structlog.get_logger(__name__)

CALLS: Table = Call.__table__  # type: ignore[assignment]
SEGMENTS: Table = CallSegment.__table__  # type: ignore[assignment]

# Keeps IN (...) lists and multi-row statements well under the bound-parameter limits of
# asyncpg (32767) and SQLite when a caller saves a very large batch at once.
_CHUNK = 1000
# Rows written per statement. A statement's parameters are processed in one step of the event
# loop that carries the screen pops (a few microseconds a value), so a large batch is written in
# several short steps rather than one long one.
WRITE_ROWS = 100
# Columns an upsert must not overwrite: the key and the surrogate id the segments point to.
_KEEP_ON_CONFLICT = frozenset({"id", "server", "linkedid"})
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}

T = TypeVar("T")

# dataclasses.asdict deep-copies every value and dominated the cost of a save.
_SEGMENT_FIELDS = tuple(f.name for f in fields(QueueSegment))
_IVR_FIELDS = tuple(f.name for f in fields(IvrStep))


# Overflow-safe: an instant no datetime can hold is None (1e309 once raised OverflowError and
# the record was dropped as refused).
_utc = utc


def call_row(record: CallRecord) -> dict[str, Any]:
    """The `calls` row for a record (without id)."""
    return {
        "server": record.server,
        "linkedid": record.linkedid,
        "direction": record.direction,
        "started_at": _utc(record.started_at) or datetime.now(UTC),
        "ended_at": _utc(record.ended_at),
        "answered_at": _utc(record.answered_at),
        "caller_raw": record.caller_raw,
        "caller_e164": record.caller_e164,
        "caller_name": record.caller_name,
        "called": record.called,
        "outcome": record.outcome,
        "hangup_by": record.hangup_by,
        "hangup_cause": record.hangup_cause,
        "queue": record.queue,
        "agent": record.agent,
        "agent_interface": record.agent_interface,
        "wait_s": record.wait_s,
        "ring_s": record.ring_s,
        "talk_s": record.talk_s,
        "transfers": record.transfers,
        "transferred_to": list(record.transferred_to),
        "originate_reason": record.originate_reason,
        "campaign": record.campaign,
        "contact": record.contact,
        "closed_by": record.closed_by,
        "ivr_path": [{name: getattr(step, name) for name in _IVR_FIELDS} for step in record.ivr_path],
    }


def segment_rows(call_id: int, record: CallRecord) -> list[dict[str, Any]]:
    """The `call_segments` rows for a record whose `calls` row has id `call_id`."""
    rows = []
    for seq, seg in enumerate(record.segments):
        row = {name: getattr(seg, name) for name in _SEGMENT_FIELDS}
        row.update(call_id=call_id, seq=seq, joined_at=_utc(seg.joined_at), left_at=_utc(seg.left_at))
        rows.append(row)
    return rows


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _latest_per_call(records: Sequence[CallRecord]) -> list[CallRecord]:
    # The same call twice in one batch would make a multi-row upsert touch a row twice, which
    # PostgreSQL refuses; the later record is the more corrected one.
    latest: dict[tuple[str, str], CallRecord] = {}
    for record in records:
        latest.pop((record.server, record.linkedid), None)
        latest[(record.server, record.linkedid)] = record
    return list(latest.values())


# Refuses a save (raises) when this daemon no longer owns one of these servers' streams.
Fence = Callable[[AsyncConnection, Iterable[str]], Awaitable[None]]


class CallStore:
    """Saves finished calls; saving a call again replaces its row and its segments."""

    def __init__(self, engine: AsyncEngine, fence: Fence | None = None) -> None:
        dialect = engine.dialect.name
        if dialect not in _INSERTS:
            raise ValueError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
        self._engine = engine
        # Several daemons (db/leases.py): checked inside each save's transaction, before any
        # row is written, so a daemon that lost a server's stream writes none of its calls.
        self._fence = fence
        self._upsert = self._build_upsert(_INSERTS[dialect](CALLS))

    @property
    def display_url(self) -> str:
        """The database URL with its password masked, for log lines."""
        return redact_url(self._engine.url.render_as_string(hide_password=False))

    @staticmethod
    def _build_upsert(stmt: Any) -> Insert:
        updates = {c.name: stmt.excluded[c.name] for c in CALLS.c if c.name not in _KEEP_ON_CONFLICT}
        upsert: Insert = stmt.on_conflict_do_update(index_elements=["server", "linkedid"], set_=updates)
        return upsert.returning(CALLS.c.id, CALLS.c.server, CALLS.c.linkedid)

    async def save(self, records: Sequence[CallRecord]) -> None:
        """Upsert `records` and their segments in one transaction (all or nothing)."""
        unique = _latest_per_call(records)
        if not unique:
            return
        async with self._engine.begin() as conn:
            if self._fence is not None:
                await self._fence(conn, {r.server for r in unique})
            ids = await self._upsert_calls(conn, unique)
            await self._replace_segments(conn, unique, ids)

    async def _upsert_calls(
        self, conn: AsyncConnection, records: list[CallRecord]
    ) -> dict[tuple[str, str], int]:
        ids: dict[tuple[str, str], int] = {}
        for chunk in _chunks(records, WRITE_ROWS):
            # One multi-row statement per chunk (SQLAlchemy's "insertmanyvalues"); rows come back
            # in no guaranteed order, hence the key in RETURNING.
            result = await conn.execute(self._upsert, [call_row(r) for r in chunk])
            ids.update({(row.server, row.linkedid): row.id for row in result})
        return ids

    @staticmethod
    async def _replace_segments(
        conn: AsyncConnection, records: list[CallRecord], ids: dict[tuple[str, str], int]
    ) -> None:
        call_ids = list(ids.values())
        for chunk in _chunks(call_ids):
            await conn.execute(delete(SEGMENTS).where(SEGMENTS.c.call_id.in_(chunk)))
        rows = [row for r in records for row in segment_rows(ids[(r.server, r.linkedid)], r)]
        for chunk_rows in _chunks(rows, WRITE_ROWS):
            await conn.execute(insert(SEGMENTS), list(chunk_rows))


async def load_calls(
    engine: AsyncEngine, since: float | datetime | None = None, where: Any = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Calls started at or after `since` (epoch or aware datetime), oldest first (by start, then
    id: `limit` pages through them), each with its `segments` (ordered by seq). A plain read
    helper for tests, tools and the statistics' restart, not for reporting."""
    query = select(CALLS).order_by(CALLS.c.started_at, CALLS.c.id).limit(limit)
    if where is not None:
        query = query.where(where)
    if since is not None:
        query = query.where(CALLS.c.started_at >= (_utc(since) if isinstance(since, float | int) else since))
    async with engine.connect() as conn:
        calls = [dict(row._mapping) for row in await conn.execute(query)]
        by_id = {call["id"]: call for call in calls}
        for call in calls:
            call["segments"] = []
        for chunk in _chunks(list(by_id)):
            seg_query = select(SEGMENTS).where(SEGMENTS.c.call_id.in_(chunk))
            for row in await conn.execute(seg_query.order_by(SEGMENTS.c.call_id, SEGMENTS.c.seq)):
                by_id[row.call_id]["segments"].append(dict(row._mapping))
    return calls


class RecordSink(Protocol):
    """What `CallWriter` writes to; `CallStore` in production."""

    @property
    def display_url(self) -> str: ...

    async def save(self, records: Sequence[CallRecord]) -> None: ...


def _causes(exc: BaseException) -> Iterable[BaseException]:
    # SQLAlchemy wraps the driver's exception (`orig`), which may itself wrap the original one.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__


def is_record_error(exc: BaseException) -> bool:
    """True when the data itself was refused (retrying the same batch cannot succeed); False for
    outages, locks, a missing schema and the like, which are worth retrying."""
    for cause in _causes(exc):
        if isinstance(cause, IntegrityError | DataError):
            return True
        # asyncpg errors reach us as a generic DBAPIError: judge them by SQLSTATE class
        # (22 data exception, 23 integrity constraint violation).
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate[:2] in ("22", "23")
        # Raised before reaching the database: a value could not be converted for binding.
        if isinstance(cause, TypeError | ValueError | OverflowError | AttributeError | KeyError):
            return True
    return False


def _describe(exc: BaseException) -> str:
    # SQLAlchemy's own message embeds the whole statement and its parameters (a full batch).
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text[:300]}"


class CallWriter:
    """Background batch writer: `submit` never blocks, a task writes by size or interval.

    Records stay in memory while the database is unavailable and are retried with exponential
    back-off; beyond `max_pending` the oldest are dropped, counted and logged.
    """

    DROP_LOG_INTERVAL_S = 10.0

    def __init__(
        self,
        store: RecordSink,
        batch_size: int = 200,
        flush_interval_s: float = 1.0,
        max_pending: int = 100_000,
        *,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        if batch_size < 1 or max_pending < 1 or flush_interval_s <= 0 or retry_initial_s <= 0:
            raise ValueError("batch_size, max_pending, flush_interval_s and retry_initial_s must be > 0")
        self._store = store
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_pending = max_pending
        self._retry_initial = retry_initial_s
        self._retry_max = max(retry_max_s, retry_initial_s)
        self._retry_s = retry_initial_s
        self._pending: deque[CallRecord] = deque()
        # Taken out of `_pending` while being written, put back in front if the write fails.
        self._inflight: list[CallRecord] = []
        self._wake = asyncio.Event()  # a full batch is waiting, or close() was called
        self._stop = asyncio.Event()  # close() was called: cut any back-off short
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._deadline = math.inf
        self._unlogged_drops = 0
        self._drop_reason = ""
        self._last_drop_log = -math.inf
        self.written = 0
        self.dropped = 0
        self.rejected = 0
        self.fenced = 0  # refused by a lost stream lease (db/leases.py), dropped
        self._fenced_said: set[tuple[str, int]] = set()
        self.failures = 0  # consecutive failed attempts; 0 while the database is healthy
        self.failed_writes = 0  # failed attempts since start (the metrics' counter)

    @classmethod
    def from_settings(cls, store: RecordSink, settings: DatabaseSettings, **kwargs: Any) -> Self:
        return cls(store, settings.batch_size, settings.flush_interval_s, **kwargs)

    @property
    def pending(self) -> int:
        """Records accepted but not yet written."""
        return len(self._pending) + len(self._inflight)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def start(self) -> None:
        """Start the writing task (done by the first `submit` anyway); needs a running loop."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cti-call-writer")

    def submit(self, record: CallRecord) -> None:
        """Queue `record` for writing; never blocks, never raises once the loop is running."""
        if self._closed:
            self._note_dropped(1, reason="writer closed")
            return
        self.start()
        self._pending.append(record)
        if self.pending > self._max_pending:
            self._drop_oldest(self.pending - self._max_pending)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def close(self, flush_timeout_s: float = 10.0) -> list[CallRecord]:
        """Write what is left (for at most `flush_timeout_s`), stop the task and return the
        records that could not be written (also logged), so the caller may keep them elsewhere.
        Records submitted from here on are counted and logged as dropped."""
        if self._closed:
            return []
        self._closed = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + flush_timeout_s
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._stop_task(self._task, flush_timeout_s)
        leftover = [*self._inflight, *self._pending]
        self._inflight.clear()
        self._pending.clear()
        if leftover:
            log.error(
                "call writer closed with call records not written",
                count=len(leftover),
                url=self._store.display_url,
            )
        self._log_drops(force=True)
        return leftover

    @staticmethod
    async def _stop_task(task: asyncio.Task[None], wait_s: float) -> None:
        # The task honours the deadline itself between attempts; the margin covers one write that
        # hangs (a dead TCP peer), which only cancelling can end. If close() is itself cancelled
        # the task must not outlive it either.
        try:
            await asyncio.wait({task}, timeout=wait_s + 1.0)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            log.error("call writer task failed", error=_describe(failure))

    async def _run(self) -> None:
        try:
            while not (self._closed and (not self._pending or self._past_deadline())):
                if not self._closed:
                    await self._idle()
                if not await self._drain():
                    await self._back_off()
        except asyncio.CancelledError:
            self._restore_inflight()
            raise

    def _past_deadline(self) -> bool:
        return asyncio.get_running_loop().time() >= self._deadline

    async def _idle(self) -> None:
        if len(self._pending) < self._batch_size:
            with suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
        self._wake.clear()

    async def _drain(self) -> bool:
        """Write everything pending in batches; False after a failed (retryable) attempt."""
        while self._pending:
            count = min(self._batch_size, len(self._pending))
            self._inflight = [self._pending.popleft() for _ in range(count)]
            try:
                await self._save(list(self._inflight))
            except Exception as exc:
                self._restore_inflight()
                self._on_failure(exc)
                return False
            self._inflight = []
            self._on_success()
        return True

    async def _save(self, batch: list[CallRecord]) -> None:
        try:
            await self._store.save(batch)
        except LeaseLost as exc:
            await self._drop_fenced(batch, exc)
        except Exception as exc:
            if not is_record_error(exc):
                raise
            await self._isolate(batch, exc)
        else:
            self.written += len(batch)

    async def _drop_fenced(self, batch: list[CallRecord], exc: LeaseLost) -> None:
        """Another daemon owns `exc.server`'s stream now (db/leases.py): its calls are its
        business (recovered from Asterisk's records from the stored mark), ours are dropped,
        said once per lost lease, never retried. The other servers' calls are saved again."""
        lost = [r for r in batch if r.server == exc.server]
        for record in lost:
            with suppress(ValueError):
                self._inflight.remove(record)
        self.fenced += len(lost)
        if (exc.server, exc.token) not in self._fenced_said:
            self._fenced_said.add((exc.server, exc.token))
            log.warning(
                "call records dropped: another daemon owns the server's stream now",
                server=exc.server,
                lease_token=exc.token,
                current=exc.current,
                count=len(lost),
            )
        rest = [r for r in batch if r.server != exc.server]
        if rest:
            await self._save(rest)

    async def _isolate(self, batch: list[CallRecord], exc: Exception) -> None:
        if len(batch) == 1:
            self._reject(batch[0], exc)
            return
        log.warning(
            "database refused a batch of call records, retrying them one by one",
            size=len(batch),
            error=_describe(exc),
        )
        for record in batch:
            await self._save([record])

    def _reject(self, record: CallRecord, exc: Exception) -> None:
        self.rejected += 1
        # It must not come back if a later outage puts the batch back in the queue.
        with suppress(ValueError):
            self._inflight.remove(record)
        log.error(
            "database refused a call record, dropped",
            server=record.server,
            linkedid=record.linkedid,
            error=_describe(exc),
            rejected_total=self.rejected,
        )

    def _restore_inflight(self) -> None:
        self._pending.extendleft(reversed(self._inflight))
        self._inflight = []

    def _on_failure(self, exc: Exception) -> None:
        self.failures += 1
        self.failed_writes += 1
        log.error(
            "cannot write call records to the database; keeping them and retrying",
            url=self._store.display_url,
            error=_describe(exc),
            attempt=self.failures,
            retry_in_s=round(self._retry_s, 3),
            pending=self.pending,
            dropped_total=self.dropped,
        )
        self._log_drops()

    def _on_success(self) -> None:
        if self.failures:
            log.info(
                "database writable again",
                url=self._store.display_url,
                failed_attempts=self.failures,
                pending=self.pending,
            )
        self.failures = 0
        self._retry_s = self._retry_initial
        self._log_drops()

    async def _back_off(self) -> None:
        delay = self._retry_s
        self._retry_s = min(self._retry_s * 2, self._retry_max)
        if self._closed:
            await asyncio.sleep(max(0.0, min(delay, self._deadline - asyncio.get_running_loop().time())))
            return
        with suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()

    def _drop_oldest(self, count: int) -> None:
        count = min(count, len(self._pending))
        for _ in range(count):
            self._pending.popleft()
        self._note_dropped(count, reason="backlog full")

    def _note_dropped(self, count: int, reason: str) -> None:
        self.dropped += count
        self._unlogged_drops += count
        self._drop_reason = reason
        self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        # One line per burst, then at most one every DROP_LOG_INTERVAL_S: an outage at full call
        # rate must not flood the log, but every drop ends up counted in a line.
        if not self._unlogged_drops:
            return
        # Not the loop's clock: submit() after close() may run outside any loop.
        now = time.monotonic()
        if not force and now - self._last_drop_log < self.DROP_LOG_INTERVAL_S:
            return
        log.error(
            "call records dropped without being written",
            reason=self._drop_reason,
            dropped=self._unlogged_drops,
            dropped_total=self.dropped,
            max_pending=self._max_pending,
            url=self._store.display_url,
        )
        self._unlogged_drops = 0
        self._last_drop_log = now


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def record_from_row(row: dict[str, Any]) -> CallRecord:
    """Rebuild a `CallRecord` from a `load_calls` row (the inverse of `call_row`/`segment_rows`)."""
    segments = []
    for seg in row.get("segments", []):
        values = {name: seg[name] for name in _SEGMENT_FIELDS}
        values.update(joined_at=_epoch(seg["joined_at"]) or 0.0, left_at=_epoch(seg["left_at"]))
        segments.append(QueueSegment(**values))
    return CallRecord(
        server=row["server"],
        linkedid=row["linkedid"],
        direction=row["direction"],
        started_at=_epoch(row["started_at"]) or 0.0,
        ended_at=_epoch(row["ended_at"]),
        caller_raw=row["caller_raw"],
        caller_e164=row["caller_e164"],
        caller_name=row["caller_name"],
        called=row["called"],
        ivr_path=[IvrStep(**{name: step[name] for name in _IVR_FIELDS}) for step in row["ivr_path"] or []],
        segments=segments,
        outcome=row["outcome"],
        hangup_by=row["hangup_by"],
        hangup_cause=row["hangup_cause"],
        agent=row["agent"],
        agent_interface=row["agent_interface"],
        answered_at=_epoch(row["answered_at"]),
        wait_s=row["wait_s"],
        ring_s=row["ring_s"],
        talk_s=row["talk_s"],
        transfers=row["transfers"],
        transferred_to=list(row["transferred_to"] or []),
        originate_reason=row["originate_reason"],
        campaign=row["campaign"],
        contact=row["contact"],
        closed_by=row["closed_by"],
    )


async def load_open_calls(engine: AsyncEngine, server: str) -> list[CallRecord]:
    """Calls that were still in progress when the daemon last stopped (`closed_by="shutdown"`)."""
    where = (CALLS.c.server == server) & (CALLS.c.closed_by == "shutdown")
    return [record_from_row(row) for row in await load_calls(engine, where=where)]
