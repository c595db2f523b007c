"""The HTTP CRM source against a real aiohttp server on 127.0.0.1, beside a real SQLite directory:
hits merged after the SQL customers, misses, a CRM slower than its timeout or answering 500 (the
SQL answer still comes back, in time), the TTL cache, and the answer shapes a CRM may send."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from cti.config import DirectorySettings
from cti.directory.crm import CrmSource, CrmUnavailable, TtlCache, check_template, display_url, parse_answer
from cti.directory.customer import CustomerFile, Phone
from cti.directory.lookup import CustomerDirectory
from cti.directory.numbers import normalize
from test_directory_support import fresh_database, migrated_engine, seed

SOPHIE = {
    "id": "crm-77",
    "name": "Sophie Lefèvre",
    "account": "C-1006",
    "address": "27 quai de la Fosse, 44000 Nantes",
    "vip": True,
    "queue_priority": 3,
    "phones": [{"e164": "+33698765432", "label": "mobile"}],
}


@dataclass
class FakeCrm:
    """Answers by caller number; counts requests so that cache hits show."""

    base: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        phone = request.query.get("phone", "")
        self.hits[phone] += 1
        if phone == "+33698765432":
            return web.json_response([SOPHIE])
        if phone == "+33612345678":
            # Jean is already in the SQL directory (same account): only Dupont SARL is new.
            return web.json_response(
                {"customers": [{"name": "Jean Dupont", "account": "C-1001"}, {"name": "Dupont SARL"}]}
            )
        if phone in ("+33478123456", "+33699999998"):
            await asyncio.wait_for(self.release.wait(), 10)  # far longer than any CRM timeout
            return web.json_response([])
        if phone in ("+212661234567", "+33699999997"):
            return web.Response(status=500, text="Internal Server Error")
        if phone == "+33699999996":
            return web.Response(text="<html>login</html>", content_type="text/html")
        return web.json_response({"error": "not found"}, status=404)


@pytest.fixture
async def crm() -> AsyncIterator[FakeCrm]:
    fake = FakeCrm()
    app = web.Application()
    app.router.add_get("/api/customers", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.base = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()


@pytest.fixture
async def directory(crm: FakeCrm, tmp_path: Path) -> AsyncIterator[CustomerDirectory]:
    async with fresh_database("sqlite", tmp_path) as url, migrated_engine(url) as engine:
        settings = DirectorySettings(
            region="FR",
            crm_url=crm.base + "/api/customers?phone={e164}&key=s3cret",
            crm_timeout_s=0.3,
            crm_cache_ttl_s=60,
        )
        d = CustomerDirectory.from_settings(engine, settings)
        try:
            await seed(d)
            yield d
        finally:
            await d.close()


def summary(doc: dict[str, Any]) -> tuple[Any, ...]:
    return (doc["status"], [(c["name"], c["source"]) for c in doc["customers"]], doc["sources"])


async def test_crm_hit_for_a_caller_unknown_to_sql(directory: CustomerDirectory, crm: FakeCrm) -> None:
    doc = await directory.lookup_json("06 98 76 54 32")
    assert summary(doc) == ("found", [("Sophie Lefèvre", "crm")], {"sql": "ok", "crm": "ok"})
    assert doc["customers"][0] == {
        "id": None,
        "name": "Sophie Lefèvre",
        "account": "C-1006",
        "address": "27 quai de la Fosse, 44000 Nantes",
        "notes": None,
        "vip": True,
        "queue_priority": 3,
        "phones": [{"e164": "+33698765432", "label": "mobile"}],
        "source": "crm",
        "external_id": "crm-77",
    }
    assert crm.hits == {"+33698765432": 1}  # the "+" reached the CRM URL-encoded, intact


async def test_sql_first_and_crm_duplicates_of_sql_accounts_dropped(directory: CustomerDirectory) -> None:
    doc = await directory.lookup_json("0612345678")
    assert summary(doc) == (
        "several",
        [("Jean Dupont", "sql"), ("Dupont SARL", "crm")],
        {"sql": "ok", "crm": "ok"},
    )


async def test_crm_miss_is_unknown(directory: CustomerDirectory, crm: FakeCrm) -> None:
    doc = await directory.lookup_json("0699999999")
    assert summary(doc) == ("unknown", [], {"sql": "ok", "crm": "ok"})


async def test_slow_crm_costs_its_timeout_and_no_more(directory: CustomerDirectory) -> None:
    started = time.perf_counter()
    doc = await directory.lookup_json("04 78 12 34 56")
    elapsed = time.perf_counter() - started
    assert summary(doc) == ("found", [("Boulangerie Riviere", "sql")], {"sql": "ok", "crm": "timeout"})
    assert elapsed < 0.5
    # Nobody in SQL and the CRM could not say: not "unknown" (no new-customer form over a
    # customer the CRM may know).
    doc = await directory.lookup_json("0699999998")
    assert summary(doc) == ("unavailable", [], {"sql": "ok", "crm": "timeout"})


async def test_crm_errors_keep_the_sql_answer_and_log_once(directory: CustomerDirectory) -> None:
    with capture_logs() as logs:
        first = await directory.lookup_json("+212 6 61 23 45 67")
        second = await directory.lookup_json("0699999997")
        third = await directory.lookup_json("0699999996")
    assert summary(first) == ("found", [("Youssef El Amrani", "sql")], {"sql": "ok", "crm": "error"})
    assert summary(second) == ("unavailable", [], {"sql": "ok", "crm": "error"})
    assert summary(third)[2] == {"sql": "ok", "crm": "error"}
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["reason"] == "HTTP 500"
    assert "s3cret" not in repr(logs)  # the API key in the query is never logged


async def test_second_lookup_is_served_from_the_cache(directory: CustomerDirectory, crm: FakeCrm) -> None:
    for _ in range(3):
        await directory.lookup("06 98 76 54 32")
        await directory.lookup("0699999999")  # misses are cached too
    assert crm.hits == {"+33698765432": 1, "+33699999999": 1}
    # Failures are not cached: the next call asks again.
    await directory.lookup("0699999997")
    await directory.lookup("0699999997")
    assert crm.hits["+33699999997"] == 2


async def test_raw_and_national_template_fields(crm: FakeCrm) -> None:
    source = CrmSource(crm.base + "/api/customers?phone={e164}&raw={raw}&nat={national}", timeout_s=0.5)
    try:
        assert source.url_for(normalize("06 98 76 54 32")) == (
            crm.base + "/api/customers?phone=%2B33698765432&raw=06%2098%2076%2054%2032&nat=0698765432"
        )
        found = await source.lookup(normalize("06 98 76 54 32"))
    finally:
        await source.close()
    assert [c.name for c in found] == ["Sophie Lefèvre"]


async def test_crm_source_raises_unavailable_in_bounded_time(crm: FakeCrm) -> None:
    source = CrmSource(crm.base + "/api/customers?phone={e164}", timeout_s=5.0)
    assert source.timeout_s == 0.9  # capped: the pop waits one second at most
    source.timeout_s = 0.2
    try:
        started = time.perf_counter()
        with pytest.raises(CrmUnavailable, match="timeout"):
            await source.lookup(normalize("0478123456"))
        assert time.perf_counter() - started < 0.4
    finally:
        await source.close()


# -- pieces without a server --------------------------------------------------------------------


def test_ttl_cache_expires_and_stays_bounded() -> None:
    now = [0.0]
    cache = TtlCache(ttl_s=10, max_entries=2, clock=lambda: now[0])
    jean = (CustomerFile(None, "Jean", source="crm"),)
    cache.put("+33612345678", jean)
    cache.put("+33698765432", ())
    assert cache.get("+33612345678") == jean  # also makes it the most recent
    cache.put("+33478123456", ())
    assert (len(cache), cache.get("+33698765432")) == (2, None)  # the least recent went
    now[0] = 10.0
    assert cache.get("+33612345678") is None


def test_answer_shapes() -> None:
    number = normalize("+33698765432")
    as_list = parse_answer([SOPHIE, {"account": "no name"}, "junk"], number)
    as_object = parse_answer({"customers": [SOPHIE]}, number)
    single = parse_answer({"name": "Solo", "phones": ["06 98 76 54 32", "nonsense"], "vip": "yes"}, number)
    assert as_list == as_object
    assert [c.name for c in as_list] == ["Sophie Lefèvre"]
    assert single == (CustomerFile(None, "Solo", phones=(Phone("+33698765432"),), source="crm"),)
    assert parse_answer({}, number) == ()
    with pytest.raises(CrmUnavailable):
        parse_answer("nope", number)


def test_templates_are_checked_at_start_up() -> None:
    check_template("https://crm.example/api?tel={e164}")
    for bad in ("https://crm.example/api", "https://crm.example/{phone}", "ftp://crm.example/{e164}"):
        with pytest.raises(ValueError):
            check_template(bad)
    assert (
        display_url("https://user:pw@crm.example:8443/api/c?key=s3cret") == "https://crm.example:8443/api/c"
    )
