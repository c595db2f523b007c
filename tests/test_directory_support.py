"""Shared helpers for the directory tests (no tests here): real databases, seeded customers.

Each test gets its own database: a SQLite file under tmp_path, or a throwaway PostgreSQL database
created from `test` at 127.0.0.1:5432 and dropped afterwards (skipped only when no server answers).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.directory.lookup import CustomerDirectory

PG_HOST = os.environ.get("CTI_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CTI_TEST_PG_PORT", "5432"))
PG_USERS = ("postgres", "root")
BACKENDS = ["sqlite", "postgresql"]

_pg_unreachable: list[str] = []


async def pg_admin() -> tuple[asyncpg.Connection, str]:
    """A connection to the `test` database and the user that worked, or skip the test."""
    if _pg_unreachable:
        pytest.skip(_pg_unreachable[0])
    errors = []
    for user in PG_USERS:
        try:
            connection = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=user, database="test", timeout=5
            )
            return connection, user
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            errors.append(f"{user}: {exc}")
    _pg_unreachable.append(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({'; '.join(errors)})")
    pytest.skip(_pg_unreachable[0])


@asynccontextmanager
async def fresh_database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database that lives as long as the context."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/db/cti.db"
        return
    admin, user = await pg_admin()
    name = f"cti_dir_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def migrated_engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        await upgrade_async(engine)
        yield engine
    finally:
        await engine.dispose()


async def insert_legacy_phone(engine: AsyncEngine, name: str, stored: str) -> int:
    """A customer the way an older import left it: the number in a national spelling, by plain
    SQL (as the AGI side and old scripts write)."""
    async with engine.begin() as conn:
        customer_id = (
            await conn.execute(text("INSERT INTO customers (name) VALUES (:n) RETURNING id"), {"n": name})
        ).scalar_one()
        await conn.execute(
            text("INSERT INTO customer_phones (customer_id, e164) VALUES (:c, :e)"),
            {"c": customer_id, "e": stored},
        )
    return int(customer_id)


async def seed(directory: CustomerDirectory) -> dict[str, int]:
    """French and Moroccan customers in mixed spellings; returns their ids by name."""
    made = [
        await directory.create_customer(
            "Jean Dupont",
            ["06 12 34 56 78"],
            account="C-1001",
            address="12 rue de la République, 69002 Lyon",
            notes="Client historique",
            vip=True,
            queue_priority=10,
        ),
        await directory.create_customer("Boulangerie Riviere", ["04.78.12.34.56"], account="C-1002"),
        await directory.create_customer("Youssef El Amrani", ["+212 6 61 23 45 67"], account="M-2001"),
        await directory.create_customer(
            "Marie Martin", [("01 45 67 89 01", "fixe"), ("0623456789", "mobile")]
        ),
        await directory.create_customer("Paul Martin", ["0033145678901"]),
        await directory.create_customer("Nadia Chraibi", ["+212612345678"], account="M-2005"),
    ]
    ids = {c.name: c.id for c in made if c.id is not None}
    ids["Ancien Client"] = await insert_legacy_phone(directory.engine, "Ancien Client", "0472001122")
    ids["Client Espace"] = await insert_legacy_phone(directory.engine, "Client Espace", "+33 5 56 00 11 22")
    ids["Legacy FR"] = await insert_legacy_phone(directory.engine, "Legacy FR", "0661234567")
    return ids


def closed_port() -> int:
    """A local TCP port nobody listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
