"""One owner per AMI stream (issue 20, item 1): a lease row per Asterisk server in PostgreSQL,
with a fencing token checked inside every write made for that server.

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

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)

_ACQUIRE = text(
    """
    INSERT INTO stream_leases (server, holder, token, expires_at)
    VALUES (:server, :holder, 1, clock_timestamp() + make_interval(secs => :ttl))
    ON CONFLICT (server) DO UPDATE
       SET holder = EXCLUDED.holder, token = stream_leases.token + 1, expires_at = EXCLUDED.expires_at
     WHERE stream_leases.expires_at < clock_timestamp()
    RETURNING token
    """
)
# By token, not by expiry: a lease that lapsed while nobody took it is still ours (the token did
# not move, so no other owner wrote anything).
_RENEW = text(
    """
    UPDATE stream_leases SET expires_at = clock_timestamp() + make_interval(secs => :ttl)
     WHERE server = :server AND token = :token
    RETURNING token
    """
)
_RELEASE = text("UPDATE stream_leases SET expires_at = '-infinity' WHERE server = :server AND token = :token")
_FENCE = text("SELECT token FROM stream_leases WHERE server = :server FOR SHARE")


class LeaseLost(Exception):
    """Another daemon owns the stream now: the write was refused, nothing of it committed."""

    def __init__(self, server: str, token: int, current: int | None) -> None:
        super().__init__(f"lease of {server!r} lost: our token {token}, the row's {current}")
        self.server, self.token, self.current = server, token, current


class StreamLease:
    """This daemon's lease on one server's AMI stream (`holder` names the daemon in the row)."""

    def __init__(self, engine: AsyncEngine, server: str, holder: str, ttl_s: float) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("stream leases need PostgreSQL (several daemons share one database)")
        self.engine, self.server, self.holder, self.ttl_s = engine, server, holder, ttl_s
        self.token: int | None = None  # ours while we own the stream

    @property
    def owned(self) -> bool:
        return self.token is not None

    async def acquire(self) -> bool:
        """Take the stream if nobody holds it or its lease lapsed (a new token then)."""
        async with self.engine.begin() as conn:
            values = {"server": self.server, "holder": self.holder, "ttl": self.ttl_s}
            token = (await conn.execute(_ACQUIRE, values)).scalar()
        if token is not None:
            self.token = int(token)
            log.info("stream lease acquired", server=self.server, holder=self.holder, token=self.token)
        return token is not None

    async def renew(self) -> bool:
        """Extend our lease; False (and no longer owned) when another daemon took it over."""
        if self.token is None:
            return False
        async with self.engine.begin() as conn:
            values = {"server": self.server, "token": self.token, "ttl": self.ttl_s}
            kept = (await conn.execute(_RENEW, values)).scalar() is not None
        if not kept:
            log.warning("stream lease lost", server=self.server, holder=self.holder, token=self.token)
            self.token = None
        return kept

    async def release(self) -> None:
        """Let a standby take over at once (a clean stop), rather than after the lease lapses."""
        if self.token is None:
            return
        async with self.engine.begin() as conn:
            await conn.execute(_RELEASE, {"server": self.server, "token": self.token})
        self.token = None

    async def fence(self, conn: AsyncConnection) -> None:
        """Inside a write transaction: refuse it (LeaseLost) unless our token is the row's."""
        if self.token is None:
            raise LeaseLost(self.server, 0, None)
        # A whole number of milliseconds: SET takes no bound parameter.
        idle_ms = max(1, int(self.ttl_s * 1000))
        await conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms}"))
        current = (await conn.execute(_FENCE, {"server": self.server})).scalar()
        if current != self.token:
            log.warning(
                "write refused: stream lease lost", server=self.server, token=self.token, current=current
            )
            raise LeaseLost(self.server, self.token, None if current is None else int(current))

    @asynccontextmanager
    async def fenced(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that commits only under our token (`fence` first)."""
        async with self.engine.begin() as conn:
            await self.fence(conn)
            yield conn


class StreamFences:
    """The leases this daemon holds, by server: `CallStore`'s fence for the servers it writes."""

    def __init__(self, leases: Iterable[StreamLease]) -> None:
        self.leases = {lease.server: lease for lease in leases}

    async def __call__(self, conn: AsyncConnection, servers: Iterable[str]) -> None:
        for server in sorted(set(servers)):  # sorted: two writers lock the rows in one order
            lease = self.leases.get(server)
            if lease is not None:
                await lease.fence(conn)
