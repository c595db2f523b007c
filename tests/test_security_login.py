"""Logins under attack, through real HTTP on 127.0.0.1: the rate limit holds for concurrent
attempts (per user and per address), password checks never stall the event loop, and the
limiter's memory stays bounded whatever usernames it is sent.

`site` (the web app alone on a SQLite file, with the settings a test asks for) is shared with
the other test_security_*.py files.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.config import WebSettings
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.screenpop.router import PopRouter
from cti.web.auth import LoginLimiter, TokenSigner, UserStore, hash_password, verify_password
from cti.web.hub import Hub
from cti.web.server import WebContext, build_app, runner_options

# argon2 at its production cost: the bursts below depend on checks that take real time.
pytestmark = pytest.mark.real_password_cost

PASSWORD = "correct horse battery"


class Clock:
    """The limiter's clock: real time plus `offset`, or `frozen` plus `offset` once frozen (a burst
    that outlasts the minute on a loaded machine must not see its windows expire mid-way)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen: float | None = None

    def __call__(self) -> float:
        return (time.time() if self.frozen is None else self.frozen) + self.offset


@dataclass
class Site:
    server: TestServer
    ctx: WebContext
    users: UserStore
    clock: Clock

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def login(
        self, session: aiohttp.ClientSession, user: str, password: str = PASSWORD, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        body = {"username": user, "password": password}
        async with session.post(self.url("/api/login"), json=body, **kwargs) as r:
            return r.status, await r.json()

    async def token(self, session: aiohttp.ClientSession, user: str) -> str:
        status, body = await self.login(session, user)
        assert status == 200, body
        return str(body["token"])


SiteFactory = Callable[..., Any]


@pytest.fixture(name="make_site")
async def make_site_fixture(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    """make_site(per_minute=5, **web_settings) -> Site; users alice, bob (agents), sam (supervisor)."""
    opened: list[tuple[TestServer, Hub]] = []
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
    await upgrade_async(engine)
    users = UserStore(engine)
    await users.add("alice", PASSWORD, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
    await users.add("bob", PASSWORD, "agent", "Bob", interfaces=["Local/agent2@agents/n"])
    await users.add("sam", PASSWORD, "supervisor", "Sam")

    async def make(per_minute: int = 5, ttl_s: float = 3600, **web: Any) -> Site:
        settings = replace(WebSettings(), **web)
        clock = Clock()
        limiter = LoginLimiter(per_minute, clock, per_address=settings.login_attempts_per_address_per_minute)
        hub = Hub(client_queue=64)
        ctx = WebContext(
            users,
            TokenSigner(b"test-secret", ttl_s),
            limiter,
            hub,
            PopRouter(users.user_for_interface),
            time.time,
            settings=settings,
        )
        server = TestServer(build_app(ctx), host="127.0.0.1", **runner_options(settings))
        await server.start_server()
        opened.append((server, hub))
        return Site(server, ctx, users, clock)

    try:
        yield make
    finally:
        for server, hub in opened:
            await hub.close()
            await server.close()
        await engine.dispose()


async def test_150_simultaneous_wrong_logins_for_one_user_are_all_refused_after_the_limit(
    make_site: SiteFactory,
) -> None:
    site = await make_site(per_minute=5)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        replies = await asyncio.gather(*(site.login(s, "alice", f"guess-{n}") for n in range(150)))
        statuses = Counter(status for status, _ in replies)
        # Five attempts are let through (and fail); every other one is refused before any
        # password is checked, even though all 150 arrived before the first check ended.
        assert statuses == {401: 5, 429: 145}, statuses
        assert {body["error_id"] for status, body in replies if status == 429} == {"login-rate-limited"}
        # The right password is refused too while the user is limited...
        status, body = await site.login(s, "alice")
        assert (status, body["error_id"]) == (429, "login-rate-limited")
        # ...and works once the minute has passed.
        site.clock.offset = 61
        status, body = await site.login(s, "alice")
        assert status == 200 and body["user"]["username"] == "alice"


async def test_the_right_password_in_a_concurrent_burst_does_not_get_past_the_limit(
    make_site: SiteFactory,
) -> None:
    site = await make_site(per_minute=5)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        guesses = [f"guess-{n}" for n in range(149)] + [PASSWORD]  # the password comes last
        replies = await asyncio.gather(*(site.login(s, "alice", g) for g in guesses))
    assert Counter(status for status, _ in replies) == {401: 5, 429: 145}


async def test_simultaneous_logins_from_one_address_are_limited_per_address(make_site: SiteFactory) -> None:
    site = await make_site(per_minute=5, login_attempts_per_address_per_minute=20)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        # A spray: one wrong password for each of 150 names, all at once.
        replies = await asyncio.gather(*(site.login(s, f"user{n}", "Winter2026!") for n in range(150)))
        statuses = Counter(status for status, _ in replies)
        assert statuses[401] == 20 and statuses[401] + statuses[429] + statuses[503] == 150, statuses
        assert 200 not in statuses
    # A successful login gives its attempt back: a floor behind one address is not locked out
    # by its own colleagues logging in.
    floor = await make_site(per_minute=5, login_attempts_per_address_per_minute=3)
    async with aiohttp.ClientSession() as s:
        for user in ("alice", "bob", "sam") * 2:
            assert (await floor.login(s, user))[0] == 200


async def test_a_login_burst_does_not_stall_the_event_loop(make_site: SiteFactory) -> None:
    site = await make_site(per_minute=100, login_attempts_per_address_per_minute=1000)
    stored = hash_password("x")
    began = time.perf_counter()
    verify_password(stored, "y")
    one_check_s = time.perf_counter() - began  # a quarter of a second or so: argon2 on purpose
    delays: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        burst = asyncio.gather(*(site.login(s, f"user{n}", "wrong") for n in range(12)))
        burst_task = asyncio.ensure_future(burst)
        await asyncio.sleep(0.05)
        while not burst_task.done():
            began = time.perf_counter()
            async with s.get(site.url("/healthz")) as r:
                assert r.status == 200
            delays.append(time.perf_counter() - began)
            await asyncio.sleep(0.01)
        replies = await burst_task
    assert Counter(status for status, _ in replies) == {401: 12}
    # Twelve checks take seconds of CPU; on the loop each would hold /healthz for one whole check.
    assert len(delays) > 10 and max(delays) < one_check_s / 2, (max(delays), one_check_s)


@pytest.mark.timeout(300)  # 30,000 real HTTP requests; a loaded 2-core runner needs more than 60 s
async def test_30000_distinct_usernames_leave_the_limiter_bounded_and_it_forgets(
    make_site: SiteFactory,
) -> None:
    site = await make_site(per_minute=5, login_attempts_per_address_per_minute=50)
    site.clock.frozen = time.time()
    sem = asyncio.Semaphore(64)
    statuses: Counter[int] = Counter()

    async def attempt(s: aiohttp.ClientSession, n: int) -> None:
        async with sem, s.post(site.url("/api/login"), json={"username": f"u{n}", "password": "x"}) as r:
            statuses[r.status] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        await asyncio.gather(*(attempt(s, n) for n in range(30_000)))
        # At most 50 reach a password check (fewer when the check queue is full: 503 at once).
        assert statuses[401] <= 50 and statuses[401] + statuses[429] + statuses[503] == 30_000, statuses
        # Refused attempts create nothing: one window per name that was checked, and the address.
        assert len(site.ctx.limiter) <= 51
        site.clock.offset = 61  # a minute later every window has expired
        assert (await site.login(s, "alice"))[0] == 200
        assert len(site.ctx.limiter) == 0


def test_the_limiter_never_holds_more_than_its_bound() -> None:
    now = [0.0]
    limiter = LoginLimiter(5, lambda: now[0], per_address=50, max_keys=10_000)
    for n in range(30_000):  # as many names from as many addresses (a botnet behind a proxy)
        assert limiter.begin(f"user{n}", f"10.0.{n // 256}.{n % 256}") is not None
        assert len(limiter) <= 10_000
        now[0] += 0.001
    now[0] += 61
    assert not limiter.blocked("someone", "10.9.9.9") and len(limiter) == 0
