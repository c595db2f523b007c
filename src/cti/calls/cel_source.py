"""Asterisk's queue_log and CEL tables in PostgreSQL (asterisk-conf/postgresql-tables.sql), read
off the event loop.

Each read runs in a worker thread, on its own event loop and its own connection: a gap of a day
is tens of thousands of calls and a million rows, whose decoding must not hold the loop that
carries the screen pops. Times are UTC (`timestamp without time zone`: cel_pgsql.conf
`usegmtime`, logger.conf `queue_log_realtime_use_gmt`) and come back as epoch seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import make_url

from cti.calls.gap import CelRow, RebuildRules, RecoveredCall, rebuild
from cti.calls.queue_log import QueueLogEntry
from cti.config import redact_url

T = TypeVar("T")
CHUNK = 500  # calls read (and rebuilt) at a time: bounded memory whatever the gap
_CEL_COLUMNS = (
    "id, eventtype, eventtime, uniqueid, linkedid, channame, context, exten, cid_num, cid_name, "
    "appname, appdata, accountcode, peer, extra, userdeftype"
)
_QUEUE_LOG_COLUMNS = "id, time, callid, queuename, agent, event, data1, data2, data3, data4, data5"


def dsn(url: str) -> str:
    """A libpq URL for asyncpg, whatever driver the setting names (`postgresql+asyncpg://...`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {redact_url(url)}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _epoch(value: datetime) -> float:
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).timestamp()


def _naive_utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def cel_row(row: Any) -> CelRow:
    return CelRow(
        at=_epoch(row["eventtime"]),
        event=row["eventtype"] or "",
        uniqueid=row["uniqueid"] or "",
        linkedid=row["linkedid"] or "",
        channel=row["channame"] or "",
        context=row["context"] or "",
        exten=row["exten"] or "",
        cid_num=row["cid_num"] or "",
        cid_name=row["cid_name"] or "",
        app=row["appname"] or "",
        appdata=row["appdata"] or "",
        accountcode=row["accountcode"] or "",
        peer=row["peer"] or "",
        extra=row["extra"] or "",
        userdeftype=row["userdeftype"] or "",
        seq=int(row["id"]),
    )


def queue_log_entry(row: Any) -> QueueLogEntry | None:
    """A queue_log row as the file parser gives it; None for member-level rows (ADDMEMBER...)."""
    callid, queue = row["callid"] or "", row["queuename"] or ""
    if callid in ("", "NONE") or queue in ("", "NONE"):
        return None
    fields = [row[f"data{i}"] or "" for i in range(1, 6)]
    while fields and not fields[-1]:
        fields.pop()
    agent = row["agent"] or ""
    verb = row["event"] or ""
    return QueueLogEntry(
        _epoch(row["time"]), callid, queue, None if agent in ("", "NONE") else agent, verb, tuple(fields)
    )


class AsteriskRecords:
    """One PostgreSQL database Asterisk writes its `cel` and `queue_log` tables to."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.dsn = dsn(url)
        self.display_url = redact_url(url)
        self.timeout_s = timeout_s

    async def latest(self) -> float | None:
        """The latest CEL row's time: Asterisk's clock as its records stand now."""
        return await self._read(_latest)

    async def probe(self) -> tuple[float | None, float | None]:
        """The latest CEL and queue_log rows' times (`cti config check --connect`): both tables
        are there and this role may read them."""
        return await self._read(_probe)

    async def ended_since(self, since: float) -> list[str]:
        """Calls whose last channel went (LINKEDID_END) at or after `since`, in that order."""
        return await self._read(lambda conn: _ended_since(conn, since))

    async def queue_log_since(self, since: float) -> list[QueueLogEntry]:
        return await self._read(lambda conn: _queue_log_since(conn, since))

    async def rebuilt(
        self, linkedids: Sequence[str], not_before: float, rules: RebuildRules, finished: bool = True
    ) -> list[RecoveredCall]:
        """The calls `linkedids` rebuilt from their rows (gap.rebuild), in the thread too; rows
        older than `not_before` are not read (a call's rows before the longest gap recovered)."""
        return await self._read(lambda conn: _rebuilt(conn, linkedids, not_before, rules, finished))

    async def _read(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        return await asyncio.to_thread(self._in_thread, work)

    def _in_thread(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async def main() -> T:
            async with asyncio.timeout(self.timeout_s):
                conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s)
                try:
                    return await work(conn)
                finally:
                    await conn.close()

        return asyncio.run(main())


async def _latest(conn: asyncpg.Connection) -> float | None:
    value = await conn.fetchval("SELECT max(eventtime) FROM cel")
    return None if value is None else _epoch(value)


async def _probe(conn: asyncpg.Connection) -> tuple[float | None, float | None]:
    cel = await conn.fetchval("SELECT max(eventtime) FROM cel")
    queue_log = await conn.fetchval("SELECT max(time) FROM queue_log")
    return (None if cel is None else _epoch(cel)), (None if queue_log is None else _epoch(queue_log))


async def _ended_since(conn: asyncpg.Connection, since: float) -> list[str]:
    rows = await conn.fetch(
        "SELECT linkedid, min(eventtime) AS ended FROM cel"
        " WHERE eventtype = 'LINKEDID_END' AND eventtime >= $1 GROUP BY linkedid ORDER BY ended",
        _naive_utc(since),
    )
    return [row["linkedid"] for row in rows if row["linkedid"]]


async def _queue_log_since(conn: asyncpg.Connection, since: float) -> list[QueueLogEntry]:
    rows = await conn.fetch(
        f"SELECT {_QUEUE_LOG_COLUMNS} FROM queue_log WHERE time >= $1 ORDER BY time, id",
        _naive_utc(since),
    )
    return _entries(rows)


def _entries(rows: Iterable[Any]) -> list[QueueLogEntry]:
    return [e for e in (queue_log_entry(r) for r in rows) if e is not None]


async def _rebuilt(
    conn: asyncpg.Connection,
    linkedids: Sequence[str],
    not_before: float,
    rules: RebuildRules,
    finished: bool,
) -> list[RecoveredCall]:
    floor = _naive_utc(not_before)
    rows = await conn.fetch(
        f"SELECT {_CEL_COLUMNS} FROM cel WHERE linkedid = ANY($1::text[]) AND eventtime >= $2"
        " ORDER BY eventtime, id",
        list(linkedids),
        floor,
    )
    by_call: dict[str, list[CelRow]] = {}
    for row in rows:
        parsed = cel_row(row)
        by_call.setdefault(parsed.linkedid, []).append(parsed)
    uids = sorted({r.uniqueid for call in by_call.values() for r in call})
    queue_rows = await conn.fetch(
        f"SELECT {_QUEUE_LOG_COLUMNS} FROM queue_log WHERE callid = ANY($1::text[]) AND time >= $2"
        " ORDER BY time, id",
        uids,
        floor,
    )
    by_channel: dict[str, list[QueueLogEntry]] = {}
    for entry in _entries(queue_rows):
        by_channel.setdefault(entry.callid, []).append(entry)
    out = []
    for linkedid in linkedids:
        cel = by_call.get(linkedid, [])
        entries = [e for uid in dict.fromkeys(r.uniqueid for r in cel) for e in by_channel.get(uid, ())]
        rebuilt = rebuild(linkedid, cel, entries, rules, finished)
        if rebuilt is not None:
            out.append(rebuilt)
    return out
