"""Logins, sessions and roles.

Passwords are hashed with argon2 (argon2-cffi). A session is a signed token (HMAC-SHA256 over
user, role and expiry) sent as a bearer token or an HttpOnly cookie: the daemon keeps no session
table, and with `CTI_WEB_SECRET` set, desktops stay logged in across a daemon restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import User

Role = Literal["agent", "supervisor", "admin"]
ROLES: tuple[Role, ...] = ("agent", "supervisor", "admin")
_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the answer time the same, so a
# login attempt cannot tell which usernames exist.
_DUMMY_HASH = _hasher.hash("not a real password")


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


class TokenSigner:
    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(secret).digest()
        self.ttl_s = ttl_s
        self.clock = clock

    def _sign(self, body: bytes) -> str:
        return (
            base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()).decode().rstrip("=")
        )

    def issue(self, username: str, role: Role) -> str:
        payload = {"u": username, "r": role, "exp": int(self.clock() + self.ttl_s), "n": secrets.token_hex(4)}
        body = (
            base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
        )
        return f"{body}.{self._sign(body.encode())}"

    def check(self, token: str) -> tuple[str, Role] | None:
        body, sep, signature = token.partition(".")
        if not sep or not hmac.compare_digest(signature, self._sign(body.encode())):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if (
            not isinstance(payload, dict)
            or payload.get("r") not in ROLES
            or payload.get("exp", 0) < self.clock()
        ):
            return None
        return str(payload["u"]), payload["r"]


@dataclass
class LoginLimiter:
    """At most `per_minute` failed attempts per username, and ten times that per client address
    (a whole floor of agents often shares one address behind NAT)."""

    per_minute: int
    clock: Callable[[], float] = time.time
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str) -> deque[float]:
        window = self._failures.setdefault(key, deque())
        cutoff = self.clock() - 60
        while window and window[0] < cutoff:
            window.popleft()
        return window

    def blocked(self, username: str, address: str) -> bool:
        return (
            len(self._recent("u:" + username)) >= self.per_minute
            or len(self._recent("a:" + address)) >= 10 * self.per_minute
        )

    def failed(self, username: str, address: str) -> None:
        for key in ("u:" + username, "a:" + address):
            self._recent(key).append(self.clock())
        if len(self._failures) > 10_000:  # bounded: forget the quiet ones
            for key in [k for k, v in self._failures.items() if not v][:5000]:
                del self._failures[key]

    def succeeded(self, username: str) -> None:
        self._failures.pop("u:" + username, None)


class UserStore:
    """Users in the database, with a small cache of who owns which member interface/device."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._by_interface: dict[str, str] = {}
        self._principals: dict[str, Principal] = {}

    async def reload(self) -> None:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(User).where(User.active.is_(True)))).all()
        principals = {}
        by_interface = {}
        for row in rows:
            p = _principal(row)
            principals[p.username] = p
            for name in (*p.interfaces, *p.devices):
                by_interface[name] = p.username
        self._principals, self._by_interface = principals, by_interface

    def user_for_interface(self, interface: str) -> str | None:
        return self._by_interface.get(interface)

    def principal(self, username: str) -> Principal | None:
        return self._principals.get(username)

    def users(self) -> list[Principal]:
        return list(self._principals.values())

    async def authenticate(self, username: str, password: str) -> Principal | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(User).where(User.username == username, User.active.is_(True)))
            ).first()
        if row is None:
            verify_password(_DUMMY_HASH, password)
            return None
        return _principal(row) if verify_password(row.password_hash, password) else None

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
        """Create the user, or update every field of an existing one (idempotent for scripts)."""
        values = {
            "display_name": display_name or username,
            "password_hash": hash_password(password),
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
        await self.reload()


def _principal(row: object) -> Principal:
    return Principal(
        username=row.username,  # type: ignore[attr-defined]
        role=row.role,  # type: ignore[attr-defined]
        display_name=row.display_name,  # type: ignore[attr-defined]
        language=row.language,  # type: ignore[attr-defined]
        interfaces=tuple(row.interfaces or ()),  # type: ignore[attr-defined]
        devices=tuple(row.devices or ()),  # type: ignore[attr-defined]
    )
