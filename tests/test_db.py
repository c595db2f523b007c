"""Persistence against real databases: a SQLite file, and PostgreSQL at 127.0.0.1:5432.

Every backend-parametrised test gets its own database: a file under tmp_path, or a throwaway
PostgreSQL database created from the `test` database and dropped afterwards. The PostgreSQL
half is skipped (with the reason) only when no server answers there.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, MetaData, Text, event, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from cti.calls.records import CallRecord, IvrStep, QueueSegment
from cti.cli import main as cli_main
from cti.db.calls_store import WRITE_ROWS, CallStore, CallWriter, is_record_error, load_calls
from cti.db.engine import async_url, create_engine, session_factory
from cti.db.migrate import alembic_config, current_revision, head_revision, upgrade, upgrade_async
from cti.db.models import Base, Customer

PG_HOST = os.environ.get("CTI_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CTI_TEST_PG_PORT", "5432"))
PG_USERS = ("postgres", "root")
T0 = 1_700_000_000.25

_pg_unreachable: str | None = None


# -- fixtures ---------------------------------------------------------------------------------


async def _pg_admin() -> tuple[asyncpg.Connection, str]:
    """A connection to the `test` database and the user it worked with, or skip the test."""
    global _pg_unreachable
    if _pg_unreachable is not None:
        pytest.skip(_pg_unreachable)
    errors = []
    for user in PG_USERS:
        try:
            return await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=user, database="test", timeout=5
            ), user
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            errors.append(f"{user}: {exc}")
    _pg_unreachable = f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({'; '.join(errors)})"
    pytest.skip(_pg_unreachable)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def pg_admin(backend: str) -> AsyncIterator[tuple[asyncpg.Connection, str] | None]:
    if backend != "postgresql":
        yield None
        return
    admin, user = await _pg_admin()
    try:
        yield admin, user
    finally:
        await admin.close()


@pytest.fixture
async def db_url(
    backend: str, tmp_path: Path, pg_admin: tuple[asyncpg.Connection, str] | None
) -> AsyncIterator[str]:
    """An empty database (no schema) for this test only."""
    if pg_admin is None:
        yield f"sqlite:///{tmp_path}/data/cti.db"
        return
    admin, user = pg_admin
    name = f"cti_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def migrated_url(db_url: str) -> str:
    # upgrade() is the synchronous CLI entry (it runs its own event loop): call it off this loop.
    await asyncio.to_thread(upgrade, db_url)
    return db_url


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(migrated_url)
    try:
        yield eng
    finally:
        await eng.dispose()


# -- helpers ----------------------------------------------------------------------------------


def make_record(n: int, *, segments: int = 2, outcome: str = "answered", **overrides: Any) -> CallRecord:
    start = T0 + n
    record = CallRecord(
        server="pbx1",
        linkedid=f"1700000000.{n}",
        direction="inbound",
        started_at=start,
        ended_at=start + 95.5,
        caller_raw="0612345678",
        caller_e164="+33612345678",
        caller_name="Jean Dupont",
        called="0140000000",
        ivr_path=[IvrStep(at=start + 1, menu="main", kind="choice", value="2")],
        segments=[
            QueueSegment(
                queue=f"q{i}",
                joined_at=start + 5 + i,
                left_at=start + 20 + i,
                outcome="answered" if i == segments - 1 else "continue",
                agent="agent1",
                interface="PJSIP/1001",
                wait_s=15.0,
                ring_s=4.5,
                talk_s=60.0,
                completed_by="caller",
                position=i + 1,
                ring_attempts=2,
                ring_no_answer=1,
            )
            for i in range(segments)
        ],
        outcome=outcome,
        hangup_by="caller",
        hangup_cause=16,
        agent="agent1",
        agent_interface="PJSIP/1001",
        answered_at=start + 20,
        wait_s=15.0,
        ring_s=4.5,
        talk_s=60.0,
        transfers=1,
        transferred_to=["PJSIP/1002"],
        originate_reason=None,
        campaign="spring",
        contact="c-42",
        closed_by="events",
    )
    for key, value in overrides.items():
        setattr(record, key, value)
    return record


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


async def wait_until(predicate: Callable[[], bool], within_s: float = 15.0) -> None:
    # Polling the writer's counters keeps the writer free of test-only hooks.
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


def _schema_diff(conn: Connection, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, metadata))


class RecordingStore(CallStore):
    """The real store, noting the size of every batch it is asked to save."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.batches: list[int] = []

    async def save(self, records: Sequence[CallRecord]) -> None:
        self.batches.append(len(records))
        await super().save(records)


def fast_writer(store: CallStore, **kwargs: Any) -> CallWriter:
    options: dict[str, Any] = {
        "batch_size": 5,
        "flush_interval_s": 0.02,
        "retry_initial_s": 0.02,
        "retry_max_s": 0.1,
    }
    return CallWriter(store, **(options | kwargs))


# -- engine and migrations ----------------------------------------------------------------------


def test_async_url_maps_sync_drivers() -> None:
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("sqlite+aiosqlite:///x.db").database == "x.db"


async def test_sqlite_engine_creates_directory_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cti.db"
    eng = create_engine(f"sqlite:///{path}")
    try:
        assert path.parent.is_dir()
        assert await scalar(eng, "PRAGMA journal_mode") == "wal"
        assert await scalar(eng, "PRAGMA foreign_keys") == 1
    finally:
        await eng.dispose()


async def test_in_memory_sqlite_keeps_one_database() -> None:
    eng = create_engine("sqlite://")
    try:
        await upgrade_async(eng)
        await CallStore(eng).save([make_record(1)])
        assert len(await load_calls(eng)) == 1
    finally:
        await eng.dispose()


async def test_migrations_match_models(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision() == "0011"
    async with engine.connect() as conn:
        assert await conn.run_sync(_schema_diff, Base.metadata) == []
        # The comparison must be able to see a difference at all.
        changed = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(changed)
        changed.tables["calls"].append_column(Column("not_migrated", Text()))
        diff = await conn.run_sync(_schema_diff, changed)
    assert [d[0] for d in diff] == ["add_column"]


async def test_upgrade_twice_is_harmless_and_downgrade_drops_everything(engine: AsyncEngine) -> None:
    await upgrade_async(engine)
    assert await current_revision(engine) == "0011"

    def downgrade(conn: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "base")

    async with engine.begin() as conn:
        await conn.run_sync(downgrade)
    assert await current_revision(engine) is None
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    assert set(tables) <= {"alembic_version"}


async def test_migration_0010_numbers_tickets_and_drops_duplicate_spans(db_url: str) -> None:
    """A database at 0009 with a call's two tickets and a span stored twice (two trackers of one
    PBX): 0010 numbers the tickets in opening order and keeps the first copy of the span."""
    await asyncio.to_thread(command.upgrade, alembic_config(db_url), "0009")
    eng = create_engine(db_url)
    at: Any = datetime(2026, 12, 7, 9, tzinfo=UTC)
    if db_url.startswith("sqlite"):
        at = "2026-12-07 09:00:00.000000"  # as SQLAlchemy stores it there
    try:
        async with eng.begin() as conn:
            for linkedid in ("1.1", "1.1", "2.2"):
                await conn.execute(
                    text(
                        "INSERT INTO tickets (server, linkedid, agent, status, opened_at, held_s, reopened)"
                        " VALUES ('pbx1', :l, 'amina', 'resolved', :at, 0, 0)"
                    ),
                    {"l": linkedid, "at": at},
                )
            for duration in (30.0, 30.0, 12.0):
                await conn.execute(
                    text(
                        "INSERT INTO agent_state_spans (server, interface, state, started_at, ended_at,"
                        " duration_s) VALUES ('pbx1', 'PJSIP/1', 'available', :at, :at, :d)"
                    ),
                    {"at": at, "d": duration},
                )
        await upgrade_async(eng)
        async with eng.connect() as conn:
            tickets = (await conn.execute(text("SELECT linkedid, seq FROM tickets ORDER BY id"))).all()
            spans = (await conn.execute(text("SELECT id, duration_s FROM agent_state_spans"))).all()
            assert [tuple(t) for t in tickets] == [("1.1", 1), ("1.1", 2), ("2.2", 1)]
            assert [tuple(s) for s in spans] == [(1, 30.0)]
            with pytest.raises(IntegrityError):
                await conn.execute(
                    text(
                        "INSERT INTO tickets (server, linkedid, seq, agent, status, opened_at, held_s,"
                        " reopened) VALUES ('pbx1', '2.2', 1, 'amina', 'open', :at, 0, 0)"
                    ),
                    {"at": at},
                )
    finally:
        await eng.dispose()


def test_cli_db_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "cli" / "cti.db"
    assert cli_main(["db", "upgrade", "--url", f"sqlite:///{path}"]) == 0

    async def revision() -> str | None:
        eng = create_engine(f"sqlite:///{path}")
        try:
            return await current_revision(eng)
        finally:
            await eng.dispose()

    assert asyncio.run(revision()) == "0011"


def test_alembic_commands_with_a_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What a developer runs by hand: env.py opens its own engine, or prints the SQL (offline)."""
    url = f"sqlite:///{tmp_path}/own/cti.db"
    command.upgrade(alembic_config(url), "head")
    command.upgrade(alembic_config("postgresql://cti:s3cret@db.example/cti"), "head", sql=True)
    script = capsys.readouterr().out
    assert "CREATE TABLE calls" in script and "TIMESTAMP WITH TIME ZONE" in script
    assert "s3cret" not in script

    async def revision() -> str | None:
        eng = create_engine(url)
        try:
            return await current_revision(eng)
        finally:
            await eng.dispose()

    assert asyncio.run(revision()) == "0011"


async def test_migration_logs_hide_the_password(db_url: str, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite URLs carry no password")
    # Trust authentication never asks for the password, so the URL still works with one.
    url = db_url.replace("@", ":s3cret@", 1)
    with capture_logs() as logs:
        await asyncio.to_thread(upgrade, url)
    assert logs and "s3cret" not in repr(logs)
    assert all(":********@" in e["url"] for e in logs)


# -- CallStore ----------------------------------------------------------------------------------


async def test_save_round_trip(engine: AsyncEngine) -> None:
    record = make_record(1)
    await CallStore(engine).save([record])
    [row] = await load_calls(engine)

    assert row["server"] == "pbx1" and row["linkedid"] == record.linkedid
    assert row["started_at"] == utc(record.started_at) and row["started_at"].tzinfo is UTC
    assert row["ended_at"] == utc(T0 + 1 + 95.5)
    assert row["answered_at"] == utc(T0 + 1 + 20)
    assert row["queue"] == "q0"
    assert row["ivr_path"] == [{"at": T0 + 2, "menu": "main", "kind": "choice", "value": "2"}]
    assert row["transferred_to"] == ["PJSIP/1002"]
    for key in (
        "caller_e164",
        "outcome",
        "hangup_cause",
        "agent",
        "wait_s",
        "talk_s",
        "transfers",
        "campaign",
    ):
        assert row[key] == getattr(record, key), key
    assert [s["seq"] for s in row["segments"]] == [0, 1]
    first = row["segments"][0]
    assert first["queue"] == "q0" and first["outcome"] == "continue"
    assert first["joined_at"] == utc(T0 + 1 + 5) and first["left_at"].tzinfo is UTC
    assert (first["ring_attempts"], first["ring_no_answer"], first["position"]) == (2, 1, 1)


async def test_minimal_record_with_nulls(engine: AsyncEngine) -> None:
    bare = CallRecord(server="pbx1", linkedid="bare", direction="internal", started_at=T0)
    await CallStore(engine).save([bare])
    [row] = await load_calls(engine)
    assert row["ended_at"] is None and row["queue"] is None and row["segments"] == []
    assert row["ivr_path"] == [] and row["outcome"] == "unknown"


async def test_saving_again_replaces_row_and_segments(engine: AsyncEngine) -> None:
    store = CallStore(engine)
    await store.save([make_record(1, segments=3, closed_by="resync", outcome="unknown"), make_record(2)])
    [before, _] = await load_calls(engine)

    corrected = make_record(1, segments=1, closed_by="queue_log", outcome="abandoned", agent=None)
    await store.save([corrected])

    calls = await load_calls(engine)
    assert len(calls) == 2
    after = calls[0]
    assert after["id"] == before["id"]
    assert (after["outcome"], after["closed_by"], after["agent"]) == ("abandoned", "queue_log", None)
    assert len(after["segments"]) == 1
    assert len(calls[1]["segments"]) == 2
    assert await scalar(engine, "SELECT count(*) FROM call_segments") == 3


async def test_same_call_twice_in_one_batch_keeps_the_last(engine: AsyncEngine) -> None:
    await CallStore(engine).save([make_record(1, outcome="answered"), make_record(1, outcome="abandoned")])
    [row] = await load_calls(engine)
    assert row["outcome"] == "abandoned"


async def test_same_linkedid_on_two_servers_are_two_calls(engine: AsyncEngine) -> None:
    await CallStore(engine).save([make_record(1), make_record(1, server="pbx2")])
    assert {c["server"] for c in await load_calls(engine)} == {"pbx1", "pbx2"}


async def test_save_is_one_transaction(engine: AsyncEngine) -> None:
    store = CallStore(engine)
    broken = make_record(2, server=None)  # NOT NULL violation, after a valid record in the same batch
    with pytest.raises(IntegrityError):
        await store.save([make_record(1), broken])
    assert await load_calls(engine) == []


async def test_large_batch_uses_few_statements(engine: AsyncEngine) -> None:
    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE")):
            statements.append(statement.split("(")[0].strip())

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        await CallStore(engine).save([make_record(n) for n in range(500)])
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)
    # Multi-row statements of WRITE_ROWS rows (short steps for the event loop, yet not one
    # statement per row): the upserts of 500 calls, one delete of old segments, the inserts of
    # 1000 segments.
    expected = ["INSERT INTO calls"] * math.ceil(500 / WRITE_ROWS)
    expected += ["DELETE FROM call_segments WHERE call_segments.call_id IN"]
    expected += ["INSERT INTO call_segments"] * math.ceil(1000 / WRITE_ROWS)
    assert statements == expected
    # Beyond one chunk (1000 calls) and several thousand bound parameters per statement.
    await CallStore(engine).save([make_record(n) for n in range(2500)])
    assert await scalar(engine, "SELECT count(*) FROM calls") == 2500
    assert await scalar(engine, "SELECT count(*) FROM call_segments") == 5000


async def test_deleting_a_call_cascades_to_segments(engine: AsyncEngine) -> None:
    await CallStore(engine).save([make_record(1), make_record(2)])
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM calls WHERE linkedid = :l"), {"l": make_record(1).linkedid})
    assert await scalar(engine, "SELECT count(*) FROM call_segments") == 2


async def test_load_calls_since(engine: AsyncEngine) -> None:
    await CallStore(engine).save([make_record(n) for n in range(5)])
    assert [c["linkedid"] for c in await load_calls(engine, since=T0 + 3)] == [
        make_record(3).linkedid,
        make_record(4).linkedid,
    ]
    assert len(await load_calls(engine, since=utc(T0 + 4))) == 1


async def test_customers_with_plain_sql(engine: AsyncEngine) -> None:
    """The shape the AGI lookup relies on: plain SQL, server-side defaults, cascade, unique phone."""
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO customers (name, account) VALUES ('ACME', 'A-1')"))
        cid = (await conn.execute(text("SELECT id FROM customers WHERE account = 'A-1'"))).scalar_one()
        await conn.execute(
            text(
                "INSERT INTO customer_phones (customer_id, e164, label) VALUES (:c, '+33140000000', 'desk')"
            ),
            {"c": cid},
        )
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT c.name, c.vip, c.queue_priority, c.created_at FROM customers c "
                    "JOIN customer_phones p ON p.customer_id = c.id WHERE p.e164 = :n"
                ),
                {"n": "+33140000000"},
            )
        ).one()
    assert row.name == "ACME" and not row.vip and row.queue_priority == 0 and row.created_at is not None
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO customer_phones (customer_id, e164) VALUES (:c, '+33140000000')"),
                {"c": cid},
            )
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM customers"))
    assert await scalar(engine, "SELECT count(*) FROM customer_phones") == 0


async def test_customer_orm_timestamps_are_aware(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        customer = Customer(name="Zoé", vip=True, queue_priority=5)
        session.add(customer)
        await session.commit()
        await session.refresh(customer)
    assert customer.created_at.tzinfo is UTC and customer.vip is True


# -- CallWriter ---------------------------------------------------------------------------------


async def test_writer_flushes_by_size_then_by_close(engine: AsyncEngine) -> None:
    store = RecordingStore(engine)
    writer = CallWriter(store, batch_size=10, flush_interval_s=60)
    for n in range(10):
        writer.submit(make_record(n))
    await wait_until(lambda: writer.written == 10)
    for n in range(10, 13):
        writer.submit(make_record(n))
    await asyncio.sleep(0.1)
    assert writer.written == 10 and writer.pending == 3  # no full batch, interval far away
    assert await writer.close() == []
    assert store.batches == [10, 3]
    assert len(await load_calls(engine)) == 13


async def test_writer_flushes_by_interval(engine: AsyncEngine) -> None:
    writer = CallWriter(CallStore(engine), batch_size=1000, flush_interval_s=0.05)
    async with writer:
        for n in range(3):
            writer.submit(make_record(n))
        await wait_until(lambda: writer.written == 3, within_s=2)
        assert len(await load_calls(engine)) == 3


async def test_writer_survives_database_outage(
    engine: AsyncEngine, backend: str, migrated_url: str, pg_admin: tuple[asyncpg.Connection, str] | None
) -> None:
    outage = SqliteOutage(migrated_url, engine) if pg_admin is None else PgOutage(migrated_url, pg_admin[0])
    writer = fast_writer(CallStore(engine))
    with capture_logs() as logs:
        for n in range(10):
            writer.submit(make_record(n))
        await wait_until(lambda: writer.written == 10)

        await outage.begin()
        for n in range(10, 30):
            writer.submit(make_record(n))
        await wait_until(lambda: writer.failures >= 3)
        assert writer.pending == 20 and writer.dropped == 0
        await outage.end()

        await wait_until(lambda: writer.pending == 0)
        for n in range(30, 35):
            writer.submit(make_record(n))
        assert await writer.close() == []

    assert sorted(c["linkedid"] for c in await load_calls(engine)) == sorted(
        make_record(n).linkedid for n in range(35)
    )
    errors = [e for e in logs if e["event"].startswith("cannot write call records")]
    assert errors and all(e["log_level"] == "error" for e in errors)
    assert errors[0]["pending"] >= 1 and errors[0]["url"].startswith(f"{backend}+")
    assert any(e["event"] == "database writable again" for e in logs)


async def test_writer_waits_for_the_schema(db_url: str) -> None:
    """Records submitted before migrations have run are kept and written once they have."""
    eng = create_engine(db_url)
    try:
        writer = fast_writer(CallStore(eng))
        with capture_logs():
            for n in range(7):
                writer.submit(make_record(n))
            await wait_until(lambda: writer.failures >= 2)
            await upgrade_async(eng)
            await wait_until(lambda: writer.pending == 0)
            assert await writer.close() == []
        assert len(await load_calls(eng)) == 7
    finally:
        await eng.dispose()


async def test_writer_sets_aside_a_refused_record(engine: AsyncEngine) -> None:
    writer = fast_writer(CallStore(engine), batch_size=10)
    with capture_logs() as logs:
        for n in range(10):
            writer.submit(make_record(n, server=None) if n == 4 else make_record(n))
        assert await writer.close() == []
    assert writer.rejected == 1 and writer.written == 9
    assert len(await load_calls(engine)) == 9
    [refused] = [e for e in logs if e["event"] == "database refused a call record, dropped"]
    assert refused["linkedid"] == make_record(4).linkedid


# -- CallWriter without a database ----------------------------------------------------------------


UNREACHABLE = "postgresql://cti:s3cret@127.0.0.1:1/cti"


async def test_writer_drops_oldest_beyond_max_pending_and_says_so() -> None:
    eng = create_engine(UNREACHABLE)
    try:
        writer = fast_writer(CallStore(eng), max_pending=5)
        with capture_logs() as logs:
            for n in range(8):
                writer.submit(make_record(n))
            await wait_until(lambda: writer.failures >= 1)
            left = await writer.close(flush_timeout_s=0.2)
    finally:
        await eng.dispose()
    assert writer.dropped == 3
    assert [r.linkedid for r in left] == [make_record(n).linkedid for n in range(3, 8)]
    dropped = [e for e in logs if e["event"] == "call records dropped without being written"]
    assert sum(e["dropped"] for e in dropped) == 3 and all(e["log_level"] == "error" for e in dropped)
    assert any(
        e["event"] == "call writer closed with call records not written" and e["count"] == 5 for e in logs
    )
    text_of_logs = repr(logs)
    assert "s3cret" not in text_of_logs and "cti:********@127.0.0.1:1/cti" in text_of_logs


async def test_submit_after_close_is_counted_and_logged() -> None:
    eng = create_engine(UNREACHABLE)
    try:
        writer = CallWriter(CallStore(eng))
        await writer.close()
        with capture_logs() as logs:
            writer.submit(make_record(1))
    finally:
        await eng.dispose()
    assert writer.dropped == 1
    assert logs[0]["reason"] == "writer closed"


class HungStore:
    """A database that accepts the connection and then never answers."""

    display_url = "postgresql+asyncpg://cti:********@stuck/cti"

    async def save(self, records: Sequence[CallRecord]) -> None:
        await asyncio.Event().wait()


async def test_close_gives_up_on_a_hung_write_and_returns_the_records() -> None:
    writer = CallWriter(HungStore(), batch_size=2, flush_interval_s=0.01)
    for n in range(3):
        writer.submit(make_record(n))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with capture_logs():
        left = await writer.close(flush_timeout_s=0.1)
    assert time.monotonic() - started < 3
    assert [r.linkedid for r in left] == [make_record(n).linkedid for n in range(3)]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "cti-call-writer"]


def test_record_errors_are_told_apart_from_outages() -> None:
    assert is_record_error(OverflowError("int too big"))
    assert is_record_error(IntegrityError("INSERT", {}, Exception("NOT NULL")))
    assert not is_record_error(ConnectionRefusedError(111, "refused"))
    assert not is_record_error(OperationalError("INSERT", {}, Exception("database is locked")))
    assert not is_record_error(TimeoutError())


# -- outages ----------------------------------------------------------------------------------------


class SqliteOutage:
    """The database's directory disappears (unmounted volume, say), then comes back."""

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        database = async_url(url).database
        assert database is not None
        self.directory = Path(database).parent
        self.hidden = self.directory.with_name(self.directory.name + ".away")
        self.engine = engine

    async def begin(self) -> None:
        self.directory.rename(self.hidden)
        # Pooled connections keep the moved file open; only new connections notice.
        await self.engine.dispose()

    async def end(self) -> None:
        self.hidden.rename(self.directory)


class PgOutage:
    """The database refuses connections and existing ones are killed, as in a restart."""

    def __init__(self, url: str, admin: asyncpg.Connection) -> None:
        self.name = async_url(url).database
        self.admin = admin

    async def begin(self) -> None:
        await self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        await self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", self.name
        )

    async def end(self) -> None:
        await self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
