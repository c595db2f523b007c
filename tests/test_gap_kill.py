"""`cti serve` stopped three times under traffic, for about 5 s each (`kill -9`, a clean stop,
`kill -9`): no call goes unrecorded.

The simulated PBX runs in the test process with random inbound and outbound traffic, and writes,
as the shipped asterisk-conf makes Asterisk do, its CEL and queue_log rows to a throwaway
PostgreSQL database (sim/records.py); cti runs on another "host" (no queue_log file), with
`records_url` pointing at that database. The daemon is killed with SIGKILL, left dead about 5 s
(50 simulated seconds: calls begin and end meanwhile), started again, stopped with SIGTERM (the
calls in progress are stored as such; those over by the restart take their end from the
records), started again, killed again, started again. Afterwards every call the simulator made
is stored exactly once, and each one as the simulator's ground truth says it went: those
recovered from CEL (`closed_by: "cel"`) and those seen live alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest

from cti.sim.config import OutboundMix, SimConfig, TrafficSpec, call_centre_config
from cti.sim.pbx import SimulatedPbx
from cti.sim.truth import CallTruth
from pbx.netcut import AmiRelay
from test_gap_rebuild import records_url  # noqa: F401 - the fixture

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.timeout(240)]
SPEED = 10.0
TRAFFIC_S = 600.0  # simulated: 60 s of wall clock, the stops and restarts within it
# Two kill -9 and, between them, a clean stop (SIGTERM): the calls in progress then are stored
# as such, and those over by the restart take their end from Asterisk's records.
STOPS = (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)
DOWN_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_file(tmp_path: Path, ami_port: int, web_port: int, db: Path, records: str) -> Path:
    config = tmp_path / "cti.toml"
    config.write_text(
        f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "cti"\n'
        f'keepalive_s = 1.0\nreconnect_cap_s = 0.2\nrecords_url = "{records}"\n'
        f'[database]\nurl = "sqlite+aiosqlite:///{db}"\nflush_interval_s = 0.05\n'
        f'[log]\nformat = "json"\nlevel = "info"\n[web]\nport = {web_port}\n',
        encoding="utf-8",
    )
    return config


async def serve(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "CTI_AMI_PBX1_SECRET": "ctisecret"}
    handle: IO[bytes] = open(log, "ab")  # noqa: ASYNC230, SIM115 - handed to the child
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cti.cli", "serve", "--config", str(config), env=env, stderr=handle
        )
    finally:
        handle.close()


def _health(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return str(json.load(response).get("status"))
    except OSError:
        return "down"


async def healthy(port: int, process: asyncio.subprocess.Process, within_s: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while await asyncio.to_thread(_health, port) != "ok":
        assert process.returncode is None, "cti serve exited"
        assert loop.time() < deadline, "cti serve never became healthy"
        await asyncio.sleep(0.1)


def rows(db: Path, query: str) -> list[Any]:
    with sqlite3.connect(db) as conn:
        try:
            return list(conn.execute(query))
        except sqlite3.OperationalError:  # not migrated yet
            return []


async def until(check: Any, within_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await asyncio.to_thread(check):
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.2)


MARK = "SELECT seen_until FROM recovery_marks"


async def moved(db: Path, mark: list[Any], within_s: float = 60.0) -> list[Any]:
    """The stored mark, once it differs from `mark`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        now = await asyncio.to_thread(rows, db, MARK)
        if now and now != mark:
            return now
        assert loop.time() < deadline, "the recovery mark never moved"
        await asyncio.sleep(0.2)


async def halt(process: asyncio.subprocess.Process, how: signal.Signals) -> None:
    process.send_signal(how)
    await asyncio.wait_for(process.wait(), 30)


def expected(call: CallTruth) -> dict[str, Any]:
    return {
        "outcome": call.outcome,
        "queue": call.queue,
        "agent": call.agent,
        "direction": call.direction,
        "hangup_by": call.hangup_by,
    }


def stored(db: Path) -> list[dict[str, Any]]:
    query = (
        "SELECT c.linkedid, c.outcome, c.agent, c.direction, c.hangup_by, c.closed_by, c.wait_s, c.talk_s,"
        " (SELECT queue FROM call_segments s WHERE s.call_id = c.id ORDER BY seq LIMIT 1) FROM calls c"
    )
    names = ("linkedid", "outcome", "agent", "direction", "hangup_by", "closed_by", "wait_s", "talk_s")
    names += ("queue",)
    return [dict(zip(names, row, strict=True)) for row in rows(db, query)]


def traffic_config() -> SimConfig:
    traffic = TrafficSpec(
        calls_per_minute=20,
        outbound_per_minute=4,
        patience_s=(8.0, 50.0),
        talk_s=(10.0, 45.0),
        queue_timeout_s=(8, 20),
        queue_timeout_rate=0.25,
    )
    # No "failed": an Originate the network refuses makes no channel, hence no CEL row at all
    # (and during a gap only cti's own dialer, down with it, would originate).
    mix = OutboundMix(answered=5, busy=2, no_answer=2, congestion=1, failed=0)
    return call_centre_config(6, speed=SPEED, seed=1, traffic=traffic, outbound_mix=mix)


async def finish(pbx: SimulatedPbx, db: Path, process: asyncio.subprocess.Process) -> dict[str, CallTruth]:
    """The traffic's end, every call stored, a clean stop; the simulator's ground truth."""
    await asyncio.wait_for(pbx.traffic_finished(), 90)
    await pbx.idle(timeout_s=120)
    truth = {c.linkedid: c for c in pbx.truth.finished()}
    with contextlib.suppress(AssertionError):  # what is missing is named by check()
        await until(lambda: len(stored(db)) >= len(truth), within_s=60)
    await asyncio.sleep(1.0)  # anything stored twice would show now
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 30)
    return truth


def check(truth: dict[str, CallTruth], db: Path, log: Path, gaps: list[tuple[float, float]]) -> None:
    calls = stored(db)
    by_id = {c["linkedid"]: c for c in calls}
    # None missing, none twice, nothing that never was.
    assert len(calls) == len(by_id)
    assert set(by_id) == set(truth), sorted(set(by_id) ^ set(truth))[:10]
    # The gaps hid calls: some began and ended while the daemon was dead or cut off.
    in_gap = [c for c in truth.values() if any(a <= c.started_at and (c.ended_at or 0) <= b for a, b in gaps)]
    recovered = [c for c in calls if c["closed_by"] == "cel"]
    assert len(in_gap) >= 5 and len(recovered) >= len(in_gap), (len(in_gap), len(recovered))
    assert {c.linkedid for c in in_gap} <= {c["linkedid"] for c in recovered}
    # Each as it went: recovered from CEL, or seen live; a call in progress at a restart is
    # adopted by the resync and completed from CEL (its Originate, its IVR before the restart).
    mismatches = [
        (lid, by_id[lid]["closed_by"], expected(call), {key: by_id[lid][key] for key in expected(call)})
        for lid, call in truth.items()
        if expected(call) != {key: by_id[lid][key] for key in expected(call)}
    ]
    assert not mismatches, mismatches[:5]
    for lid, call in truth.items():
        row = by_id[lid]
        if row["closed_by"] != "cel":
            continue
        for name, want_s in (("wait_s", call.wait_s), ("talk_s", call.talk_s)):
            assert (row[name] is None) == (want_s is None), (lid, name, row[name], want_s)
            if row[name] is not None and want_s is not None:
                assert abs(row[name] - want_s) <= 1.0, (lid, name, row[name], want_s)
    assert set(Counter(c["closed_by"] for c in calls)) <= {"events", "cel"}
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text
    assert text.count("gap recovered from Asterisk's CEL and queue_log") >= len(gaps)


async def test_stops_under_traffic_leave_no_call_unrecorded(tmp_path: Path, records_url: str) -> None:  # noqa: F811
    db, log, web = tmp_path / "cti.db", tmp_path / "cti.log", free_port()
    gaps: list[tuple[float, float]] = []
    async with SimulatedPbx(traffic_config(), records_url=records_url) as pbx:
        settings = config_file(tmp_path, pbx.port, web, db, records_url)
        process = await serve(settings, log)
        try:
            await healthy(web, process)
            pbx.start_traffic(TRAFFIC_S)
            for run, stop in enumerate(STOPS):
                # Up long enough to have stored how far it saw the PBX (recovery_marks), past the
                # gap it recovered: this daemon moves the mark once the gap is stored.
                await moved(db, await asyncio.to_thread(rows, db, MARK))
                await asyncio.sleep(2.0 + run)
                await halt(process, stop)
                down = pbx.now
                await asyncio.sleep(DOWN_S)
                gaps.append((down, pbx.now))
                process = await serve(settings, log)
                await healthy(web, process)
            truth = await finish(pbx, db, process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    check(truth, db, log, gaps)


async def test_ami_cuts_under_traffic_leave_no_call_unrecorded(tmp_path: Path, records_url: str) -> None:  # noqa: F811
    """The daemon keeps running, its AMI link is cut (a network outage) twice for 5 s: the gap
    starts at the last event it saw (in memory, no restart)."""
    db, log, web = tmp_path / "cti.db", tmp_path / "cti.log", free_port()
    gaps: list[tuple[float, float]] = []
    async with SimulatedPbx(traffic_config(), records_url=records_url) as pbx:
        relay = AmiRelay(pbx.port)
        settings = config_file(tmp_path, relay.port, web, db, records_url)
        process = await serve(settings, log)
        try:
            await healthy(web, process)
            pbx.start_traffic(TRAFFIC_S)
            for run in range(2):
                await asyncio.sleep(8.0 + run)
                down = pbx.now
                await asyncio.to_thread(relay.cut, DOWN_S)
                await asyncio.sleep(DOWN_S)
                gaps.append((down, pbx.now))
                await until(lambda: _health(web) == "ok", within_s=30)
            truth = await finish(pbx, db, process)
        finally:
            relay.close()
            if process.returncode is None:
                process.kill()
                await process.wait()
    check(truth, db, log, gaps)
