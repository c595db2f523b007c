"""Campaign leases (dialer/ownership.py) on the real PostgreSQL: two daemons' `CampaignLeases`
on one database, with their own clocks (`time.monotonic` stand-ins) for the renewal rhythm; the
lease's expiry is PostgreSQL's clock, as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.engine import create_engine
from cti.db.models import ResourceLease
from cti.dialer.ownership import CampaignLeases, campaign_leases, lease_name
from test_stream_lease import pg_url  # noqa: F401 - fixture

TTL_S = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:  # noqa: F811
    eng = create_engine(pg_url)
    try:
        yield eng
    finally:
        await eng.dispose()


async def holders(engine: AsyncEngine) -> dict[str, tuple[str, int]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(ResourceLease.name, ResourceLease.holder, ResourceLease.token))
        ).all()
    return {name: (holder, token) for name, holder, token in rows}


async def test_one_daemon_per_campaign_and_a_takeover_after_the_lease_lapses(engine: AsyncEngine) -> None:
    clock_a, clock_b = Clock(), Clock()
    a = CampaignLeases(engine, "node-a", TTL_S, clock_a)
    b = CampaignLeases(engine, "node-b", TTL_S, clock_b)
    assert await a.claim({1, 2}) == {1, 2}
    assert await b.claim({1, 2, 3}) == {3}  # 1 and 2 are A's
    assert (a.owns(1), a.owns(3), b.owns(1), b.owns(3)) == (True, False, False, True)
    assert await holders(engine) == {
        lease_name(1): ("node-a", 1),
        lease_name(2): ("node-a", 1),
        lease_name(3): ("node-b", 1),
    }
    # B asks again at once: not before a third of the period (no query), then still refused.
    assert await b.claim({1, 2, 3}) == set()
    clock_b.now += TTL_S / 3
    assert await b.claim({1, 2, 3}) == set()
    # A stops renewing (frozen, or its database link gone): past two thirds of the period it no
    # longer trusts its lease; once PostgreSQL's clock passes the expiry, B takes both, token 2.
    clock_a.now += TTL_S
    assert not a.owns(1)
    await asyncio.sleep(TTL_S + 0.2)
    clock_b.now += TTL_S / 3
    assert await b.claim({1, 2, 3}) == {1, 2}
    assert (await holders(engine))[lease_name(1)] == ("node-b", 2)
    # A wakes up: its renewal finds the token moved on; it owns nothing and takes nothing.
    assert await a.claim({1, 2}) == set()
    assert not a.owns(1) and not a.owns(2)


async def test_a_clean_stop_hands_over_at_once_and_a_campaign_not_running_is_let_go(
    engine: AsyncEngine,
) -> None:
    clock_b = Clock()
    a = CampaignLeases(engine, "node-a", 30.0, Clock())
    b = CampaignLeases(engine, "node-b", 30.0, clock_b)
    assert await a.claim({1, 2}) == {1, 2}
    assert await a.claim({1}) == set()  # 2 stopped running: released
    assert await b.claim({2}) == {2}
    await a.release_all()
    clock_b.now += 10.0
    assert await b.claim({1, 2}) == {1}  # no 30 s wait
    assert await holders(engine) == {lease_name(1): ("node-b", 2), lease_name(2): ("node-b", 2)}


async def test_the_floor_lock_orders_two_daemons_decisions(engine: AsyncEngine) -> None:
    a = CampaignLeases(engine, "node-a", 5.0)
    b = CampaignLeases(engine, "node-b", 5.0)
    order: list[str] = []

    async def decide(leases: CampaignLeases, name: str, queue: str) -> None:
        async with leases.floor_lock("pbx1", queue):
            order.append(f"{name} in")
            await asyncio.sleep(0.3)
            order.append(f"{name} out")

    first = asyncio.create_task(decide(a, "a", "outbound"))
    await asyncio.sleep(0.1)
    await asyncio.gather(decide(b, "b", "outbound"), decide(b, "c", "sales"))
    await first
    # b waited for a (same floor); c (another queue) did not.
    assert order.index("b in") > order.index("a out")
    assert order.index("c in") < order.index("a out")


async def test_no_leases_on_sqlite() -> None:
    eng = create_engine("sqlite://")
    try:
        assert campaign_leases(eng) is None
    finally:
        await eng.dispose()
