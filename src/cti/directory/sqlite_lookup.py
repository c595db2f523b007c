"""Caller lookups on SQLite, off the event loop.

Through SQLAlchemy's async session a lookup costs about 2.4 ms of event-loop time in one piece
(statement handling and the greenlet bridge to aiosqlite), and the loop is the screen pops' loop:
at 100 calls/s that alone broke the 5 ms p99. Here one thread owns a query-only `sqlite3`
connection (query only) and runs the same query in plain SQL (`store.customers_by_phone_sql`); the loop only
waits on a future (≈ 0.05 ms of loop time). WAL mode lets this reader run while the writers commit.

`inline=True` runs the query on the caller's loop instead, for a loop that has nothing else to
do (the FastAGI worker, cti/agi/worker.py): an indexed lookup is a fraction of a millisecond of
CPU, less than the two thread switches it would otherwise cost on a busy machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cti.directory import store
from cti.directory.customer import CustomerFile

# A lookup that waits longer on a lock has already missed its pop: fail fast instead.
BUSY_TIMEOUT_MS = 250


class SqliteLookup:
    def __init__(self, path: Path, *, inline: bool = False) -> None:
        self.path = path
        # No thread at all when inline: the query runs on the caller's loop.
        self._executor = None
        if not inline:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cti-lookup")
        self._conn: sqlite3.Connection | None = None
        self._sql: dict[int, str] = {}

    async def customers_by_phone(self, forms: Sequence[str], limit: int) -> tuple[list[CustomerFile], bool]:
        if self._executor is None:
            return self._lookup(tuple(forms), limit)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._lookup, tuple(forms), limit)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # Not `mode=ro`: a read-only opener cannot create the WAL index when no other
            # connection has the database open. `query_only` forbids writes all the same; `rw`
            # (not `rwc`) refuses to create a missing file.
            uri = f"{self.path.expanduser().resolve().as_uri()}?mode=rw"
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            self._conn = conn
        return self._conn

    def _lookup(self, forms: tuple[str, ...], limit: int) -> tuple[list[CustomerFile], bool]:
        sql = self._sql.get(len(forms))
        if sql is None:
            sql = self._sql[len(forms)] = store.customers_by_phone_sql(len(forms))
        try:
            rows = self._connection().execute(sql, (*forms, limit + 1)).fetchall()
        except sqlite3.Error:
            # The file may have been replaced or gone: open it afresh next time.
            self._close_connection()
            raise
        return store.rank_matches(store.files_from_rows(rows), forms[0], limit)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._executor is None:
            self._close_connection()
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=False, cancel_futures=True)
