"""The daemon against the simulated PBX: what it stored must be what the simulator did.

Five simulated minutes of random traffic (about 20 inbound calls a minute on six agents, some
outbound calls with every outcome), compressed 50 times, through a real socket into the real
daemon (link → tracker → bus → SQLite). The tracker's calls and the queue counters computed from
them must equal the simulator's own ground-truth log.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from cti.app import Daemon
from cti.config import AsteriskServer, DatabaseSettings, Secret, Settings, WebSettings
from cti.db.calls_store import load_calls, record_from_row
from cti.db.engine import create_engine
from cti.sim.config import OutboundMix, TrafficSpec, call_centre_config
from cti.sim.pbx import SimulatedPbx
from cti.sim.truth import CallTruth
from cti.stats.queue_counters import queue_counters

SPEED = 50.0
TRAFFIC_S = 300.0


def settings(port: int, db: Path) -> Settings:
    server = AsteriskServer(
        name="sim",
        host="127.0.0.1",
        port=port,
        username="cti",
        secret=Secret("ctisecret"),
        keepalive_s=1.0,
        action_timeout_s=2.0,
        reconnect_cap_s=0.2,
    )
    return Settings(
        asterisk=(server,),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{db}", flush_interval_s=0.05),
        web=WebSettings(port=0),
    )


async def stored(db: Path) -> list[dict[str, Any]]:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        return await load_calls(engine)
    finally:
        await engine.dispose()


async def until_stored(db: Path, count: int, within_s: float = 20.0) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        calls = [c for c in await stored(db) if c["closed_by"] != "shutdown"]
        if len(calls) >= count or loop.time() > deadline:
            return calls
        await asyncio.sleep(0.1)


def expected(call: CallTruth) -> dict[str, Any]:
    return {
        "outcome": call.outcome,
        "queue": call.queue,
        "agent": call.agent,
        "direction": call.direction,
        "hangup_by": call.hangup_by,
    }


def observed(row: dict[str, Any]) -> dict[str, Any]:
    queue = row["segments"][0]["queue"] if row["segments"] else None
    return {
        "outcome": row["outcome"],
        "queue": queue,
        "agent": row["agent"],
        "direction": row["direction"],
        "hangup_by": row["hangup_by"],
    }


async def test_the_daemon_stores_what_the_simulator_did(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    traffic = TrafficSpec(
        calls_per_minute=20,
        outbound_per_minute=4,
        patience_s=(8.0, 50.0),
        talk_s=(10.0, 45.0),
        queue_timeout_s=(8, 20),
        queue_timeout_rate=0.25,
    )
    mix = OutboundMix(answered=5, busy=2, no_answer=2, congestion=1, failed=1)
    config = call_centre_config(6, speed=SPEED, seed=1, traffic=traffic, outbound_mix=mix)
    async with SimulatedPbx(config) as pbx:
        daemon = Daemon(settings(pbx.port, db))
        await daemon.start()
        try:
            await asyncio.wait_for(_connected(daemon), 10)
            pbx.start_traffic(TRAFFIC_S)
            await asyncio.wait_for(pbx.traffic_finished(), 60)
            await pbx.idle(timeout_s=60)
            truth = {c.linkedid: c for c in pbx.truth.finished()}
            rows = await until_stored(db, len(truth))
        finally:
            await daemon.shutdown()

    outcomes = Counter(c.outcome for c in truth.values())
    # The run covers what the issue asks for (seed 1: 107 calls, 9 rings unanswered).
    assert set(outcomes) == {
        "answered",
        "abandoned",
        "timeout",
        "ivr_only",
        "outbound_answered",
        "outbound_busy",
        "outbound_no_answer",
        "outbound_congestion",
        "outbound_failed",
    }
    assert pbx.engine.core.counters.by_name.get("AgentRingNoAnswer", 0) > 0

    by_id = {row["linkedid"]: row for row in rows}
    assert set(by_id) == set(truth), sorted(set(by_id) ^ set(truth))[:10]
    mismatches = [
        (lid, expected(call), observed(by_id[lid]))
        for lid, call in truth.items()
        if expected(call) != observed(by_id[lid])
    ]
    assert not mismatches, mismatches[:5]
    for lid, call in truth.items():
        row = by_id[lid]
        for name, want in (("wait_s", call.wait_s), ("talk_s", call.talk_s)):
            got = row[name]
            assert (got is None) == (want is None), (lid, name, got, want)
            if got is not None and want is not None:
                assert abs(got - want) <= 1.0, (lid, name, got, want)

    counters = queue_counters([record_from_row(r) for r in rows])
    got_counters = {
        q: {
            "presented": c.presented,
            "answered": c.answered,
            "abandoned": c.abandoned,
            "timed_out": c.timed_out,
        }
        for q, c in counters.items()
    }
    assert got_counters == pbx.truth.queue_counters()


async def _connected(daemon: Daemon) -> None:
    # Polling: the link's state has no event to wait on.
    while True:
        if daemon.links and daemon.links[0].connected and daemon.trackings[0].resyncs:
            return
        await asyncio.sleep(0.02)
