"""Logins, password checks, tokens and roles (sessions themselves: `web/sessions.py`).

Passwords are hashed with argon2 (argon2-cffi) and checked in a small pool of threads, never on
the event loop: one check is a quarter of a second of CPU, and the loop carries the screen pops.
A token is HMAC-SHA256-signed and names a server-side session (`sessions` table), which logout,
a password change or disabling the user revokes. With `CTI_WEB_SECRET` set, tokens stay valid
across a daemon restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cti.db.models import Session as DbSession
from cti.db.models import User
from cti.web.roles import ROLES as ROLES  # re-exported: the routes import them from here
from cti.web.roles import Role as Role

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Verifying against this when the user does not exist keeps the answer time the same, so a
    # login attempt cannot tell which usernames exist. Made on first use: a hash costs a quarter
    # of a second, which every `cti` command would otherwise pay at import.
    return _hasher.hash("not a real password")


@dataclass(frozen=True)
class Principal:
    """Who is calling an endpoint."""

    username: str
    role: Role
    display_name: str = ""
    language: str = "fr"
    interfaces: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def at_least(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class LoginBusy(Exception):
    """Every password-check worker is busy and the queue is full: the login is refused at once."""


def _lower_priority() -> None:
    # Linux: a thread's nice value is its own. The checks then yield the CPU to the event loop's
    # thread (the screen pops) on a busy machine; a login takes a little longer instead.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class PasswordChecker:
    """argon2 verification in `workers` threads, with at most `queue` checks waiting: a login
    burst costs those threads' CPU, never the event loop's time, and never grows without bound."""

    def __init__(self, workers: int = 1, queue: int = 32) -> None:
        self.limit = max(1, workers) + max(0, queue)
        self.pending = 0
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="cti-password", initializer=_lower_priority
        )

    @property
    def full(self) -> bool:
        return self.pending >= self.limit

    async def verify(self, stored_hash: str, password: str) -> bool:
        if self.full:
            raise LoginBusy()
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, verify_password, stored_hash, password)
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class TokenClaims:
    username: str
    session_id: str
    expires_at: float


class TokenSigner:
    """`body.signature`: the body names the user, their session and the expiry; the signature
    (HMAC-SHA256 with the web secret) makes it unforgeable, so a forged token is refused without
    asking the database."""

    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(secret).digest()
        self.ttl_s = ttl_s
        self.clock = clock

    def _sign(self, body: bytes) -> str:
        return (
            base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()).decode().rstrip("=")
        )

    def issue(self, username: str, session_id: str, expires_at: float | None = None) -> str:
        expires = int(self.clock() + self.ttl_s) if expires_at is None else int(expires_at)
        payload = {"u": username, "s": session_id, "exp": expires}
        body = (
            base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
        )
        return f"{body}.{self._sign(body.encode())}"

    def check(self, token: str) -> TokenClaims | None:
        if not token.isascii() or len(token) > 1024:
            return None
        body, sep, signature = token.partition(".")
        if not sep or not hmac.compare_digest(signature.encode(), self._sign(body.encode()).encode()):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        username, session_id, expires = payload.get("u"), payload.get("s"), payload.get("exp")
        if not isinstance(username, str) or not isinstance(session_id, str) or not isinstance(expires, int):
            return None
        if expires < self.clock():
            return None
        return TokenClaims(username, session_id, float(expires))


@dataclass
class LoginLimiter:
    """Login attempts per username (`per_minute`) and per client address (`per_address`, by
    default ten times that: a whole floor of agents often shares one address behind NAT), over a
    sliding minute.

    An attempt counts from the moment it is let through, *before* its password is checked, so
    concurrent attempts cannot all slip in while the first ones are being verified; a successful
    login gives its attempts back. Windows expire a minute after their last attempt, and at most
    `max_keys` are kept (the least recently used go first): the memory is bounded whatever
    the attacker sends, and refused attempts create nothing."""

    per_minute: int
    clock: Callable[[], float] = time.time
    per_address: int | None = None
    max_keys: int = 20_000
    window_s: float = 60.0
    _windows: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._windows)

    def _expire(self, now: float) -> None:
        cutoff = now - self.window_s
        windows = self._windows
        while windows:
            key, window = next(iter(windows.items()))
            if window and window[-1] >= cutoff:
                break
            del windows[key]

    def _count(self, key: str, cutoff: float) -> int:
        window = self._windows.get(key)
        if window is None:
            return 0
        while window and window[0] < cutoff:
            window.popleft()
        return len(window)

    def blocked(self, username: str, address: str) -> bool:
        now = self.clock()
        self._expire(now)
        cutoff = now - self.window_s
        per_address = self.per_address if self.per_address is not None else 10 * self.per_minute
        return (
            self._count("u:" + username, cutoff) >= self.per_minute
            or self._count("a:" + address, cutoff) >= per_address
        )

    def begin(self, username: str, address: str) -> float | None:
        """Count an attempt about to be checked; None (nothing counted) when over a limit."""
        if self.blocked(username, address):
            return None
        now = self.clock()
        for key in ("u:" + username, "a:" + address):
            window = self._windows.setdefault(key, deque())
            window.append(now)
            self._windows.move_to_end(key)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        return now

    def succeeded(self, username: str, address: str, stamp: float) -> None:
        """The password was right: the user's window is cleared, the address gets its attempt back."""
        self._windows.pop("u:" + username, None)
        window = self._windows.get("a:" + address)
        if window is not None:
            with contextlib.suppress(ValueError):
                window.remove(stamp)
            if not window:
                del self._windows["a:" + address]


@dataclass(frozen=True)
class UserListing:
    principal: Principal
    active: bool
    created_at: datetime | None
    sessions: int  # live ones: not revoked, not expired
    last_login: datetime | None


class UserStore:
    """Users in the database, with a small cache of who owns which member interface/device."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._by_interface: dict[str, str] = {}
        self._principals: dict[str, Principal] = {}
        # Called with a username whose sessions were just revoked (password changed, disabled).
        self.on_revoked: list[Callable[[str], None]] = []
        # Told of an interface nobody owns here: with several nodes, it may belong to a user
        # created through another one (the daemon then reloads, docs/scale-out.md).
        self.on_unknown: Callable[[str], None] | None = None

    async def reload(self) -> None:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(User).where(User.active.is_(True)))).all()
        principals = {}
        by_interface = {}
        for row in rows:
            p = principal_of_row(row)
            principals[p.username] = p
            for name in (*p.interfaces, *p.devices):
                by_interface[name] = p.username
                # A Local interface's `/n` is a dial option, not part of the channel: an attended
                # transfer names the colleague by the channel (`Local/agent3@agents`).
                if name.startswith("Local/") and name.endswith("/n"):
                    by_interface.setdefault(name[:-2], p.username)
        self._principals, self._by_interface = principals, by_interface

    def user_for_interface(self, interface: str) -> str | None:
        user = self._by_interface.get(interface)
        if user is None and self.on_unknown is not None:
            self.on_unknown(interface)
        return user

    def principal(self, username: str) -> Principal | None:
        return self._principals.get(username)

    def users(self) -> list[Principal]:
        return list(self._principals.values())

    async def authenticate(
        self, username: str, password: str, checker: PasswordChecker | None = None
    ) -> Principal | None:
        """The user if the password is right (checked by `checker`, off the loop; inline without
        one, for scripts). Raises LoginBusy when the checker's queue is full."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(User).where(User.username == username, User.active.is_(True)))
            ).first()
        stored = _dummy_hash() if row is None else row.password_hash
        if checker is None:
            ok = verify_password(stored, password)
        else:
            ok = await checker.verify(stored, password)
        return principal_of_row(row) if ok and row is not None else None

    async def add(
        self,
        username: str,
        password: str,
        role: Role,
        display_name: str | None = None,
        language: str = "fr",
        interfaces: list[str] | None = None,
        devices: list[str] | None = None,
    ) -> None:
        """Create the user, or update every field of an existing one (idempotent for scripts).
        Updating a user (a new password, another role) ends every session they have."""
        values = {
            "display_name": display_name or username,
            "password_hash": await asyncio.to_thread(hash_password, password),
            "role": role,
            "language": language,
            "interfaces": interfaces or [],
            "devices": devices or [],
            "active": True,
        }
        async with self.engine.begin() as conn:
            existing = (await conn.execute(select(User.id).where(User.username == username))).first()
            table = User.__table__
            if existing is None:
                await conn.execute(table.insert().values(username=username, **values))  # type: ignore[attr-defined]
            else:
                await conn.execute(
                    table.update().where(table.c.username == username).values(**values)  # type: ignore[attr-defined]
                )
                await revoke_user_sessions(conn, username, "user updated")
        await self.reload()
        if existing is not None:
            self._revoked(username)

    async def set_active(self, username: str, active: bool) -> bool:
        """Enable or disable a user; disabling ends every session they have. False: no such user."""
        table = User.__table__
        async with self.engine.begin() as conn:
            changed = await conn.execute(
                table.update().where(table.c.username == username).values(active=active)  # type: ignore[attr-defined]
            )
            if changed.rowcount and not active:
                await revoke_user_sessions(conn, username, "user disabled")
        await self.reload()
        if changed.rowcount and not active:
            self._revoked(username)
        return bool(changed.rowcount)

    async def set_password(self, username: str, password: str) -> bool:
        """A new password; every session the user has ends. False: no such user."""
        digest = await asyncio.to_thread(hash_password, password)
        table = User.__table__
        async with self.engine.begin() as conn:
            changed = await conn.execute(
                table.update().where(table.c.username == username).values(password_hash=digest)  # type: ignore[attr-defined]
            )
            if changed.rowcount:
                await revoke_user_sessions(conn, username, "password changed")
        if changed.rowcount:
            self._revoked(username)
        return bool(changed.rowcount)

    async def remove(self, username: str) -> bool:
        """Delete the user; their sessions end (kept, revoked, as the record of their logins), and
        what they did (tickets, calls, dispositions) keeps their name. False: no such user."""
        table = User.__table__
        async with self.engine.begin() as conn:
            removed = await conn.execute(table.delete().where(table.c.username == username))  # type: ignore[attr-defined]
            if removed.rowcount:
                await revoke_user_sessions(conn, username, "user removed")
        await self.reload()
        if removed.rowcount:
            self._revoked(username)
        return bool(removed.rowcount)

    async def listing(self) -> list[UserListing]:
        """Every user, disabled ones too, with their sessions, for `cti users list`."""
        now = datetime.now(UTC)
        async with self.engine.connect() as conn:
            users = (await conn.execute(select(User).order_by(User.username))).all()
            sessions = (
                await conn.execute(
                    select(
                        DbSession.username, DbSession.created_at, DbSession.expires_at, DbSession.revoked_at
                    )
                )
            ).all()
        live: dict[str, int] = {}
        last: dict[str, datetime] = {}
        for username, created, expires, revoked in sessions:
            if revoked is None and expires > now:
                live[username] = live.get(username, 0) + 1
            if username not in last or created > last[username]:
                last[username] = created
        return [
            UserListing(
                principal=principal_of_row(row),
                active=bool(row.active),
                created_at=row.created_at,
                sessions=live.get(row.username, 0),
                last_login=last.get(row.username),
            )
            for row in users
        ]

    def _revoked(self, username: str) -> None:
        for callback in self.on_revoked:
            callback(username)


async def revoke_user_sessions(conn: AsyncConnection, username: str, why: str) -> None:
    """Mark every live session of the user revoked (in the caller's transaction)."""
    await conn.execute(
        update(DbSession)
        .where(DbSession.username == username, DbSession.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC), revoked_why=why)
    )


def principal_of_row(row: object) -> Principal:
    return Principal(
        username=row.username,  # type: ignore[attr-defined]
        role=row.role,  # type: ignore[attr-defined]
        display_name=row.display_name,  # type: ignore[attr-defined]
        language=row.language,  # type: ignore[attr-defined]
        interfaces=tuple(row.interfaces or ()),  # type: ignore[attr-defined]
        devices=tuple(row.devices or ()),  # type: ignore[attr-defined]
    )
