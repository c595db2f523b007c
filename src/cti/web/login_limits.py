"""The login limits shared by every node of one PostgreSQL database (docs/security.md, "Logins").

`LoginLimiter` (web/auth.py) counts in one process's memory: with several nodes behind a load
balancer, an attacker spreading attempts over three nodes got three times the tries. On
PostgreSQL the attempts are rows of `login_attempts` (migration 0011), counted over the same
sliding window and with the same rules as the single-node limiter:

- an attempt counts *before* its password is checked: `begin` takes a transaction-scoped
  advisory lock per key (username, address; in sorted order, so two nodes never wait on each
  other crosswise), counts the key's rows of the last window and inserts the attempt only when
  both are under their limits, so concurrent attempts on any number of nodes cannot all slip in
  while the first ones are being verified;
- a refused attempt writes nothing; a successful login deletes the user's attempts and gives
  the address its own attempt back;
- bounded: every row is an attempt that reached a password check (itself bounded by the
  password-check pool), and rows older than the window are deleted (the keys an attempt
  touches at once, all of them once per window).

Time is PostgreSQL's clock, never a node's. When the database does not answer, the caller falls
back to its own in-memory limiter (web/server.py): still limited, per node, for that long.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_COUNT = text(
    "SELECT count(*) FROM login_attempts"
    " WHERE key = :key AND at > clock_timestamp() - make_interval(secs => :window)"
)
_INSERT = text("INSERT INTO login_attempts (key, at) VALUES (:key, clock_timestamp()) RETURNING id")
_EXPIRE_KEY = text(
    "DELETE FROM login_attempts WHERE key = :key AND at <= clock_timestamp() - make_interval(secs => :window)"
)
_EXPIRE_ALL = text(
    "DELETE FROM login_attempts WHERE at <= clock_timestamp() - make_interval(secs => :window)"
)
_FORGET_KEY = text("DELETE FROM login_attempts WHERE key = :key")
_FORGET_ONE = text("DELETE FROM login_attempts WHERE id = :id")


class SharedLoginLimiter:
    """Per username (`per_minute`) and per address (`per_address`, by default ten times that),
    over `window_s`, across every node of the database."""

    def __init__(
        self,
        engine: AsyncEngine,
        per_minute: int,
        per_address: int | None = None,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("the shared login limiter needs PostgreSQL (several nodes, one database)")
        self.engine, self.per_minute, self.window_s, self.clock = engine, per_minute, window_s, clock
        self.per_address = per_address if per_address is not None else 10 * per_minute
        self._swept_at: float | None = None

    async def begin(self, username: str, address: str) -> int | None:
        """Count an attempt about to be checked: its address row's id, the stamp `succeeded`
        gives back; None (nothing written) when a limit is reached."""
        limits = {"u:" + username: self.per_minute, "a:" + address: self.per_address}
        window = {"window": self.window_s}
        async with self.engine.begin() as conn:
            for key in sorted(limits):
                await conn.execute(_LOCK, {"key": key})
            for key, limit in limits.items():
                await conn.execute(_EXPIRE_KEY, {"key": key, **window})
                if (await conn.execute(_COUNT, {"key": key, **window})).scalar_one() >= limit:
                    return None  # nothing inserted: the transaction commits the expiry only
            await conn.execute(_INSERT, {"key": "u:" + username})
            stamp = int((await conn.execute(_INSERT, {"key": "a:" + address})).scalar_one())
            if self._swept_at is None or self.clock() - self._swept_at >= self.window_s:
                # Keys nobody tries again keep their rows until this sweep, once per window.
                await conn.execute(_EXPIRE_ALL, window)
                self._swept_at = self.clock()
        return stamp

    async def succeeded(self, username: str, address: str, stamp: int) -> None:
        """The password was right: the user's attempts are cleared on every node, the address
        gets this attempt back (a floor behind one NAT address does not lock itself out)."""
        async with self.engine.begin() as conn:
            await conn.execute(_FORGET_KEY, {"key": "u:" + username})
            await conn.execute(_FORGET_ONE, {"id": stamp})
