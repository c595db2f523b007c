"""A call the daemon never saw, recorded from Asterisk's own records in PostgreSQL.

The tier's PostgreSQL-backed variant: Asterisk 22.10.1 with the shipped configuration writes its
queue_log (realtime, extconfig.conf) and its CEL (cel_pgsql) to a throwaway database on the
local PostgreSQL, as well as the queue_log file. cti runs as on another host than the PBX: no
queue_log file, `records_url` pointing at that database. cti is killed (or, in the second test,
its AMI link cut); a customer calls, goes through the SVI, is answered in support and hangs up,
all while cti is dead (cut off); cti starts again (reconnects) and records the call from CEL and
queue_log, checked against the queue_log file and the CDRs.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from daemon import CtiDaemon
from floor import call_in, finish, log_in
from lab import (
    Asterisk,
    PgTarget,
)
from netcut import AmiRelay
from sipp import Answer, SipLab
from truth import agrees_with_cdr, close, queue_calls

from cti.calls.queue_log import parse_lines

SUPPORT = "1,1,1"
ARTEFACTS = Path(os.environ.get("CTI_PBX_ARTEFACTS", "/tmp/cti-pbx-artefacts"))


@dataclass
class RemoteCti(CtiDaemon):
    """cti on another host than the PBX: no queue_log file to read (from the environment over
    the tier's cti.toml), only Asterisk's records in PostgreSQL (`records_url`, deploy step 9)."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env["CTI_AMI_QUEUE_LOG"] = ""
        return env


@pytest.fixture
def cti(pbx: Asterisk, users_db: Path) -> Iterator[CtiDaemon]:
    daemon = RemoteCti(pbx, pbx.run / "cti")
    daemon.write_config()
    daemon.add_users(template=users_db)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _mark(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        try:
            return list(conn.execute("SELECT server, seen_until FROM recovery_marks"))
        except sqlite3.OperationalError:
            return []


async def _asterisk_rows(url: str, linkedid: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    conn = await asyncpg.connect(url)
    try:
        cel = await conn.fetch("SELECT * FROM cel WHERE linkedid = $1 ORDER BY id", linkedid)
        queue = await conn.fetch("SELECT * FROM queue_log WHERE callid = $1 ORDER BY id", linkedid)
        return cel, queue
    finally:
        await conn.close()


async def test_a_call_made_while_cti_is_dead_is_recorded_from_cel_and_queue_log(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, records_db: PgTarget
) -> None:
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=1000))
    # Up a while first: it has stored how far it saw the PBX (what the next start reads from),
    # and the agent's *41 (killed before the call writer's flush, it would be recorded from
    # CEL, rightly: seen in CI, the mark stored just before the *41 and the kill just after).
    deadline = time.monotonic() + 30
    login = "SELECT closed_by FROM calls WHERE caller_raw = '1001'"
    while not (await asyncio.to_thread(_mark, cti.db_path) and await cti.sql(login)):
        assert time.monotonic() < deadline, "no recovery mark or *41 stored"
        await asyncio.sleep(0.5)
    cti.stop(kill=True)  # kill -9: nothing written at exit

    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=7000)
    assert await finish(caller) == 0, caller.errors()
    cti.start()
    [call] = await cti.customer_calls(within_s=40)
    await recorded_from_asterisks_records(call, pbx, records_db)
    # The agent's *41, seen live before the kill, is stored once, as seen.
    assert await cti.sql(login) == [("events",)]


@pytest.fixture
def relay(pbx: Asterisk) -> Iterator[AmiRelay]:
    relay = AmiRelay(pbx.ports.ami)
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture
def cti_via_relay(pbx: Asterisk, relay: AmiRelay, users_db: Path) -> Iterator[CtiDaemon]:
    daemon = RemoteCti(pbx, pbx.run / "cti", ami_port=relay.port)
    daemon.write_config()
    daemon.add_users(template=users_db)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


async def test_a_call_made_while_the_ami_link_is_cut_is_recorded_from_cel_and_queue_log(
    pbx: Asterisk, sip: SipLab, cti_via_relay: CtiDaemon, relay: AmiRelay, records_db: PgTarget
) -> None:
    """The daemon keeps running; the network between it and Asterisk goes for the whole call
    (its reconnect attempts refused), then comes back: the gap starts at the last event seen."""
    cti = cti_via_relay
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=1000))
    await cti.customer_calls(caller="1001")  # the *41 seen: the link is up and followed
    relay.cut(for_s=120)
    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=7000)
    assert await finish(caller) == 0, caller.errors()
    relay.cut(for_s=0)  # the network is back
    [call] = await cti.customer_calls(within_s=60)
    await recorded_from_asterisks_records(call, pbx, records_db)


async def test_ivr_steps_taken_during_a_cut_come_from_cel(
    pbx: Asterisk, sip: SipLab, cti_via_relay: CtiDaemon, relay: AmiRelay, records_db: PgTarget
) -> None:
    """The link goes right after the caller's first choice (the language) has reached the
    daemon, and comes back 4 s later, the caller past the SVI and in support's queue: the steps
    taken meanwhile come from CEL, those seen live are not taken twice (CEL's rows and the AMI
    events are stamped apart), and the call, followed live to its end, is the SVI call it was."""
    cti = cti_via_relay
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=1000))
    await cti.customer_calls(caller="1001")  # the *41 seen: the link is up and followed
    relay.cut_on(b"Menu: language\r\nChoice: 1", for_s=4.0)
    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=20000)
    assert await finish(caller) == 0, caller.errors()
    [call] = await cti.customer_calls(within_s=60)
    assert call["closed_by"] == "events"  # followed live after the cut, not rebuilt from CEL
    assert (call["outcome"], call["queue"], call["direction"], call["agent"]) == (
        "answered",
        "support",
        "inbound",
        "Agent 1001",
    )
    assert [(s["menu"], s["kind"], s["value"]) for s in call["ivr_path"]] == [
        ("language", "enter", "enter"), ("language", "choice", "1"), ("main", "enter", "enter"),
        ("main", "choice", "1"), ("support", "enter", "enter"), ("support", "choice", "1"),
    ]  # fmt: skip
    cel, _ = await _asterisk_rows(records_db.url, call["linkedid"])
    assert cel  # the steps had a source


async def recorded_from_asterisks_records(call: dict[str, Any], pbx: Asterisk, records_db: PgTarget) -> None:
    """The SVI call answered in support by Agent 1001, recorded from CEL and queue_log as the
    queue_log file and the CDRs say."""
    truth = queue_calls(pbx.queue_log)[call["linkedid"]]
    assert call["closed_by"] == "cel"
    assert (call["outcome"], call["queue"], call["direction"]) == ("answered", "support", "inbound")
    assert (
        (call["agent"], call["agent_interface"])
        == ("Agent 1001", "PJSIP/1001")
        == (truth.agent, "PJSIP/1001")
    )
    assert call["hangup_by"] == "caller" == truth.completed_by
    assert [(s["menu"], s["kind"], s["value"]) for s in call["ivr_path"]] == [
        ("language", "enter", "enter"), ("language", "choice", "1"), ("main", "enter", "enter"),
        ("main", "choice", "1"), ("support", "enter", "enter"), ("support", "choice", "1"),
    ]  # fmt: skip
    assert close(call["wait_s"], truth.wait_s), (call["wait_s"], truth.wait_s)
    assert close(call["talk_s"], truth.talk_s), (call["talk_s"], truth.talk_s)
    assert agrees_with_cdr(call, pbx.cdr_rows()) == []

    # What Asterisk wrote to PostgreSQL is what it wrote to its file, line for line.
    cel, queue_rows = await _asterisk_rows(records_db.url, call["linkedid"])
    assert {r["eventtype"] for r in cel} >= {"CHAN_START", "ANSWER", "BRIDGE_ENTER", "HANGUP", "LINKEDID_END"}
    in_file = [e for e in parse_lines(pbx.queue_log.read_text().splitlines()) if e.callid == call["linkedid"]]
    assert [(r["event"], r["queuename"], r["agent"]) for r in queue_rows] == [
        (e.verb, e.queue, e.agent or "NONE") for e in in_file
    ]
    for row, entry in zip(queue_rows, in_file, strict=True):
        assert [row[f"data{i + 1}"] for i in range(len(entry.fields))] == list(entry.fields)
        # UTC (queue_log_realtime_use_gmt), to the microsecond; the file's are whole seconds.
        # Asterisk stamps the row first (ast_tvnow), inserts it, then stamps the file's line with
        # time(NULL), glibc's coarse clock, up to a tick behind: seen 1.001 s apart in CI (row
        # 10:09:07.001, line 10:09:06). So within a second, give or take the tick and the insert.
        assert -0.5 < row["time"].replace(tzinfo=UTC).timestamp() - entry.at < 1.05
