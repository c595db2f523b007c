"""One owner per AMI stream in `cti serve` (issue 20, item 1; docs/scale-out.md): two daemon
processes with `[ha] enabled` share one PostgreSQL database and one simulated PBX (which writes
its CEL and queue_log rows as Asterisk does, `records_url`).

- The owner is killed (`kill -9`) under traffic: the standby owns the stream within two lease
  periods (read from `stream_leases`, on PostgreSQL's clock); the killed one comes back as a
  standby and takes the stream back when the second owner stops cleanly (which releases the
  lease); against the simulator's ground truth every call is stored once, each as it went.
- The owner is frozen (SIGSTOP) past its lease, then thawed: the standby took over, and the
  thawed daemon writes nothing (its late writes are refused by the fencing token), stands by,
  and keeps running.

Who wrote what: each daemon logs in to PostgreSQL as a role of its own, and a trigger on the
tables the daemons write for a server (calls, agent-state spans, recovery marks) notes the role
and the server's lease token each row was written under.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cti.db.migrate import upgrade
from cti.sim.pbx import SimulatedPbx
from cti.sim.truth import CallTruth
from test_db import PG_HOST, PG_PORT, _pg_admin
from test_gap_kill import _health, expected, free_port, healthy, serve, traffic_config
from test_gap_rebuild import records_url  # noqa: F401 - the fixture

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.timeout(300)]
LEASE_S = 3.0
TRAFFIC_S = 600.0  # simulated (speed 10): 60 s of wall clock

AUDIT = """
CREATE TABLE write_audit (
    id bigserial PRIMARY KEY, role text, tbl text, server text, token bigint,
    at timestamptz DEFAULT clock_timestamp()
);
CREATE FUNCTION audit_write() RETURNS trigger AS $$
BEGIN
    INSERT INTO write_audit (role, tbl, server, token)
    VALUES (current_user, TG_TABLE_NAME, NEW.server,
            (SELECT token FROM stream_leases WHERE server = NEW.server));
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_calls BEFORE INSERT OR UPDATE ON calls
    FOR EACH ROW EXECUTE FUNCTION audit_write();
CREATE TRIGGER audit_spans BEFORE INSERT OR UPDATE ON agent_state_spans
    FOR EACH ROW EXECUTE FUNCTION audit_write();
CREATE TRIGGER audit_marks BEFORE INSERT OR UPDATE ON recovery_marks
    FOR EACH ROW EXECUTE FUNCTION audit_write();
CREATE TABLE lease_changes (
    server text, holder text, token bigint, at timestamptz DEFAULT clock_timestamp()
);
CREATE FUNCTION note_lease() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.token IS DISTINCT FROM OLD.token THEN
        INSERT INTO lease_changes (server, holder, token) VALUES (NEW.server, NEW.holder, NEW.token);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER note_leases AFTER INSERT OR UPDATE ON stream_leases
    FOR EACH ROW EXECUTE FUNCTION note_lease();
"""


@dataclass
class Cluster:
    """cti's database, with a login role per daemon."""

    name: str
    roles: dict[str, str]  # node -> role

    def url(self, node: str | None = None) -> str:
        user = self.roles[node] if node else "postgres"
        return f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{self.name}"

    async def rows(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.url())
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    admin, user = await _pg_admin()
    tag = uuid.uuid4().hex[:10]
    name = f"cti_ha_{tag}"
    roles = {node: f"cti_ha_{tag}_{node}" for node in ("a", "b", "c")}
    await admin.execute(f'CREATE DATABASE "{name}"')
    made = Cluster(name, roles)
    try:
        url = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
        await asyncio.to_thread(upgrade, url)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(AUDIT)
            for role in roles.values():
                await conn.execute(f'CREATE ROLE "{role}" LOGIN')
                await conn.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
                await conn.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
        finally:
            await conn.close()
        yield made
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for role in roles.values():
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


def config_file(tmp_path: Path, node: str, ami_port: int, web_port: int, db_url: str, records: str) -> Path:
    config = tmp_path / f"cti-{node}.toml"
    config.write_text(
        f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "cti"\n'
        f'keepalive_s = 1.0\nreconnect_cap_s = 0.2\nrecords_url = "{records}"\n'
        f'[database]\nurl = "{db_url}"\nflush_interval_s = 0.05\n'
        f'[ha]\nenabled = true\nnode = "{node}"\nlease_s = {LEASE_S}\n'
        f"[dialer]\nenabled = false\n"
        f'[log]\nformat = "json"\nlevel = "info"\n[web]\nport = {web_port}\n',
        encoding="utf-8",
    )
    return config


@dataclass
class Node:
    name: str
    config: Path
    log: Path
    web: int
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await serve(self.config, self.log)

    @property
    def alive(self) -> asyncio.subprocess.Process:
        assert self.process is not None and self.process.returncode is None, f"{self.name} exited"
        return self.process

    def health(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.web}/healthz", timeout=2) as response:
            return dict(json.load(response))

    def logged(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            await self.process.wait()


async def lease(cluster: Cluster, server: str = "pbx1") -> tuple[str | None, int | None, float]:
    """The lease row's holder and token, and PostgreSQL's clock (epoch seconds)."""
    rows = await cluster.rows(
        "SELECT l.holder, l.token, extract(epoch FROM clock_timestamp()) AS now"
        " FROM (SELECT 1) one LEFT JOIN stream_leases l ON l.server = $1",
        server,
    )
    row = rows[0]
    return row["holder"], row["token"], float(row["now"])


async def until_owned(
    cluster: Cluster, holder: str, within_s: float, server: str = "pbx1"
) -> tuple[int, float]:
    """Poll stream_leases until `holder` holds it; its token and PostgreSQL's clock then."""
    deadline = time.monotonic() + within_s
    while True:
        who, token, now = await lease(cluster, server)
        if who == holder and token is not None:
            return token, now
        assert time.monotonic() < deadline, f"{holder} never took the stream (holder {who}, token {token})"
        await asyncio.sleep(0.1)


async def until(check: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.2)


async def mark_moved(cluster: Cluster, within_s: float = 60.0) -> None:
    """The owner stored how far it saw the PBX past its first gap (recovery_marks)."""
    first = await cluster.rows("SELECT seen_until FROM recovery_marks")

    async def moved() -> bool:
        now = await cluster.rows("SELECT seen_until FROM recovery_marks")
        return bool(now) and now != first

    await until(moved, within_s, "the recovery mark never moved")


STORED = """
SELECT c.linkedid, c.outcome, c.agent, c.direction, c.hangup_by, c.closed_by,
       (SELECT queue FROM call_segments s WHERE s.call_id = c.id ORDER BY seq LIMIT 1) AS queue
  FROM calls c WHERE c.server = $1
"""


async def stored(cluster: Cluster, server: str = "pbx1") -> list[dict[str, Any]]:
    return [dict(r) for r in await cluster.rows(STORED, server)]


async def finish(pbx: SimulatedPbx, cluster: Cluster, owner: Node) -> dict[str, CallTruth]:
    """The traffic's end, every call stored, a clean stop of the owner; the ground truth."""
    await asyncio.wait_for(pbx.traffic_finished(), 120)
    await pbx.idle(timeout_s=120)
    truth = {c.linkedid: c for c in pbx.truth.finished()}

    async def all_stored() -> bool:
        return len(await stored(cluster)) >= len(truth)

    with contextlib.suppress(AssertionError):  # what is missing is named by check_calls()
        await until(all_stored, 60, "every call stored")
    await asyncio.sleep(1.0)  # anything stored twice would show now
    process = owner.alive
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 30)
    return truth


async def check_calls(
    truth: dict[str, CallTruth], cluster: Cluster, server: str = "pbx1"
) -> list[dict[str, Any]]:
    calls = await stored(cluster, server)
    by_id = {c["linkedid"]: c for c in calls}
    # None missing, none twice, nothing that never was.
    assert len(calls) == len(by_id)
    assert set(by_id) == set(truth), sorted(set(by_id) ^ set(truth))[:10]
    mismatches = [
        (lid, by_id[lid]["closed_by"], expected(call), {key: by_id[lid][key] for key in expected(call)})
        for lid, call in truth.items()
        if expected(call) != {key: by_id[lid][key] for key in expected(call)}
    ]
    assert not mismatches, mismatches[:5]
    assert set(Counter(c["closed_by"] for c in calls)) <= {"events", "cel"}
    return calls


async def audit(cluster: Cluster) -> list[dict[str, Any]]:
    return [dict(r) for r in await cluster.rows("SELECT role, tbl, token, at FROM write_audit ORDER BY id")]


def no_traceback(node: Node) -> None:
    text = node.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text, node.name


async def start_pair(tmp_path: Path, cluster: Cluster, pbx: SimulatedPbx, records: str) -> tuple[Node, Node]:
    nodes = []
    for name in ("a", "b"):
        web = free_port()
        config = config_file(tmp_path, name, pbx.port, web, cluster.url(name), records)
        nodes.append(Node(name, config, tmp_path / f"cti-{name}.log", web))
    a, b = nodes
    await a.start()
    await healthy(a.web, a.alive)
    await until_owned(cluster, "a", 30)
    await b.start()
    await healthy(b.web, b.alive)
    assert await asyncio.to_thread(lambda: b.health()["links"][0]["role"]) == "standby"
    assert (await lease(cluster))[:2] == ("a", 1)  # the standby waits while the owner lives
    return a, b


async def test_kill_the_owner_under_traffic_the_standby_takes_over(
    tmp_path: Path,
    cluster: Cluster,
    records_url: str,  # noqa: F811
) -> None:
    async with SimulatedPbx(traffic_config(), records_url=records_url) as pbx:
        a, b = await start_pair(tmp_path, cluster, pbx, records_url)
        try:
            pbx.start_traffic(TRAFFIC_S)
            await mark_moved(cluster)
            await asyncio.sleep(3.0)
            _, _, killed_at = await lease(cluster)
            a.alive.kill()
            await a.alive.wait()
            token, owned_at = await until_owned(cluster, "b", 20 * LEASE_S)
            assert token == 2
            # Within two lease periods of the kill, on PostgreSQL's clock.
            assert owned_at - killed_at <= 2 * LEASE_S, owned_at - killed_at
            await until(lambda: asyncio.to_thread(lambda: _health(b.web) == "ok"), 60, "b healthy")
            assert await asyncio.to_thread(lambda: b.health()["links"][0]["role"]) == "owner"

            # a comes back as a standby; b stops cleanly: it stores what it saw under its token,
            # then releases the lease (a need not wait for it to lapse).
            await a.start()
            await healthy(a.web, a.alive)
            assert (await lease(cluster))[:2] == ("b", 2)
            b.alive.send_signal(signal.SIGTERM)
            await asyncio.wait_for(b.alive.wait(), 30)
            released = await cluster.rows(
                "SELECT holder, expires_at = '-infinity' AS freed FROM stream_leases"
            )
            assert released[0]["holder"] == "a" or released[0]["freed"], released
            token, _ = await until_owned(cluster, "a", 20 * LEASE_S)
            assert token == 3
            await until(lambda: asyncio.to_thread(lambda: _health(a.web) == "ok"), 60, "a healthy")
            truth = await finish(pbx, cluster, a)
        finally:
            await a.stop()
            await b.stop()
    calls = await check_calls(truth, cluster)
    # The kill hid calls from both daemons: the new owner recorded them from Asterisk's records.
    assert any(c["closed_by"] == "cel" for c in calls)
    writes = await audit(cluster)
    role_a, role_b = cluster.roles["a"], cluster.roles["b"]
    assert {(w["role"], w["token"]) for w in writes} == {(role_a, 1), (role_b, 2), (role_a, 3)}
    no_traceback(a)
    no_traceback(b)
    assert any(line.get("event") == "gap recovered from Asterisk's CEL and queue_log" for line in b.logged())


async def test_a_frozen_owner_writes_nothing_once_thawed_and_stands_by(
    tmp_path: Path,
    cluster: Cluster,
    records_url: str,  # noqa: F811
) -> None:
    async with SimulatedPbx(traffic_config(), records_url=records_url) as pbx:
        a, b = await start_pair(tmp_path, cluster, pbx, records_url)
        try:
            pbx.start_traffic(TRAFFIC_S)
            await mark_moved(cluster)
            await asyncio.sleep(2.0)
            a.alive.send_signal(signal.SIGSTOP)
            token, _ = await until_owned(cluster, "b", 20 * LEASE_S)
            assert token == 2
            await asyncio.sleep(2 * LEASE_S)  # the calls go on, seen by b only
            a.alive.send_signal(signal.SIGCONT)

            def a_stands_by() -> bool:
                with contextlib.suppress(OSError):
                    return bool(a.health()["links"][0]["role"] == "standby")
                return False

            await until(lambda: asyncio.to_thread(a_stands_by), 60, "a stands by")
            await asyncio.sleep(3 * LEASE_S)  # a's writer and span writer have had their turns
            assert (await lease(cluster))[:2] == ("b", 2)
            assert await asyncio.to_thread(lambda: a.health()["status"]) == "ok"
            a.alive  # noqa: B018 - thawed, still running
            truth = await finish(pbx, cluster, b)
        finally:
            await a.stop()
            await b.stop()
    writes = await audit(cluster)
    role_a, role_b = cluster.roles["a"], cluster.roles["b"]
    # Nothing written by the thawed owner under the new token; everything of b under it. (a
    # takes the stream back, token 3, when b stops at the end.)
    assert [w for w in writes if w["role"] == role_a and w["token"] not in (1, 3)] == []
    assert any(w["role"] == role_a and w["token"] == 1 for w in writes)
    assert {w["token"] for w in writes if w["role"] == role_b} == {2}
    # (What Asterisk sent meanwhile is not read on waking, AmiLink.read_until: here the simulator,
    # as Asterisk does, dropped the connection after 5 s of a full socket, so nothing was left.)
    assert "stream ownership lost: standing by" in [line.get("event") for line in a.logged()]
    no_traceback(a)
    no_traceback(b)
    await check_calls(truth, cluster)
