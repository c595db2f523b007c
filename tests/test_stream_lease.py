"""One owner per AMI stream (issue 20, item 1, its first piece): two daemon processes share one
server's lease in the real PostgreSQL (127.0.0.1:5432), each storing calls through the real
`CallStore` fenced by its token (tests/lease_node.py).

The owner writes, the standby waits; the owner is frozen (SIGSTOP) past its lease; the standby
takes over with the next token and writes; the owner is thawed (SIGCONT): its next write is
refused by the token, nothing of it is stored, and it stays a standby. Read back from the
database: every call of the first owner was stored under token 1 and before any of the second's
(ids), every call of the second under token 2, and no refused call is there.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cti.db.engine import create_engine
from cti.db.leases import LeaseLost, StreamLease
from cti.db.migrate import upgrade
from cti.db.models import Call
from test_daemon import until
from test_db import PG_HOST, PG_PORT, _pg_admin

# Two processes, a freeze past the lease and several waits of up to 20 s: more than the default
# 60 s on a loaded 2-core machine (seen at a load average of 9-12).
pytestmark = pytest.mark.timeout(180)
NODE = Path(__file__).with_name("lease_node.py")
TTL_S = 2.0  # long enough that a loaded CI machine does not lose a live owner's lease


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A migrated PostgreSQL database of its own."""
    admin, user = await _pg_admin()
    name = f"cti_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


class Node:
    """One lease_node.py process and the steps it reported."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.steps: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            try:
                self.steps.append(json.loads(line))
            except ValueError:
                continue  # a log line

    def said(self, step: str) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["step"] == step]

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)


@asynccontextmanager
async def node(url: str, name: str) -> AsyncIterator[Node]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(NODE), url, "pbx1", name, str(TTL_S),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    running = Node(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
        await process.wait()
        await running.reader


async def stored(url: str) -> list[tuple[int, str, str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(Call.id, Call.linkedid, Call.caller_name).order_by(Call.id))
            return [(r.id, r.linkedid, r.caller_name) for r in rows]
    finally:
        await engine.dispose()


async def test_a_frozen_owner_is_fenced_off_after_the_standby_takes_over(pg_url: str) -> None:
    async with node(pg_url, "a") as a:
        await until(lambda: len(a.said("wrote")) >= 2, 20)
        async with node(pg_url, "b") as b:
            await until(lambda: b.said("started"), 20)
            await until(lambda: len(a.said("wrote")) >= 6, 20)
            assert b.said("acquired") == []  # the owner is alive: the standby waits

            a.signal(signal.SIGSTOP)
            await until(lambda: b.said("acquired"), 10 * TTL_S)
            assert b.said("acquired") == [{"step": "acquired", "token": 2}]
            await until(lambda: len(b.said("wrote")) >= 2, 20)

            a.signal(signal.SIGCONT)
            await until(lambda: a.said("refused") or a.said("lost"), 20)
            # Its late write is refused by the token (or, had it been frozen inside a write, its
            # session was ended by PostgreSQL and the write rolled back: "failed").
            late = a.said("refused") or a.said("failed")
            # Frozen between a write and its renewal, it finds the lease lost before it writes
            # again (that nothing of it came in late is read back below).
            assert late or a.said("lost"), a.steps
            assert all(s.get("current", 2) == 2 for s in late), a.steps
            await until(lambda: len(b.said("wrote")) >= 4, 20)
            assert b.said("refused") == [] and b.said("lost") == []
            assert a.said("acquired") == [{"step": "acquired", "token": 1}]  # a standby now
        await until(lambda: a.said("acquired")[1:], 10 * TTL_S)  # b released at its stop: a again

    a_wrote = {f"a-{s['n']}" for s in a.said("wrote") if s["token"] == 1}
    refused = {f"a-{s['n']}" for s in a.said("refused")}
    rows = await stored(pg_url)
    first = [(i, name) for i, linkedid, name in rows if linkedid in a_wrote]
    second = [(i, name) for i, linkedid, name in rows if linkedid.startswith("b-")]
    assert {name for _, name in first} == {"token 1"}
    assert {name for _, name in second} == {"token 2"}
    assert max(i for i, _ in first) < min(i for i, _ in second)
    assert not refused & {linkedid for _, linkedid, _ in rows}
    # Every call either node said it stored is there, and nothing else of theirs.
    b_wrote = {f"b-{s['n']}" for s in b.said("wrote")}
    a_later = {f"a-{s['n']}" for s in a.said("wrote") if s["token"] == 3}
    assert {linkedid for _, linkedid, _ in rows} == a_wrote | b_wrote | a_later


async def test_a_lease_is_refused_to_a_second_holder_and_a_write_without_it(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        first, second = (StreamLease(engine, "pbx1", holder, 30.0) for holder in ("a", "b"))
        assert await first.acquire() and not await second.acquire()
        async with first.fenced() as conn:
            assert conn is not None
        with pytest.raises(LeaseLost):
            async with second.fenced():
                pass
        await first.release()  # a clean stop: the standby takes over at once, with a new token
        assert await second.acquire() and second.token == 2
        assert not await first.renew() and not first.owned
    finally:
        await engine.dispose()


async def test_leases_need_postgresql(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
    try:
        with pytest.raises(ValueError, match="PostgreSQL"):
            StreamLease(engine, "pbx1", "a", 3.0)
    finally:
        await engine.dispose()
