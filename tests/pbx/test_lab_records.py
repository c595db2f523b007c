"""The compose lab's deploy step 6: Asterisk writes its queue_log and CEL to the lab's PostgreSQL
(the database `asterisk`, role `asterisk`), and cti reads them (`records_url`, role `cti_reader`)
to record the calls it never saw.

The lab's PostgreSQL creates the roles, the database and the shipped tables
(docker/postgres/entrypoint.sh); the Asterisk container points res_pgsql.conf and cel_pgsql.conf
at it (docker/asterisk/overlay.sh: the port; entrypoint.sh: pgsql_cti_local.conf) and starts
once it is healthy. Before, the lab's Asterisk tried 127.0.0.1:5432 and logged an ERROR for every
channel event, and its cti could not record a call made while it was down.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from datetime import UTC
from typing import Any

import asyncpg
import pytest
from daemon import CtiDaemon, Desk
from external import ExternalAsterisk, LabConfig
from floor import call_in, finish, log_in
from lab import Asterisk
from sipp import Answer, SipLab
from truth import queue_calls

from cti.calls.queue_log import parse_lines

LAB = LabConfig.from_env()
pytestmark = [
    pytest.mark.external,
    pytest.mark.skipif(LAB is None or not LAB.containers, reason="the compose lab only (CTI_PBX_EXTERNAL)"),
]
SUPPORT = "1,1,1"
# What Asterisk says when it cannot write a row (res/res_config_pgsql.c, cel/cel_pgsql.c), or
# that it logs in with the default password (no pgsql_cti_local.conf).
PGSQL_TROUBLE = re.compile(r"(ERROR|WARNING)\[\d+\][^ ]* (res_config_pgsql|cel_pgsql)\.c")


async def asterisk_rows(linkedid: str, within_s: float = 15.0) -> tuple[list[Any], list[Any]]:
    """The call's CEL and queue_log rows in the lab's `asterisk` database, read as cti reads them
    (role cti_reader), once its last channel has gone (LINKEDID_END)."""
    assert LAB is not None
    assert LAB.records_url, "docker/lab up writes records_url: the lab's Asterisk records are not set up"
    deadline = time.monotonic() + within_s
    conn = await asyncpg.connect(LAB.records_url, timeout=10)
    try:
        while True:
            cel = await conn.fetch("SELECT * FROM cel WHERE linkedid = $1 ORDER BY id", linkedid)
            if any(r["eventtype"] == "LINKEDID_END" for r in cel) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        queue = await conn.fetch("SELECT * FROM queue_log WHERE callid = $1 ORDER BY id", linkedid)
    finally:
        await conn.close()
    return cel, queue


async def docker(*args: str) -> None:
    await asyncio.to_thread(subprocess.run, ["docker", *args], capture_output=True, timeout=60, check=True)


def pgsql_trouble(pbx: Asterisk) -> list[str]:
    """res_config_pgsql's and cel_pgsql's errors and warnings since the lab's Asterisk started:
    its messages.log (which keeps them) and the container's console output."""
    assert LAB is not None and isinstance(pbx, ExternalAsterisk)
    text = pbx.run_there("cat", f"{LAB.asterisk_log_dir}/messages.log", check=False)
    console = subprocess.run(
        ["docker", "logs", LAB.containers[1]], capture_output=True, text=True, timeout=30
    )
    text += re.sub(r"\x1b\[[0-9;]*m", "", console.stdout + console.stderr)
    return [line for line in text.splitlines() if PGSQL_TROUBLE.search(line)]


async def test_an_answered_call_is_in_the_labs_asterisk_database_and_config_check_reads_it(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=1000))
    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=5000)
    await desks["agent1"].next("pop.answered", timeout_s=30)
    assert await finish(caller) == 0, caller.errors()
    [call] = await cti.customer_calls()
    assert call["outcome"] == "answered" and call["queue"] == "support"

    cel, queue_rows = await asterisk_rows(call["linkedid"])
    events = {r["eventtype"] for r in cel}
    assert events >= {"CHAN_START", "ANSWER", "BRIDGE_ENTER", "HANGUP", "LINKEDID_END"}, events
    # The IVR's UserEvents, as cti reads the path of a call it never saw.
    user_events = [r["appdata"] or "" for r in cel if (r["appname"] or "").lower() == "userevent"]
    assert any("Menu: main" in data for data in user_events), cel
    # The queue_log rows are the file's lines for the call, one for one.
    truth = queue_calls(pbx.queue_log)[call["linkedid"]]
    assert truth.outcome == "answered"
    in_file = [e for e in parse_lines(pbx.queue_log.read_text().splitlines()) if e.callid == call["linkedid"]]
    assert [(r["event"], r["queuename"], r["agent"]) for r in queue_rows] == [
        (e.verb, e.queue, e.agent or "NONE") for e in in_file
    ]
    for row, entry in zip(queue_rows, in_file, strict=True):
        # UTC, within a second give or take a tick and the insert (tests/pbx/test_gap.py says why).
        assert -0.5 < row["time"].replace(tzinfo=UTC).timestamp() - entry.at < 1.05
    # Asterisk logged in (pgsql_cti_local.conf) and wrote every row: nothing said about it.
    assert pgsql_trouble(pbx) == []
    assert "Connected to asterisk@127.0.0.1" in pbx.cli("realtime show pgsql status")

    # cti's own check of its settings reads the same tables (deploy step 9).
    doc = json.loads(cti.cli("config", "check", "--connect", "--json"))
    records = {f["setting"]: f for f in doc["findings"]}["asterisk[pbx1].records_url"]
    assert records["level"] == "ok" and "latest CEL row" in records["text"], records


async def test_a_call_made_while_the_labs_cti_is_down_is_recorded_from_cel(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon
) -> None:
    assert LAB is not None
    container = LAB.containers[2]
    # Up a while first: it has stored how far it saw the PBX, where the next start reads from.
    deadline = time.monotonic() + 30
    while not await cti.sql("SELECT server FROM recovery_marks WHERE server = ?", "pbx1"):
        assert time.monotonic() < deadline, "no recovery mark stored"
        await asyncio.sleep(0.5)
    await docker("stop", container)
    try:
        # French, then "horaires et adresse" (an information message), then hang up in the menu.
        caller = call_in(sip, pbx, "1,4", hangup_after_ms=1500)
        assert await finish(caller) == 0, caller.errors()
    finally:
        await docker("start", container)
    [call] = await cti.customer_calls(within_s=90)
    assert call["closed_by"] == "cel", call
    assert (call["outcome"], call["direction"], call["segments"]) == ("ivr_only", "inbound", [])
    assert ("main", "choice", "4") in [(s["menu"], s["kind"], s["value"]) for s in call["ivr_path"]]
    cel, _ = await asterisk_rows(call["linkedid"])
    assert "LINKEDID_END" in {r["eventtype"] for r in cel}
    await asyncio.to_thread(cti.start)  # healthy again for whatever runs next
