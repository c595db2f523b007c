"""Find the customers who own a phone number, in the cti database, without SQLAlchemy.

The AGI runs once per inbound call and must answer within 200 ms, start-up included, so this
module reads the `customers` / `customer_phones` tables (a public contract of cti.db.models)
with the standard library's sqlite3, or with the tiny PostgreSQL client beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlsplit

if TYPE_CHECKING:
    from cti.agi.pgwire import PgTarget


# At most this many owners are read: enough to know that a number is shared.
MAX_MATCHES = 5

_QUERY = (
    "SELECT c.id, c.name, c.vip, c.queue_priority"
    " FROM customer_phones p JOIN customers c ON c.id = p.customer_id"
    " WHERE p.e164 = {placeholder}"
    " ORDER BY c.vip DESC, c.queue_priority DESC, c.id"
    f" LIMIT {MAX_MATCHES}"
)


class DirectoryUnavailable(Exception):
    """The directory could not be read (bad URL, unreachable server, missing table, timeout)."""


@dataclass(frozen=True, slots=True)
class CustomerMatch:
    id: int
    name: str
    vip: bool
    queue_priority: int


def find_customers(url: str, e164: str, deadline: float) -> list[CustomerMatch]:
    """Owners of `e164`, VIPs and higher priorities first; any failure raises DirectoryUnavailable."""
    scheme = url.split(":", 1)[0].lower()
    backend = scheme.split("+", 1)[0]
    rows: Sequence[tuple[object, ...]]
    try:
        if backend == "sqlite":
            rows = _sqlite_rows(url, e164, deadline)
        elif backend in ("postgresql", "postgres"):
            from cti.agi.pgwire import fetch_all  # each backend's imports only when used

            rows = fetch_all(_pg_target(url), _QUERY.format(placeholder="$1"), [e164], deadline)
        else:
            raise DirectoryUnavailable(f"unsupported database URL scheme {scheme!r}")
        return [_match(row) for row in rows]
    except DirectoryUnavailable:
        raise
    except Exception as exc:  # every failure means the same thing to the caller: no data
        raise DirectoryUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _match(row: tuple[object, ...]) -> CustomerMatch:
    ident, name, vip, priority = row
    return CustomerMatch(int(str(ident)), str(name or ""), _truthy(vip), int(str(priority or 0)))


def _truthy(value: object) -> bool:
    # SQLite stores booleans as 0/1, PostgreSQL's text format spells them t/f.
    return str(value).strip().lower() in ("1", "t", "true", "yes")


def sqlite_path(url: str) -> str:
    """The file behind a SQLAlchemy-style SQLite URL; relative paths are refused (see docs/asterisk.md)."""
    parts = urlsplit(url)
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path or path == ":memory:":
        raise DirectoryUnavailable("an in-memory SQLite database cannot be shared with the AGI")
    if not path.startswith("/"):
        # Relative to whose working directory? Asterisk's is not the daemon's.
        raise DirectoryUnavailable(f"relative SQLite path {path!r}: use sqlite:////absolute/path.db")
    return path


def _sqlite_rows(url: str, e164: str, deadline: float) -> list[tuple[object, ...]]:
    import sqlite3

    path = sqlite_path(url)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("SQLite lookup deadline passed")
    # mode=ro: a missing file is an error, not a new empty database left behind by the lookup.
    conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=remaining)
    try:
        # The busy timeout bounds waiting for a lock; this bounds the query itself.
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        return list(conn.execute(_QUERY.format(placeholder="?"), (e164,)).fetchall())
    finally:
        conn.close()


def _pg_target(url: str) -> PgTarget:
    from cti.agi.pgwire import PgTarget

    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or parts.hostname or "/run/postgresql"
    sslmode = query.get("sslmode") or query.get("ssl") or "disable"
    if sslmode in ("true", "on", "1"):
        sslmode = "require"
    if sslmode not in ("disable", "prefer", "require"):
        raise DirectoryUnavailable(
            f"sslmode {sslmode!r} is not supported by the AGI (disable, prefer, require)"
        )
    return PgTarget(
        host=host,
        port=parts.port or int(query.get("port", "5432")),
        user=unquote(parts.username or query.get("user", "postgres")),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.lstrip("/")) or "postgres",
        sslmode=sslmode,
    )
