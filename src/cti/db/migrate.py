"""Schema migrations, driven from code: no alembic.ini is needed at runtime.

`upgrade(url)` is the synchronous entry for `cti db upgrade`; `upgrade_async(engine)` does the
same from inside a running event loop (daemon start-up, tests).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from cti.config import redact_url
from cti.db.engine import create_engine

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    """An alembic Config pointing at the packaged migrations (for `command.*`, e.g. new revisions)."""
    config = Config()
    # Config values go through configparser interpolation, where "%" is special.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        # Kept out of the config options: they can end up in alembic's own messages.
        config.attributes["url"] = url
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade_on(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current_on(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_async(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database behind `engine` to `revision`, in one transaction where the backend allows."""
    log.info("migrating database", url=_display(engine), revision=revision)
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_on, revision)
    log.info("database schema up to date", url=_display(engine), revision=revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, None if it was never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current_on)


async def _upgrade_url(url: str, revision: str) -> None:
    # One-shot: no pool to keep alive behind us.
    engine = create_engine(url, poolclass=NullPool)
    try:
        await upgrade_async(engine, revision)
    finally:
        await engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision`; not callable from inside a running event loop."""
    asyncio.run(_upgrade_url(url, revision))


def _display(engine: AsyncEngine) -> str:
    return redact_url(engine.url.render_as_string(hide_password=False))
