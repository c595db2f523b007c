"""CustomerDirectory against real databases (a SQLite file and PostgreSQL): caller lookups for the
screen pop, customer files, histories, the agent's choice for a call, and databases that are
slow or gone (the pop degrades to 'unavailable', quickly, and never raises)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from cti.db.engine import create_engine, session_factory
from cti.db.models import Call, Ticket
from cti.directory import store
from cti.directory.customer import Phone
from cti.directory.exceptions import CustomerNotFound, DirectoryUnavailable, InvalidCustomer
from cti.directory.lookup import CustomerDirectory
from cti.directory.numbers import normalize, stored_forms
from cti.directory.outage import OutageLog
from cti.directory.sqlite_lookup import SqliteLookup
from test_directory_support import (
    BACKENDS,
    closed_port,
    fresh_database,
    insert_legacy_phone,
    migrated_engine,
    seed,
)


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(request.param, tmp_path) as url, migrated_engine(url) as eng:
        yield eng


@pytest.fixture
async def directory(engine: AsyncEngine) -> AsyncIterator[CustomerDirectory]:
    d = CustomerDirectory(engine, "FR")
    try:
        yield d
    finally:
        await d.close()


def names(result: Any) -> list[str]:
    return [c.name for c in result.customers]


# -- lookups ------------------------------------------------------------------------------------


async def test_lookup_by_every_spelling_french_and_moroccan(directory: CustomerDirectory) -> None:
    await seed(directory)
    morocco = CustomerDirectory(directory.engine, "MA")
    cases = [
        ("+33612345678", directory),
        ("0612345678", directory),
        ("06.12.34.56.78", directory),
        ("0033612345678", directory),
        ("0478123456", directory),
        ("+212661234567", directory),
        ("00212661234567", directory),
        # A Moroccan desk reads national spellings as Moroccan: the old row "0661234567" too.
        ("0661234567", morocco),
        ("0612345678", morocco),  # same digits, a different (Moroccan) customer
        # A French desk reads it as French: only the old row, not the Moroccan customer.
        ("0661234567", directory),
        ("0145678901", directory),  # shared by two customers
        ("+33472001122", directory),  # stored as 0472001122
        ("05 56 00 11 22", directory),  # stored as +33 5 56 00 11 22
        ("0699999999", directory),
    ]
    got = [(raw, r.status, names(r), r.number.e164) for raw, d in cases for r in [await d.lookup(raw)]]
    assert got == [
        ("+33612345678", "found", ["Jean Dupont"], "+33612345678"),
        ("0612345678", "found", ["Jean Dupont"], "+33612345678"),
        ("06.12.34.56.78", "found", ["Jean Dupont"], "+33612345678"),
        ("0033612345678", "found", ["Jean Dupont"], "+33612345678"),
        ("0478123456", "found", ["Boulangerie Riviere"], "+33478123456"),
        ("+212661234567", "found", ["Youssef El Amrani"], "+212661234567"),
        ("00212661234567", "found", ["Youssef El Amrani"], "+212661234567"),
        ("0661234567", "several", ["Youssef El Amrani", "Legacy FR"], "+212661234567"),
        ("0612345678", "found", ["Nadia Chraibi"], "+212612345678"),
        ("0661234567", "found", ["Legacy FR"], "+33661234567"),
        ("0145678901", "several", ["Marie Martin", "Paul Martin"], "+33145678901"),
        ("+33472001122", "found", ["Ancien Client"], "+33472001122"),
        ("05 56 00 11 22", "found", ["Client Espace"], "+33556001122"),
        ("0699999999", "unknown", [], "+33699999999"),
    ]


async def test_exact_e164_holders_come_before_old_spellings(directory: CustomerDirectory) -> None:
    ids = await seed(directory)
    old = await insert_legacy_phone(directory.engine, "Aaron Ancien", "06 12 34 56 78")
    result = await directory.lookup("0612345678")
    assert result.status == "several"
    assert [c.id for c in result.customers] == [ids["Jean Dupont"], old]


async def test_found_result_as_the_pop_embeds_it(directory: CustomerDirectory) -> None:
    ids = await seed(directory)
    doc = await directory.lookup_json("06 12 34 56 78")
    assert doc == {
        "number": {
            "raw": "06 12 34 56 78",
            "e164": "+33612345678",
            "kind": "e164",
            "display": "06 12 34 56 78",
        },
        "status": "found",
        "customers": [
            {
                "id": ids["Jean Dupont"],
                "name": "Jean Dupont",
                "account": "C-1001",
                "address": "12 rue de la République, 69002 Lyon",
                "notes": "Client historique",
                "vip": True,
                "queue_priority": 10,
                "phones": [{"e164": "+33612345678", "label": None}],
                "source": "sql",
                "external_id": None,
            }
        ],
        "sources": {"sql": "ok"},
        "truncated": False,
    }


async def test_moroccan_number_displays_internationally_for_a_french_desk(
    directory: CustomerDirectory,
) -> None:
    await seed(directory)
    doc = await directory.lookup_json("00212661234567")
    assert doc["number"] == {
        "raw": "00212661234567",
        "e164": "+212661234567",
        "kind": "e164",
        "display": "+212 6 61 23 45 67",
    }


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (None, "withheld"),
        ("", "withheld"),
        ("   ", "withheld"),
        ("anonymous", "withheld"),
        ("Anonymous", "withheld"),
        ("<unknown>", "withheld"),
        ("+", "withheld"),
        ("restricted", "withheld"),
        ("12", "invalid"),
        ("+999123", "invalid"),
    ],
)
async def test_withheld_and_invalid_numbers_are_never_looked_up(raw: str | None, status: str) -> None:
    # The engine points at a port nobody listens on: any query would come back 'unavailable'.
    engine = create_engine(f"postgresql://nobody@127.0.0.1:{closed_port()}/none")
    try:
        result = await CustomerDirectory(engine, "FR").lookup(raw)
    finally:
        await engine.dispose()
    assert (result.status, result.customers, result.sources) == (status, (), ())
    assert result.to_json()["number"]["e164"] is None


async def test_many_holders_are_truncated(directory: CustomerDirectory) -> None:
    for n in range(5):
        await directory.create_customer(f"Standard {n}", ["01 40 00 00 00"])
    small = CustomerDirectory(directory.engine, "FR", max_matches=3)
    result = await small.lookup("+33140000000")
    assert (result.status, len(result.customers), result.truncated) == ("several", 3, True)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_plain_sql_lookup_answers_as_the_orm_query(backend: str, tmp_path: Path) -> None:
    """The lookup runs a plain-SQL copy of the ORM query: on SQLite in its own thread (or
    inline, in the FastAGI worker), on PostgreSQL through asyncpg itself. Each must give the
    ORM query's customers, in the same order, truncated the same way."""
    async with fresh_database(backend, tmp_path) as url, migrated_engine(url) as engine:
        directory = CustomerDirectory(engine, "FR")
        await seed(directory)
        await insert_legacy_phone(engine, "Aaron Ancien", "06 12 34 56 78")
        for n in range(4):
            await directory.create_customer(f"Standard {n}", ["01 40 00 00 00"])
        readers: list[Any] = []
        if backend == "sqlite":
            readers = [
                SqliteLookup(tmp_path / "db" / "cti.db"),
                SqliteLookup(tmp_path / "db" / "cti.db", inline=True),
            ]
            plain = [reader.customers_by_phone for reader in readers]
        else:
            plain = [functools.partial(store.customers_by_phone_raw, engine)]
        try:
            for raw in ("0612345678", "+33140000000", "+212661234567", "0145678901", "0699999999"):
                number = normalize(raw, "FR")
                assert number.e164 is not None
                forms = stored_forms(number.e164, "FR")
                for limit in (2, 20):
                    async with session_factory(engine)() as session:
                        expected = await store.customers_by_phone(session, forms, limit)
                    for lookup in plain:
                        assert await lookup(forms, limit) == expected, (raw, limit, lookup)
            assert (await directory.lookup("0612345678")).status == "several"
        finally:
            for reader in readers:
                await reader.close()
            await directory.close()


# -- customer files -----------------------------------------------------------------------------


async def test_new_customer_from_the_pop_is_found_next_time(directory: CustomerDirectory) -> None:
    assert (await directory.lookup("+212 5 22 30 40 50")).status == "unknown"
    created = await directory.create_customer(
        "  Transports   Benjelloun ", [("+212522304050", "standard"), "0661001122"], account="M-2007"
    )
    assert created.name == "Transports Benjelloun"
    assert created.phones == (Phone("+212522304050", "standard"), Phone("+33661001122", None))
    result = await directory.lookup("00212522304050")
    assert (result.status, result.customer) == ("found", created)
    assert await directory.get_customer(created.id or 0) == created


async def test_update_changes_only_given_fields_and_replaces_phones(directory: CustomerDirectory) -> None:
    ids = await seed(directory)
    marie = ids["Marie Martin"]
    updated = await directory.update_customer(
        marie, notes="Rappeler le soir", phones=[("0623456789", "portable"), "+33 7 81 23 45 67"]
    )
    assert (updated.name, updated.notes, updated.vip) == ("Marie Martin", "Rappeler le soir", False)
    assert updated.phones == (Phone("+33623456789", "portable"), Phone("+33781234567", None))
    # Her old landline is Paul's alone now.
    assert names(await directory.lookup("0145678901")) == ["Paul Martin"]
    cleared = await directory.update_customer(marie, notes=None, vip=True)
    assert (cleared.notes, cleared.vip, cleared.phones) == (None, True, updated.phones)


async def test_bad_customer_data_is_refused_with_the_field(directory: CustomerDirectory) -> None:
    attempts = [
        directory.create_customer("", ["0612345678"]),
        directory.create_customer("X", ["12"]),
        directory.create_customer("X", ["anonymous"]),
        directory.create_customer("X", [], queue_priority=-1),
        directory.create_customer("X" * 201, []),
    ]
    fields = []
    for attempt in attempts:
        with pytest.raises(InvalidCustomer) as caught:
            await attempt
        assert caught.value.status == 400
        fields.append(caught.value.details["field"])
    assert fields == ["name", "phones[0]", "phones[0]", "queue_priority", "name"]
    with pytest.raises(CustomerNotFound) as missing:
        await directory.update_customer(999_999, name="Personne")
    assert (missing.value.status, missing.value.error_id) == (404, "customer-not-found")
    with pytest.raises(CustomerNotFound):
        await directory.get_customer(999_999)


async def test_search_by_name_account_or_number(directory: CustomerDirectory) -> None:
    await seed(directory)
    assert [c.name for c in await directory.search("martin")] == ["Marie Martin", "Paul Martin"]
    assert [c.name for c in await directory.search("M-2001")] == ["Youssef El Amrani"]
    assert [c.name for c in await directory.search("+33 6 12 34 56 78")] == ["Jean Dupont"]
    assert await directory.search("100%_") == []
    assert await directory.search("  ") == []


# -- the agent's choice, history ----------------------------------------------------------------


async def test_choice_for_a_shared_number_is_stored_and_can_change(directory: CustomerDirectory) -> None:
    ids = await seed(directory)
    assert await directory.customer_for_call("pbx1", "1700000000.1") is None
    paul = await directory.choose_for_call("pbx1", "1700000000.1", ids["Paul Martin"], "agent1")
    assert paul.name == "Paul Martin"
    assert await directory.customer_for_call("pbx1", "1700000000.1") == paul
    # The agent who takes the transferred call corrects it.
    await directory.choose_for_call("pbx1", "1700000000.1", ids["Marie Martin"], "agent2")
    chosen = await directory.customer_for_call("pbx1", "1700000000.1")
    assert chosen is not None and chosen.name == "Marie Martin"
    assert await directory.customer_for_call("pbx2", "1700000000.1") is None
    with pytest.raises(CustomerNotFound):
        await directory.choose_for_call("pbx1", "1700000000.2", 999_999, "agent1")


def _call(n: int, caller: str | None, *, direction: str = "inbound") -> Call:
    return Call(
        server="pbx1",
        linkedid=f"1700000000.{n}",
        direction=direction,
        started_at=datetime(2026, 11, 2, 9, tzinfo=UTC) + timedelta(hours=n),
        caller_raw=caller,
        caller_e164=caller,
        outcome="answered",
        hangup_by="caller",
        queue="support",
        agent="agent1",
        transfers=0,
        transferred_to=[],
        closed_by="events",
        ivr_path=[],
        wait_s=12.0,
        talk_s=60.0,
    )


async def test_history_newest_first_without_mixing_a_shared_number(directory: CustomerDirectory) -> None:
    ids = await seed(directory)
    marie, paul = ids["Marie Martin"], ids["Paul Martin"]
    async with session_factory(directory.engine)() as session, session.begin():
        session.add_all(
            [
                _call(1, "+33145678901"),  # shared landline, nobody chose: both see it
                _call(2, "+33145678901"),  # chosen for Paul below: only Paul sees it
                _call(3, "+33623456789"),  # Marie's mobile
                _call(4, None, direction="outbound"),  # click-to-call to Paul, matched from the pop
                _call(5, "+33612345678"),  # someone else
            ]
        )
        opened = datetime(2026, 11, 2, 10, tzinfo=UTC)
        session.add_all(
            Ticket(
                server="pbx1",
                linkedid=f"1700000000.{n}",
                customer_id=paul,
                agent="agent1",
                status="resolved" if n == 1 else "open",
                opened_at=opened + timedelta(hours=n),
            )
            for n in (1, 2)
        )
    await directory.choose_for_call("pbx1", "1700000000.2", paul, "agent1")
    await directory.choose_for_call("pbx1", "1700000000.4", paul, "agent1")

    marie_history = await directory.history(marie)
    paul_history = await directory.history(paul)
    assert [c.linkedid for c in marie_history.calls] == ["1700000000.3", "1700000000.1"]
    assert marie_history.tickets == ()
    assert [c.linkedid for c in paul_history.calls] == ["1700000000.4", "1700000000.2", "1700000000.1"]
    assert [(t.linkedid, t.status) for t in paul_history.tickets] == [
        ("1700000000.2", "open"),
        ("1700000000.1", "resolved"),
    ]
    doc = (await directory.history(paul, limit=1)).to_json()
    assert doc["calls"][0]["started_at"] == "2026-11-02T13:00:00+00:00"
    assert (len(doc["calls"]), len(doc["tickets"])) == (1, 1)
    with pytest.raises(CustomerNotFound):
        await directory.history(999_999)


# -- a database that is slow or gone ------------------------------------------------------------


async def _timed_lookup(directory: CustomerDirectory, raw: str) -> tuple[str, float]:
    started = time.perf_counter()
    result = await directory.lookup(raw)
    return result.status, time.perf_counter() - started


async def test_sqlite_file_gone_degrades_then_recovers(tmp_path: Path) -> None:
    async with fresh_database("sqlite", tmp_path) as url, migrated_engine(url) as engine:
        directory = CustomerDirectory(engine, "FR")
        await seed(directory)
        await engine.dispose()
        (tmp_path / "db").rename(tmp_path / "moved")
        with capture_logs() as logs:
            first = await directory.lookup("0612345678")
            second = await directory.lookup("0612345678")
        assert (first.status, first.to_json()["sources"]) == ("unavailable", {"sql": "error"})
        assert second.status == "unavailable"
        assert [e["log_level"] for e in logs if e["log_level"] == "warning"] == ["warning"]
        await engine.dispose()
        (tmp_path / "moved").rename(tmp_path / "db")
        assert names(await directory.lookup("0612345678")) == ["Jean Dupont"]


async def test_postgresql_port_closed_is_unavailable_at_once() -> None:
    engine = create_engine(f"postgresql://postgres@127.0.0.1:{closed_port()}/test")
    try:
        status, elapsed = await _timed_lookup(CustomerDirectory(engine, "FR"), "0612345678")
    finally:
        await engine.dispose()
    assert status == "unavailable"
    assert elapsed < 0.5


async def test_database_that_never_answers_is_cut_at_the_timeout() -> None:
    """A server that accepts the connection and then says nothing (a hung host, a full pool)."""
    silent: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_engine(f"postgresql://postgres@127.0.0.1:{port}/test")
    try:
        directory = CustomerDirectory(engine, "FR", timeout_s=0.3)
        result = await directory.lookup("0612345678")
        status, elapsed = await _timed_lookup(directory, "0612345678")
    finally:
        await engine.dispose()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
    assert (result.status, result.to_json()["sources"]) == ("unavailable", {"sql": "timeout"})
    assert status == "unavailable"
    assert 0.25 < elapsed < 0.6


async def test_postgresql_locked_table_times_out_then_serves_again(tmp_path: Path) -> None:
    async with fresh_database("postgresql", tmp_path) as url, migrated_engine(url) as engine:
        directory = CustomerDirectory(engine, "FR", timeout_s=0.3)
        await seed(directory)
        holder = await asyncpg.connect(url)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("LOCK TABLE customer_phones IN ACCESS EXCLUSIVE MODE")
            status, elapsed = await _timed_lookup(directory, "0612345678")
            await transaction.rollback()
        finally:
            await holder.close()
        assert status == "unavailable"
        assert elapsed < 0.6
        # The connection cut mid-query was not handed back broken: the next lookups work.
        for _ in range(3):
            assert names(await directory.lookup("0612345678")) == ["Jean Dupont"]


async def test_writes_on_a_dead_database_raise_unavailable() -> None:
    engine = create_engine(f"postgresql://postgres@127.0.0.1:{closed_port()}/test")
    directory = CustomerDirectory(engine, "FR")
    try:
        with pytest.raises(DirectoryUnavailable) as caught:
            await directory.create_customer("Jean Dupont", ["0612345678"])
        with pytest.raises(DirectoryUnavailable):
            await directory.customer_for_call("pbx1", "1.1")
    finally:
        await engine.dispose()
    assert (caught.value.status, caught.value.error_id) == (503, "directory-unavailable")


def test_outage_is_logged_once_then_at_debug_until_it_recovers() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def __getattr__(self, level: str) -> Any:
            return lambda message, **_kw: self.calls.append((level, message))

    recorder = Recorder()
    outage = OutageLog("sql", recorder)
    outage.succeeded()
    for _ in range(3):
        outage.failed("timeout")
    outage.succeeded()
    outage.failed("refused")
    assert [level for level, _ in recorder.calls] == ["warning", "debug", "debug", "info", "warning"]


async def test_lookups_of_one_number_in_the_same_moments_share_one_query(
    directory: CustomerDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An inbound call is looked up twice within milliseconds: by the FastAGI lookup before the
    # SVI and by the screen pop. One database query serves both (and any other within seconds).
    await directory.create_customer("Jeanne Martin", ["06 12 34 56 78"])
    queries: list[str] = []
    real = directory._lookup_e164

    async def counted(number: Any) -> Any:
        queries.append(number.e164)
        return await real(number)

    monkeypatch.setattr(directory, "_lookup_e164", counted)
    agi, pop = await asyncio.gather(directory.lookup("0612345678"), directory.lookup("+33 6 12 34 56 78"))
    assert names(agi) == names(pop) == ["Jeanne Martin"] and queries == ["+33612345678"]
    assert pop.number.raw == "+33 6 12 34 56 78"  # each caller gets its own number back
    # A change to the directory is seen by the next lookup, shared or not.
    await directory.create_customer("Paul Martin", ["06 12 34 56 78"])
    assert sorted(names(await directory.lookup("0612345678"))) == ["Jeanne Martin", "Paul Martin"]
    assert len(queries) == 2
