"""The daemon against a real Asterisk that restarts, or that it loses sight of for a while."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from daemon import CtiDaemon, Desk
from floor import call_in, finish, log_in
from lab import Asterisk, wait_for
from netcut import AmiRelay
from sipp import Answer, SipLab
from truth import close, queue_calls

from cti.calls.queue_log import parse_lines

SUPPORT = "1,1,1"


def health(daemon: CtiDaemon) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{daemon.url}/healthz", timeout=2) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as error:  # 503 while a link is down, with the same body
        return dict(json.load(error))


async def until_healthy(daemon: CtiDaemon, within_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        body = await asyncio.to_thread(health, daemon)
        if body["status"] == "ok" or time.monotonic() > deadline:
            assert body["status"] == "ok", body
            return body
        await asyncio.sleep(0.2)


async def test_pbx_restart_mid_call_closes_it_as_cut_by_the_pbx_and_the_next_call_works(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=500))
    first = call_in(sip, pbx, SUPPORT)
    await desks["agent1"].next("pop.answered", timeout_s=30)
    # The CLI connection dies with the process it asked to restart: any outcome is fine.
    with contextlib.suppress(subprocess.SubprocessError):
        pbx.cli("core restart now", timeout_s=5)
    await finish(first)  # Asterisk hung the caller up
    pbx.wait_booted()
    body = await until_healthy(cti)
    assert body["links"][0]["reconnects"] >= 1

    [call] = await cti.customer_calls()
    assert call["outcome"] == "answered" and call["hangup_by"] == "pbx"

    # The phone's registration and the agent's login survived the restart (astdb,
    # persistentmembers): the next caller reaches the same agent, and cti follows it. Asterisk
    # takes the restored contact for unreachable until its first qualify (up to 30 s), and the
    # queue refuses callers meanwhile (joinempty): wait for Asterisk, not for cti.
    await asyncio.to_thread(wait_for, lambda: "Not in use" in pbx.cli("queue show support"), 45.0, 0.5)
    second = call_in(sip, pbx, SUPPORT, hangup_after_ms=3000)
    await desks["agent1"].next("pop.answered", timeout_s=40)
    assert await finish(second) == 0, second.errors()
    calls = await cti.customer_calls(2)
    assert len(calls) == 2 and calls[-1]["outcome"] == "answered" and calls[-1]["hangup_by"] == "caller"


@pytest.fixture
def relay(pbx: Asterisk) -> Iterator[AmiRelay]:
    relay = AmiRelay(pbx.ports.ami)
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture
def cti_via_relay(pbx: Asterisk, relay: AmiRelay) -> Iterator[CtiDaemon]:
    # Without `records_url` (a site that gave cti no access to Asterisk's records in PostgreSQL):
    # the queue_log file closes the gap. With it, the same cut is recovered from CEL
    # (tests/pbx/test_gap.py).
    daemon = CtiDaemon(pbx, pbx.run / "cti", ami_port=relay.port, use_records=False)
    daemon.write_config()
    daemon.add_users()
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


async def test_call_that_ends_while_ami_is_cut_is_closed_from_queue_log_with_its_true_times(
    pbx: Asterisk, sip: SipLab, cti_via_relay: CtiDaemon, relay: AmiRelay
) -> None:
    cti = cti_via_relay
    desk = await Desk(cti, "agent1").login()
    await desk.connect()
    try:
        await log_in(pbx, sip, ["1001"], Answer(ring_ms=500, hangup_after_ms=4000))
        caller = call_in(sip, pbx, SUPPORT)
        await desk.next("pop.answered", timeout_s=30)
        relay.cut(for_s=10)  # the network goes; the agent hangs up 4 s into the call, unseen
        assert await finish(caller) == 0, caller.errors()
        await until_healthy(cti, within_s=30)
        [call] = await cti.customer_calls()
    finally:
        await desk.close()

    truth = queue_calls(pbx.queue_log)[call["linkedid"]]
    complete = next(
        e for e in parse_lines(pbx.queue_log.read_text().splitlines()) if e.verb.startswith("COMPLETE")
    )
    assert call["closed_by"] == "queue_log"
    assert call["outcome"] == "answered" and call["agent"] == "Agent 1001"
    assert call["hangup_by"] == "agent" == truth.completed_by
    assert close(call["talk_s"], truth.talk_s), (call["talk_s"], truth.talk_s)
    # Ended when Asterisk says it did, not when the daemon noticed (up to 10 s later).
    ended_at = call["ended_at"].timestamp()
    assert close(ended_at, complete.at, within=1.5), (ended_at, complete.at)
