"""Calls rebuilt from Asterisk's CEL and queue_log rows (calls/gap.py, calls/cel_source.py).

Two sources of rows: the real ones the real-PBX tier's Asterisk 22.10.1 wrote to PostgreSQL for an
agent's `*41` and a customer's call through the SVI answered in support (kept here verbatim), and
the simulator's (sim/records.py), written to a throwaway PostgreSQL database during random
traffic and read back through the same reader the daemon uses: every call the simulator made
must come back as the simulator's ground truth says it went.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cti.calls.cel_source import AsteriskRecords, cel_row, queue_log_entry
from cti.calls.events import CallEnded
from cti.calls.gap import RebuildRules, RecoveredCall, rebuild, user_event
from cti.calls.records import CallRecord
from cti.calls.tracker import CallTracker
from cti.sim.config import OutboundMix, TrafficSpec, call_centre_config
from cti.sim.pbx import SimulatedPbx
from cti.sim.truth import CallTruth

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "asterisk-conf" / "postgresql-tables.sql"
PG_HOST = os.environ.get("CTI_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CTI_TEST_PG_PORT", "5432"))


# -- a throwaway database with Asterisk's tables ---------------------------------------------------


async def _admin() -> tuple[asyncpg.Connection, str]:
    errors = []
    for user in ("postgres", "root"):
        try:
            conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database="test", timeout=5)
            return conn, user
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            errors.append(f"{user}: {exc}")
    pytest.skip(f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({'; '.join(errors)})")


@pytest.fixture
async def records_url() -> AsyncIterator[str]:
    """A database holding the tables of asterisk-conf/postgresql-tables.sql, for this test only."""
    async with records_database() as url:
        yield url


@asynccontextmanager
async def records_database() -> AsyncIterator[str]:
    """A database with Asterisk's tables, dropped after: the fixture's, or one per simulated PBX
    (each PBX its own, as in production: CEL has no server column)."""
    admin, user = await _admin()
    name = f"cti_gap_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(TABLES.read_text(encoding="utf-8"))
        finally:
            await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def settle(call: RecoveredCall, server: str = "pbx1") -> CallRecord:
    """What the daemon stores for a rebuilt call (GapRecovery closes it the same way)."""
    tracker = CallTracker(server)
    events = tracker.close_recovered(
        call.record,
        call.queue_log,
        originated=call.originated,
        originate_answered_at=call.originate_answered_at,
        hangup=call.hangup,
    )
    assert events and isinstance(events[-1], CallEnded), events
    return call.record


# -- the real rows -------------------------------------------------------------------------------

# Asterisk 22.10.1 on the real-PBX tier, the shipped configuration writing to PostgreSQL: agent
# 1001 logs in with *41, then 0612345678 calls, keys 1, 1, 1 and is answered in support by
# Agent 1001 after a second's ring, and hangs up after 6 s of conversation. The rows as they
# were, each channel's columns (channame, uniqueid, linkedid, cid_num, cid_name) written once.
LOGIN = ("PJSIP/1001-00000000", "1796598709.0", "1796598709.0", "1001", "Agent 1001")
TRUNK = ("PJSIP/trunk-00000001", "1796598710.1", "1796598710.1", "0612345678", "")
AGENT = ("PJSIP/1001-00000002", "1796598715.2", "1796598710.1", "1001", "Agent 1001")
BRIDGED = '{"bridge_id":"acf4fddb-e1ce-489a-8b48-23a6f575e6ea","bridge_technology":"simple_bridge"}'
AGI = "AgiDone,Customer: ,Prio: ,Lookup: skipped"
OUT = "(Outgoing Line)"
# id, eventtype, eventtime (UTC), channel, context, exten, appname, appdata, peer, extra
REAL_CEL = [
    (1, "CHAN_START", "23:11:49.752289", LOGIN, "cti-agents", "*41", "", "", "", ""),
    (2, "ANSWER", "23:11:49.752548", LOGIN, "cti-agents", "*41", "Answer", "", "", ""),
    (3, "HANGUP", "23:11:50.558058", LOGIN, "cti-agents", "*41", "", "", "",
     '{"hangupcause":16,"hangupsource":"dialplan/builtin","dialstatus":""}'),
    (4, "CHAN_END", "23:11:50.558058", LOGIN, "cti-agents", "*41", "", "", "", ""),
    (5, "LINKEDID_END", "23:11:50.558058", LOGIN, "cti-agents", "*41", "", "", "", ""),
    (6, "CHAN_START", "23:11:50.718076", TRUNK, "cti-inbound", "0180000000", "", "", "", ""),
    (7, "APP_START", "23:11:50.720573", TRUNK, "cti-inbound", "s", "UserEvent", AGI, "", ""),
    (8, "APP_END", "23:11:50.720592", TRUNK, "cti-inbound", "s", "UserEvent", AGI, "", ""),
    (9, "ANSWER", "23:11:50.720600", TRUNK, "cti-inbound", "s", "Answer", "", "", ""),
    (10, "APP_START", "23:11:51.222601", TRUNK, "cti-ivr-language", "s", "UserEvent",
     "IVR,Menu: language,Step: enter", "", ""),
    (12, "APP_START", "23:11:52.129562", TRUNK, "cti-ivr-language", "1", "UserEvent",
     "IVR,Menu: language,Choice: 1", "", ""),
    (14, "APP_START", "23:11:52.129700", TRUNK, "cti-ivr-main", "s", "UserEvent",
     "IVR,Menu: main,Step: enter", "", ""),
    (16, "APP_START", "23:11:53.639518", TRUNK, "cti-ivr-main", "1", "UserEvent",
     "IVR,Menu: main,Choice: 1", "", ""),
    (18, "APP_START", "23:11:53.639596", TRUNK, "cti-ivr-support", "s", "UserEvent",
     "IVR,Menu: support,Step: enter", "", ""),
    (20, "APP_START", "23:11:55.149458", TRUNK, "cti-ivr-support", "1", "UserEvent",
     "IVR,Menu: support,Choice: 1", "", ""),
    (22, "APP_START", "23:11:55.149686", TRUNK, "cti-route", "support", "Queue", "support,t,,,300", "", ""),
    (23, "CHAN_START", "23:11:55.151731", AGENT, "cti-agents", "s", "", "", "", ""),
    (24, "ANSWER", "23:11:56.158941", AGENT, "cti-agents", "support", "AppQueue", OUT, "", ""),
    (25, "BRIDGE_ENTER", "23:11:56.161195", AGENT, "cti-agents", "support", "AppQueue", OUT, "", BRIDGED),
    (26, "BRIDGE_ENTER", "23:11:56.161274", TRUNK, "cti-route", "support", "Queue", "support,t,,,300",
     AGENT[0], BRIDGED),
    (27, "BRIDGE_EXIT", "23:12:02.471393", TRUNK, "cti-route", "support", "Queue", "support,t,,,300",
     AGENT[0], BRIDGED),
    (28, "BRIDGE_EXIT", "23:12:02.471492", AGENT, "cti-agents", "support", "AppQueue", OUT, "", BRIDGED),
    (29, "HANGUP", "23:12:02.472141", AGENT, "cti-agents", "support", "AppQueue", OUT, "",
     '{"hangupcause":16,"hangupsource":"PJSIP/trunk-00000001","dialstatus":""}'),
    (30, "CHAN_END", "23:12:02.472141", AGENT, "cti-agents", "support", "AppQueue", OUT, "", ""),
    (31, "APP_END", "23:12:02.474590", TRUNK, "cti-route", "support", "Queue", "support,t,,,300", "", ""),
    (32, "HANGUP", "23:12:02.474590", TRUNK, "cti-route", "support", "", "", "",
     '{"hangupcause":16,"hangupsource":"PJSIP/trunk-00000001","dialstatus":"ANSWER"}'),
    (33, "CHAN_END", "23:12:02.474590", TRUNK, "cti-route", "support", "", "", "", ""),
    (34, "LINKEDID_END", "23:12:02.474590", TRUNK, "cti-route", "support", "", "", "", ""),
]  # fmt: skip
# The same run's queue_log table: id, time (UTC), callid, queuename, agent, event, data1..data3.
REAL_QUEUE_LOG = [
    (1, "23:11:48.323205", "NONE", "NONE", "NONE", "QUEUESTART", "", "", ""),
    (2, "23:11:50.255527", "1796598709.0", "support", "Agent 1001", "ADDMEMBER", "", "", ""),
    (3, "23:11:50.257547", "1796598709.0", "hotline", "Agent 1001", "ADDMEMBER", "", "", ""),
    (4, "23:11:55.149987", "1796598710.1", "support", "NONE", "ENTERQUEUE", "", "0612345678", "1"),
    (5, "23:11:56.159860", "1796598710.1", "support", "Agent 1001", "CONNECT", "1", "1796598715.2", "1"),
    (6, "23:12:02.470851", "1796598710.1", "support", "Agent 1001", "COMPLETECALLER", "1", "6", "1"),
]  # fmt: skip
DAY = "2026-12-06 "


def _real_cel() -> list[Any]:
    rows = []
    for seq, event, at, channel, context, exten, app, data, peer, extra in REAL_CEL:
        name, uniqueid, linkedid, number, caller_name = channel
        row = {
            "id": seq, "eventtype": event, "eventtime": datetime.fromisoformat(DAY + at), "channame": name,
            "uniqueid": uniqueid, "linkedid": linkedid, "cid_num": number, "cid_name": caller_name,
            "context": context, "exten": exten, "appname": app, "appdata": data, "peer": peer, "extra": extra,
            "accountcode": "", "userdeftype": "",
        }  # fmt: skip
        rows.append(cel_row(row))
    return rows


def _real_queue_log() -> list[Any]:
    columns = ("id", "time", "callid", "queuename", "agent", "event", "data1", "data2", "data3")
    entries = []
    for values in REAL_QUEUE_LOG:
        row = dict(zip(columns, values, strict=True))
        row.update(time=datetime.fromisoformat(DAY + row["time"]), data4="", data5="")
        entry = queue_log_entry(row)
        if entry is not None:
            entries.append(entry)
    return entries


def _real(linkedid: str) -> RecoveredCall | None:
    cel = [r for r in _real_cel() if r.linkedid == linkedid]
    return rebuild(linkedid, cel, _real_queue_log(), RebuildRules("pbx1"))


def test_a_real_answered_call_is_rebuilt_from_asterisks_rows() -> None:
    call = _real("1796598710.1")
    assert call is not None
    record = settle(call)
    assert record.to_json() | {"ivr_steps": None} == {
        "server": "pbx1", "linkedid": "1796598710.1", "direction": "inbound",
        "started_at": 1796598710.718076, "ended_at": 1796598722.47459,
        "caller_raw": "0612345678", "caller_e164": "+33612345678", "caller_name": None, "called": None,
        "ivr_path": [
            "language:enter=enter", "language:choice=1", "main:enter=enter", "main:choice=1",
            "support:enter=enter", "support:choice=1",
        ],
        "segments": [{
            "queue": "support", "joined_at": 1796598715.149987, "left_at": 1796598716.15986,
            "outcome": "answered", "agent": "Agent 1001", "interface": None, "wait_s": 1.0,
            "ring_s": 1.0, "talk_s": 6.0, "completed_by": "caller", "position": None, "ring_attempts": 0,
            "ring_no_answer": 0,
        }],
        "outcome": "answered", "hangup_by": "caller", "hangup_cause": 16,
        "agent": "Agent 1001", "agent_interface": "PJSIP/1001", "answered_at": 1796598716.15986,
        "wait_s": 1.0, "ring_s": 1.0, "talk_s": 6.0, "transfers": 0, "transferred_to": [],
        "originate_reason": None, "originate_action_id": None, "campaign": None, "contact": None,
        "closed_by": "cel", "queue": "support", "queues": ["support"], "ivr_steps": None,
    }  # fmt: skip


def test_an_agents_feature_code_is_an_internal_call_without_queue_stays() -> None:
    """*41 runs AddQueueMember: its ADDMEMBER lines name the agent's channel as callid, but
    they are no stay of a caller in a queue."""
    call = _real("1796598709.0")
    assert call is not None
    record = settle(call)
    assert (record.direction, record.segments, record.outcome) == ("internal", [], "no_queue")
    assert (record.caller_raw, record.hangup_by, record.ended_at) == ("1001", "system", 1796598710.558058)


def test_a_call_still_up_is_not_rebuilt() -> None:
    cel = [r for r in _real_cel() if r.linkedid == "1796598710.1" and r.seq < 30]
    assert rebuild("1796598710.1", cel, _real_queue_log(), RebuildRules("pbx1")) is None


def test_user_event_data_reads_as_app_userevent_sends_it() -> None:
    assert user_event("IVR,Menu: main,Choice: 1") == ("IVR", {"Menu": "main", "Choice": "1"})
    assert user_event("QueueExit,Queue: support,Status: TIMEOUT") == (
        "QueueExit",
        {"Queue": "support", "Status": "TIMEOUT"},
    )
    assert user_event("AgiDone,Customer: ,Prio: ,Lookup: skipped")[1]["Lookup"] == "skipped"
    assert user_event("Bare") == ("Bare", {})


# -- the simulator's rows, read back from PostgreSQL -----------------------------------------------


def expected(call: CallTruth) -> dict[str, Any]:
    return {
        "outcome": call.outcome,
        "queue": call.queue,
        "agent": call.agent,
        "direction": call.direction,
        "hangup_by": call.hangup_by,
    }


def observed(record: CallRecord) -> dict[str, Any]:
    return {
        "outcome": record.outcome,
        "queue": record.queue,
        "agent": record.agent,
        "direction": record.direction,
        "hangup_by": record.hangup_by,
    }


async def test_every_simulated_call_is_rebuilt_as_the_simulator_made_it(records_url: str) -> None:
    traffic = TrafficSpec(
        calls_per_minute=20,
        outbound_per_minute=4,
        patience_s=(8.0, 50.0),
        talk_s=(10.0, 45.0),
        queue_timeout_s=(8, 20),
        queue_timeout_rate=0.25,
    )
    # No "failed": an Originate the network refuses makes no channel, so no CEL row at all.
    mix = OutboundMix(answered=5, busy=2, no_answer=2, congestion=1, failed=0)
    config = call_centre_config(6, speed=None, seed=1, traffic=traffic, outbound_mix=mix)
    async with SimulatedPbx(config, records_url=records_url) as pbx:
        pbx.start_traffic(300)
        await pbx.advance(300)
        await pbx.idle(timeout_s=600)
        assert pbx.records is not None
        await pbx.records.flush()
        truth = {c.linkedid: c for c in pbx.truth.finished()}

    source = AsteriskRecords(records_url)
    latest = await source.latest()
    assert latest is not None
    ended = await source.ended_since(latest - 3600)
    assert set(ended) == set(truth), sorted(set(ended) ^ set(truth))[:10]
    rules = RebuildRules("sim", internal_contexts=frozenset())
    rebuilt = {c.record.linkedid: settle(c, "sim") for c in await source.rebuilt(ended, latest - 7200, rules)}
    assert set(rebuilt) == set(truth)

    assert {c.outcome for c in truth.values()} >= {
        "answered", "abandoned", "timeout", "ivr_only", "outbound_answered", "outbound_busy",
        "outbound_no_answer", "outbound_congestion",
    }  # fmt: skip
    mismatches = [
        (lid, expected(call), observed(rebuilt[lid]))
        for lid, call in truth.items()
        if expected(call) != observed(rebuilt[lid])
    ]
    assert not mismatches, mismatches[:5]
    for lid, call in truth.items():
        record = rebuilt[lid]
        assert record.closed_by == "cel"
        assert abs(record.started_at - call.started_at) <= 0.01, lid
        assert call.ended_at is not None and abs((record.ended_at or 0) - call.ended_at) <= 0.01, lid
        for name, want in (("wait_s", call.wait_s), ("talk_s", call.talk_s)):
            got = getattr(record, name)
            assert (got is None) == (want is None), (lid, name, got, want)
            if got is not None and want is not None:
                assert abs(got - want) <= 1.0, (lid, name, got, want)
        if call.direction == "inbound":
            assert record.caller_raw == call.caller, lid
            assert [f"main:{s.kind}={s.value}" for s in record.ivr_path] == call.ivr_path, lid


# -- cti config check --connect --------------------------------------------------------------------


async def test_config_check_reads_asterisks_records(records_url: str) -> None:
    from cti.config_commands import _records_check

    empty = await _records_check("pbx1", records_url, 5.0)
    assert (empty.level, empty.setting) == ("warning", "asterisk[pbx1].records_url")
    assert "no CEL row yet" in empty.text
    conn = await asyncpg.connect(records_url)
    try:
        await conn.execute(
            "INSERT INTO cel (eventtype, eventtime, uniqueid, linkedid) VALUES"
            " ('CHAN_START', '2026-12-06 23:11:50.718076', '1.1', '1.1')"
        )
    finally:
        await conn.close()
    ok = await _records_check("pbx1", records_url, 5.0)
    assert ok.level == "ok"
    assert ok.text.split(": ", 1)[1] == "latest CEL row 2026-12-06T23:11:50+00:00, queue_log none"
    gone = await _records_check("pbx1", records_url.rsplit("/", 1)[0] + "/no_such_database", 5.0)
    assert gone.level == "error" and "cannot read" in gone.text and "no_such_database" in gone.text
