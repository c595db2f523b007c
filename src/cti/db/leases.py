"""Leases with fencing tokens in PostgreSQL (issue 20): one owner per AMI stream (item 1: a row
of `stream_leases` per Asterisk server, checked inside every write made for that server), and
one owner per named resource (item 4: a row of `resource_leases`, e.g. a dialer campaign's
pacing). `StreamLease` is a `Lease` on the first table; both behave alike.

A lease alone is not enough: an owner frozen past its lease (a SIGSTOP, a long GC pause, a VM
migration) wakes up believing it still owns the stream and writes what it saw before the
standby took over. So every change of hands increments the row's `token`, and each write
transaction first reads the row (`fence`): a token that is no longer ours refuses the write
(`LeaseLost`), in the same transaction, before anything is written. The read takes a share lock
on the row, so a takeover (an UPDATE of that row) waits for a write in flight to commit: no
write under an old token ever commits after the new token is in place. A frozen owner cannot
hold that lock for ever: the fenced transaction sets `idle_in_transaction_session_timeout`, and
PostgreSQL ends its session (rolling the write back) once it has been idle that long.

Time is PostgreSQL's (`clock_timestamp()`), never a node's. PostgreSQL only: on SQLite (one
machine) there is nobody to share a stream with.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import structlog
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)


# The statements of a lease table: `key` names the leased resource in `table`. Table and column
# names are this module's constants, never input.
@functools.cache
def _statements(table: str, key: str) -> dict[str, TextClause]:
    return {
        "acquire": text(
            f"""
            INSERT INTO {table} ({key}, holder, token, expires_at)
            VALUES (:name, :holder, 1, clock_timestamp() + make_interval(secs => :ttl))
            ON CONFLICT ({key}) DO UPDATE
               SET holder = EXCLUDED.holder, token = {table}.token + 1, expires_at = EXCLUDED.expires_at
             WHERE {table}.expires_at < clock_timestamp()
            RETURNING token
            """
        ),
        # By token, not by expiry: a lease that lapsed while nobody took it is still ours (the
        # token did not move, so no other owner wrote anything).
        "renew": text(
            f"""
            UPDATE {table} SET expires_at = clock_timestamp() + make_interval(secs => :ttl)
             WHERE {key} = :name AND token = :token
            RETURNING token
            """
        ),
        "release": text(
            f"UPDATE {table} SET expires_at = '-infinity' WHERE {key} = :name AND token = :token"
        ),
        "fence": text(f"SELECT token FROM {table} WHERE {key} = :name FOR SHARE"),
    }


class LeaseLost(Exception):
    """Another daemon owns the resource now: the write was refused, nothing of it committed.
    `server` is the resource's name (a stream's server, a named resource's name)."""

    def __init__(self, server: str, token: int, current: int | None) -> None:
        held = f"our token {token}, the row's {current}" if token else "not held by this daemon"
        super().__init__(f"lease of {server!r} lost: {held}")
        self.server, self.token, self.current = server, token, current


class Lease:
    """This daemon's lease on one named resource (`holder` names the daemon in the row): a row
    of `resource_leases` by default, e.g. "dialer:campaign:7" (dialer/ownership.py)."""

    table, key, kind = "resource_leases", "name", "resource"

    def __init__(self, engine: AsyncEngine, name: str, holder: str, ttl_s: float) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"{self.kind} leases need PostgreSQL (several daemons share one database)")
        self.engine, self.name, self.holder, self.ttl_s = engine, name, holder, ttl_s
        self.token: int | None = None  # ours while we own the resource
        self._sql = _statements(self.table, self.key)

    @property
    def owned(self) -> bool:
        return self.token is not None

    def _said(self) -> dict[str, str]:
        """How the logs name the lease: `server=` for a stream, `name=` for a resource."""
        return {self.key: self.name, "holder": self.holder}

    @asynccontextmanager
    async def _lease_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the lease row that PostgreSQL ends if this daemon stops talking in
        the middle of it (frozen between its UPDATE and its COMMIT, holding the row's lock):
        otherwise a standby's takeover would wait for the frozen daemon to wake up."""
        async with self.engine.begin() as conn:
            await self._idle_timeout(conn)
            yield conn

    async def _idle_timeout(self, conn: AsyncConnection) -> None:
        # A whole number of milliseconds: SET takes no bound parameter.
        idle_ms = max(1, int(self.ttl_s * 1000))
        await conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms}"))

    async def acquire(self) -> bool:
        """Take the resource if nobody holds it or its lease lapsed (a new token then)."""
        async with self._lease_transaction() as conn:
            values = {"name": self.name, "holder": self.holder, "ttl": self.ttl_s}
            token = (await conn.execute(self._sql["acquire"], values)).scalar()
        if token is not None:
            self.token = int(token)
            log.info(f"{self.kind} lease acquired", **self._said(), lease_token=self.token)
        return token is not None

    async def renew(self) -> bool:
        """Extend our lease; False (and no longer owned) when another daemon took it over."""
        token = self.token
        if token is None:
            return False
        async with self._lease_transaction() as conn:
            values = {"name": self.name, "token": token, "ttl": self.ttl_s}
            kept = (await conn.execute(self._sql["renew"], values)).scalar() is not None
        if not kept:
            log.warning(f"{self.kind} lease lost", **self._said(), lease_token=token)
            # Only the token this renewal was for: a renewal given up on (calls/ownership.py)
            # may answer after the lease was lost and taken again under a newer token.
            if self.token == token:
                self.token = None
        return kept

    async def release(self) -> None:
        """Let a standby take over at once (a clean stop), rather than after the lease lapses."""
        if self.token is None:
            return
        async with self._lease_transaction() as conn:
            await conn.execute(self._sql["release"], {"name": self.name, "token": self.token})
        self.token = None

    async def fence(self, conn: AsyncConnection) -> None:
        """Inside a write transaction: refuse it (LeaseLost) unless our token is the row's."""
        if self.token is None:
            raise LeaseLost(self.name, 0, None)
        await self._idle_timeout(conn)
        current = (await conn.execute(self._sql["fence"], {"name": self.name})).scalar()
        if current != self.token:
            # Tokens only grow: ours will never be the row's again. Forgetting it here makes the
            # next writes refused without a word and the next renewal say the lease is lost.
            lost, self.token = self.token, None
            log.warning(
                f"write refused: {self.kind} lease lost", **self._said(), lease_token=lost, current=current
            )
            raise LeaseLost(self.name, lost, None if current is None else int(current))

    @asynccontextmanager
    async def fenced(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that commits only under our token (`fence` first)."""
        async with self.engine.begin() as conn:
            await self.fence(conn)
            yield conn


class StreamLease(Lease):
    """This daemon's lease on one server's AMI stream: a row of `stream_leases`."""

    table, key, kind = "stream_leases", "server", "stream"

    def __init__(self, engine: AsyncEngine, server: str, holder: str, ttl_s: float) -> None:
        super().__init__(engine, server, holder, ttl_s)

    @property
    def server(self) -> str:
        return self.name


class StreamFences:
    """The leases this daemon holds, by server: `CallStore`'s fence for the servers it writes."""

    def __init__(self, leases: Iterable[StreamLease]) -> None:
        self.leases = {lease.server: lease for lease in leases}

    async def __call__(self, conn: AsyncConnection, servers: Iterable[str]) -> None:
        for server in sorted(set(servers)):  # sorted: two writers lock the rows in one order
            lease = self.leases.get(server)
            if lease is not None:
                await lease.fence(conn)
