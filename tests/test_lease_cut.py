"""An owner cut from PostgreSQL lets its AMI stream go before its lease expires (issue 20; docs/
scale-out.md, "Stream ownership"): two `cti serve` processes with `[ha]`, node a reaching
PostgreSQL only through a relay the test cuts as a dropped path does (tests/pg_relay.py: no
FIN, no RST, reads hang), node b directly. a owns the simulated PBX's stream; the relay is cut;
b takes the stream over once a's lease lapses.

What is checked is an order, not a duration: a's lease, as a last renewed it, expires at a time
PostgreSQL wrote in the row (a trigger keeps it when b's takeover overwrites it); a must have
stood down (its link dropped, then `stream ownership lost: standing by` logged, stamped on its
own clock: same machine, same clock) before that time. Before the fix a renewal stuck on the
dead path held a past its lease: it let go about a second after b could take over.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cti.sim.pbx import SimulatedPbx
from pg_relay import PgRelay
from test_db import PG_HOST, PG_PORT
from test_gap_kill import free_port, healthy, traffic_config
from test_ha_takeover import Cluster, Node, cluster, lease, until_owned  # noqa: F401 - the fixture

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.timeout(240)]
LEASE_S = 3.0
STANDING_DOWN = "stream ownership lost: standing by"

HANDOVERS = """
CREATE TABLE lease_handovers (
    server text, old_holder text, old_token bigint, old_expires_at timestamptz,
    new_holder text, new_token bigint, at timestamptz DEFAULT clock_timestamp()
);
CREATE FUNCTION note_handover() RETURNS trigger AS $$
BEGIN
    IF NEW.token IS DISTINCT FROM OLD.token THEN
        INSERT INTO lease_handovers (server, old_holder, old_token, old_expires_at, new_holder, new_token)
        VALUES (NEW.server, OLD.holder, OLD.token, OLD.expires_at, NEW.holder, NEW.token);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER note_handovers BEFORE UPDATE ON stream_leases
    FOR EACH ROW EXECUTE FUNCTION note_handover();
"""


def node_config(tmp_path: Path, node: str, ami_port: int, web_port: int, db_url: str) -> Path:
    config = tmp_path / f"cti-{node}.toml"
    config.write_text(
        f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "cti"\n'
        f"keepalive_s = 1.0\nreconnect_cap_s = 0.2\n"
        f'[database]\nurl = "{db_url}"\nflush_interval_s = 0.05\n'
        f'[ha]\nenabled = true\nnode = "{node}"\nlease_s = {LEASE_S}\n'
        f"[dialer]\nenabled = false\n"
        f'[log]\nformat = "json"\nlevel = "info"\n[web]\nport = {web_port}\n',
        encoding="utf-8",
    )
    return config


async def cut_inside_a_renewal(cluster: Cluster, relay: PgRelay) -> None:  # noqa: F811
    """Cut once the owner's renewal has updated the row and before its COMMIT arrives (the
    relay slows what the owner sends, so that moment lasts): the owner's renewal then waits
    for a COMMIT that never comes, on a connection whose cancellation and rollback go down the
    dead path too; PostgreSQL ends that session after idle_in_transaction_session_timeout, and
    the lease the standby sees is the one of the renewal before. The worst moment for the
    owner; a cut at a random moment hits it now and then."""
    conn = await asyncpg.connect(cluster.url())
    try:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'idle in transaction'"
            " AND query LIKE '%UPDATE stream_leases SET expires_at%'"
        )
        while not await conn.fetchval(query, cluster.roles["a"]):  # noqa: ASYNC110 - PostgreSQL's state
            await asyncio.sleep(0.002)
        relay.cut()
    finally:
        await conn.close()


@pytest.fixture
async def relay() -> AsyncIterator[PgRelay]:
    async with PgRelay(PG_HOST, PG_PORT, delay_s=0.05) as made:
        yield made


def stamp(line: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))


async def test_an_owner_cut_from_postgresql_stands_down_before_its_lease_expires(
    tmp_path: Path,
    cluster: Cluster,  # noqa: F811
    relay: PgRelay,
) -> None:
    conn = await asyncpg.connect(cluster.url())
    try:
        await conn.execute(HANDOVERS)
        for role in cluster.roles.values():  # the trigger runs as the daemon that takes over
            await conn.execute(f'GRANT ALL ON lease_handovers TO "{role}"')
    finally:
        await conn.close()
    async with SimulatedPbx(traffic_config()) as pbx:
        a_url = relay.url(cluster.roles["a"], cluster.name)
        a = Node(
            "a",
            node_config(tmp_path, "a", pbx.port, (web_a := free_port()), a_url),
            tmp_path / "a.log",
            web_a,
        )
        b_url = cluster.url("b")
        b = Node(
            "b",
            node_config(tmp_path, "b", pbx.port, (web_b := free_port()), b_url),
            tmp_path / "b.log",
            web_b,
        )
        try:
            await a.start()
            await healthy(a.web, a.alive)
            await until_owned(cluster, "a", 30)
            await b.start()
            await healthy(b.web, b.alive)
            pbx.start_traffic(600.0)  # writes in flight too when the path goes
            await asyncio.sleep(2.0)  # a few renewals and writes through the relay

            await cut_inside_a_renewal(cluster, relay)
            token, _ = await until_owned(cluster, "b", 20 * LEASE_S)
            assert token == 2

            # a stands down (it may already have): wait for its log line.
            async def stood_down() -> list[dict[str, Any]]:
                return [line for line in a.logged() if line.get("event") == STANDING_DOWN]

            for _ in range(100):
                if lines := await stood_down():
                    break
                await asyncio.sleep(0.1)
            assert lines, "a never stood down"
            a.alive  # noqa: B018 - still running, cut off
        finally:
            await a.stop()
            await b.stop()

    handovers = await cluster.rows(
        "SELECT old_holder, old_token, old_expires_at, new_holder, new_token, at FROM lease_handovers"
    )
    assert [(h["old_holder"], h["old_token"], h["new_holder"]) for h in handovers][:1] == [("a", 1, "b")]
    expired_at = handovers[0]["old_expires_at"]
    stood = stamp(lines[0])
    # The order that matters: a let go (and said so) before its lease expired, so that no
    # moment had a reading, connected owner beside the next one.
    assert stood < expired_at, (lines[0], expired_at, handovers[0]["at"])
    assert lines[0]["reason"].startswith("lease not renewed in time"), lines[0]
    assert "Traceback" not in a.log.read_text(encoding="utf-8", errors="replace")
