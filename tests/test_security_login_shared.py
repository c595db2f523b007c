"""The login limits hold for all the nodes of one database together (docs/security.md, "Logins"):
two real `cti serve` processes on one PostgreSQL database, a burst of concurrent wrong-password
logins for one user spread over both. With the limiter in each process's memory, each node let
five through (ten password checks for a limit of five); now five are checked in all and every
other attempt is refused before its check, on either node, the right password too.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text

from cti.db.engine import create_engine
from cti.db.migrate import upgrade
from cti.sim.pbx import SimulatedPbx
from cti.web.auth import UserStore
from cti.web.login_limits import SharedLoginLimiter
from test_db import PG_HOST, PG_PORT
from test_gap_kill import free_port, healthy, serve
from test_readiness import pg_database

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.timeout(180)]
PASSWORD = "correct horse battery"
LIMIT = 5
ATTEMPTS = 30


def node_config(tmp_path: Path, node: str, ami_port: int, web_port: int, db_url: str) -> Path:
    config = tmp_path / f"cti-{node}.toml"
    config.write_text(
        f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "cti"\n'
        f"keepalive_s = 1.0\nreconnect_cap_s = 0.2\n"
        f'[database]\nurl = "{db_url}"\n'
        f'[ha]\nenabled = true\nnode = "{node}"\nlease_s = 3\n'
        f"[dialer]\nenabled = false\n"
        f'[log]\nformat = "json"\nlevel = "info"\n'
        f'[web]\nport = {web_port}\nsecret = "one-secret-for-both-nodes-0123456789"\n'
        f"login_attempts_per_minute = {LIMIT}\nlogin_queue = {ATTEMPTS}\n",
        encoding="utf-8",
    )
    return config


async def login(session: aiohttp.ClientSession, port: int, password: str) -> int:
    async with session.post(
        f"http://127.0.0.1:{port}/api/login", json={"username": "alice", "password": password}
    ) as response:
        await response.read()
        return response.status


async def test_wrong_logins_spread_over_two_nodes_are_refused_after_the_limit(tmp_path: Path) -> None:
    async with pg_database("cti_login") as (name, user), SimulatedPbx() as pbx:
        url = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        try:
            await UserStore(engine).add("alice", PASSWORD, "agent", "Alice")
        finally:
            await engine.dispose()
        ports = [free_port(), free_port()]
        processes = []
        try:
            for node, port in zip("ab", ports, strict=True):
                process = await serve(
                    node_config(tmp_path, node, pbx.port, port, url), tmp_path / f"{node}.log"
                )
                processes.append(process)
                await healthy(port, process)
            async with aiohttp.ClientSession() as session:
                statuses = await asyncio.gather(
                    *(login(session, ports[n % 2], "wrong password") for n in range(ATTEMPTS))
                )
                per_node = [Counter(statuses[n] for n in range(node, ATTEMPTS, 2)) for node in (0, 1)]
                # Five password checks in all (401), whichever node they reached; the rest refused.
                assert Counter(statuses) == {401: LIMIT, 429: ATTEMPTS - LIMIT}, per_node
                # Limited on both nodes now, even with the right password.
                for port in ports:
                    assert await login(session, port, PASSWORD) == 429
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    for node in "ab":
        text = (tmp_path / f"{node}.log").read_text(encoding="utf-8", errors="replace")
        assert "Traceback" not in text
        assert "shared login limits unavailable" not in text
        assert PASSWORD not in text and "wrong password" not in text


async def test_the_shared_limiter_expires_clears_and_writes_nothing_when_refusing() -> None:
    async with pg_database("cti_login") as (name, user):
        url = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        try:

            async def rows() -> int:
                async with engine.connect() as conn:
                    return int((await conn.execute(text("SELECT count(*) FROM login_attempts"))).scalar_one())

            limiter = SharedLoginLimiter(engine, per_minute=2, per_address=3, window_s=1.0)
            assert await limiter.begin("alice", "10.0.0.1") is not None
            assert await limiter.begin("alice", "10.0.0.1") is not None
            assert await limiter.begin("alice", "10.0.0.1") is None  # the user's limit
            assert await rows() == 4  # two attempts, a row per key each; the refusal wrote nothing
            stamp = await limiter.begin("bob", "10.0.0.1")
            assert stamp is not None
            assert await limiter.begin("carol", "10.0.0.1") is None  # the address's limit
            await limiter.succeeded("bob", "10.0.0.1", stamp)  # bob's row and his address attempt
            assert await rows() == 4
            assert await limiter.begin("carol", "10.0.0.1") is not None  # the address got it back
            # A window later every key may try again, and what expired is gone.
            await asyncio.sleep(1.1)
            assert await limiter.begin("alice", "10.0.0.2") is not None
            assert await rows() == 2
        finally:
            await engine.dispose()
