"""Async engine creation for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

# Synchronous or bare driver names people write in settings, mapped to the async driver we ship.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
}


def async_url(url: str | URL) -> URL:
    """`url` with its driver swapped for the async one (`sqlite:///x.db` -> `sqlite+aiosqlite:///x.db`)."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def _is_sqlite_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or bool(url.query.get("mode") == "memory")


def _sqlite_file(url: URL) -> Path | None:
    if _is_sqlite_memory(url) or url.database is None or url.database.startswith("file:"):
        return None
    return Path(url.database)


def sqlite_file(engine: AsyncEngine) -> Path | None:
    """The database file of a SQLite engine (None for PostgreSQL or an in-memory database)."""
    if engine.url.get_backend_name() != "sqlite":
        return None
    return _sqlite_file(engine.url)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the statistics readers run while the writer commits; SQLite leaves foreign
        # keys off by default, which would silently disable ON DELETE CASCADE.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Another process (the AGI script, a report) may hold the lock briefly.
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def _sqlite_engine(url: URL, **kwargs: Any) -> AsyncEngine:
    path = _sqlite_file(url)
    if path is not None:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    if _is_sqlite_memory(url):
        # Each new connection to :memory: would be a new, empty database.
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
    return engine


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url`; extra keyword arguments go to `create_async_engine`."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    # A PostgreSQL restart kills pooled connections; checking them on checkout costs one round
    # trip per batch and saves a failed write after every restart.
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(parsed, **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Objects stay readable after commit: callers hand them to other tasks, not back to the DB.
    return async_sessionmaker(engine, expire_on_commit=False)


def insert_on_conflict(dialect: str, table: Any) -> Any:
    """`INSERT` into `table` that takes `on_conflict_do_nothing` / `_do_update` (PostgreSQL and
    SQLite both have ON CONFLICT): how a row with a natural unique key is written once by several
    daemons."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
