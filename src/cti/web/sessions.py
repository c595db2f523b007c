"""Server-side sessions: what a token names, and what logout, a password change or a disabled
user revokes.

A login writes a row (`sessions`); every request checks its session is still there, unrevoked,
unexpired and its user active. The answer is cached per session for `recheck_s` seconds: this
process's own revocations (logout, `UserStore.add`/`set_active`) drop the cache entry at once,
another process's (the `cti users` command, a second daemon) are seen within `recheck_s`.
Open WebSockets are checked by `sweep()` on the same period and closed when their session ends.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import Session as DbSession
from cti.db.models import User
from cti.web.auth import Principal, UserStore, principal_of_row

log = structlog.get_logger(__name__)

# Rows of sessions that ended more than this long ago are deleted (at most once an hour).
KEEP_ENDED_S = 7 * 86400.0
PURGE_EVERY_S = 3600.0


class SessionsUnavailable(Exception):
    """The database cannot say whether a session is valid (and none was known before)."""

    status = 503
    error_id = "sessions-unavailable"


@dataclass
class _Known:
    principal: Principal | None  # None: revoked, expired, or the user is disabled
    expires_at: float
    checked_at: float  # time.monotonic()


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class SessionStore:
    def __init__(
        self,
        engine: AsyncEngine,
        users: UserStore,
        ttl_s: float,
        recheck_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        max_cached: int = 20_000,
    ) -> None:
        self.engine = engine
        self.users = users
        self.ttl_s = ttl_s
        self.recheck_s = recheck_s
        self.clock = clock
        self.max_cached = max_cached
        self._known: OrderedDict[str, _Known] = OrderedDict()
        # Called with (session id or None, username or None) when sessions end in this process
        # (the hub closes their WebSockets).
        self.on_ended: list[Callable[[str | None, str | None], None]] = []
        self._last_sweep = self.clock()
        self._last_purge = 0.0
        self._unavailable = False
        users.on_revoked.append(self._user_revoked)

    async def open(self, principal: Principal, remote: str | None) -> tuple[str, float]:
        """A new session for this user: (its id, when it expires)."""
        session_id = secrets.token_urlsafe(24)
        now = self.clock()
        expires = float(int(now + self.ttl_s))
        async with self.engine.begin() as conn:
            await conn.execute(
                DbSession.__table__.insert().values(  # type: ignore[attr-defined]
                    id=session_id,
                    username=principal.username,
                    created_at=_utc(now),
                    expires_at=_utc(expires),
                    remote=remote,
                )
            )
        self._remember(session_id, _Known(principal, expires, time.monotonic()))
        return session_id, expires

    async def check(self, session_id: str, username: str) -> Principal | None:
        """Who this session is, if it is still valid. A database that does not answer keeps the
        last known answer (a desktop is not logged out by a database outage); with none, raises
        SessionsUnavailable."""
        known = self._known.get(session_id)
        if known is None or time.monotonic() - known.checked_at >= self.recheck_s:
            try:
                known = await self._read(session_id)
            except (SQLAlchemyError, OSError) as exc:
                if not self._unavailable:
                    log.warning("sessions cannot be checked: database unavailable", error=type(exc).__name__)
                    self._unavailable = True
                if known is None:
                    raise SessionsUnavailable("cannot check the session now") from None
            else:
                self._unavailable = False
                self._remember(session_id, known)
        principal = known.principal
        if principal is None or principal.username != username or known.expires_at <= self.clock():
            return None
        return principal

    async def _read(self, session_id: str) -> _Known:
        query = (
            select(User, DbSession.expires_at, DbSession.revoked_at)
            .join(User, User.username == DbSession.username)
            .where(DbSession.id == session_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        now = time.monotonic()
        if row is None:
            return _Known(None, 0.0, now)
        valid = row.revoked_at is None and row.active
        return _Known(principal_of_row(row) if valid else None, row.expires_at.timestamp(), now)

    def expiry(self, session_id: str) -> float:
        """When a session checked lately expires (infinity if unknown here)."""
        known = self._known.get(session_id)
        return known.expires_at if known is not None else float("inf")

    def _remember(self, session_id: str, known: _Known) -> None:
        self._known[session_id] = known
        self._known.move_to_end(session_id)
        while len(self._known) > self.max_cached:
            self._known.popitem(last=False)

    async def revoke(self, session_id: str, why: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(DbSession)
                .where(DbSession.id == session_id, DbSession.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC), revoked_why=why)
            )
        self._known.pop(session_id, None)
        self._ended(session_id, None)

    def _user_revoked(self, username: str) -> None:
        mine = [k for k, v in self._known.items() if v.principal and v.principal.username == username]
        for session_id in mine:
            del self._known[session_id]
        self._ended(None, username)

    def _ended(self, session_id: str | None, username: str | None) -> None:
        for callback in self.on_ended:
            callback(session_id, username)

    async def ended(self, session_ids: Iterable[str]) -> set[str]:
        """Which of these sessions were revoked since the last sweep or belong to a disabled
        user (another process did it): one small query, whatever the number of sessions."""
        wanted = set(session_ids)
        now = self.clock()
        since = _utc(self._last_sweep - 2 * self.recheck_s)
        if not wanted:
            self._last_sweep = now
            return set()
        query = (
            select(DbSession.id)
            .join(User, User.username == DbSession.username)
            .where(
                or_(
                    DbSession.revoked_at >= since,
                    and_(User.active.is_(False), DbSession.expires_at > _utc(now)),
                )
            )
        )
        async with self.engine.connect() as conn:
            found = set((await conn.scalars(query)).all())
        self._last_sweep = now  # only once answered: a failed sweep's window is looked at again
        gone = found & wanted
        for session_id in gone:
            self._known.pop(session_id, None)
        return gone

    async def purge(self) -> int:
        """Delete the rows of sessions that ended long ago (at most once an hour)."""
        now = self.clock()
        if now - self._last_purge < PURGE_EVERY_S:
            return 0
        self._last_purge = now
        cutoff = _utc(now - KEEP_ENDED_S)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(DbSession).where(or_(DbSession.expires_at < cutoff, DbSession.revoked_at < cutoff))
            )
        return int(result.rowcount or 0)
