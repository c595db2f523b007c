"""An SVI call whose IVR steps go while the daemon is away, the call itself known from before.

`cti serve` sees a customer's call begin (the lab's customers are Originates of `Local/s@ivr`,
so the call looks like an Originate until its first IVR step), then misses the IVR: its AMI link
is cut, or it is stopped cleanly and started again. The caller chooses, queues and is answered
meanwhile; the daemon comes back and follows the rest live. The IVR steps are only in Asterisk's
records (CEL, written to PostgreSQL as the shipped asterisk-conf makes Asterisk do): the stored
call must hold them, and be the inbound `answered` call it was, not the `outbound_answered`
Originate it looked like (seen in tests/test_ha_takeover.py: a call that began as one node
stopped and ran its IVR before the other took the stream).

The simulator's clock is manual: each step of the call happens when the test says, with the
daemon connected or not.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from cti.sim.config import call_centre_config
from cti.sim.pbx import SimulatedPbx
from pbx.netcut import AmiRelay
from test_gap_kill import config_file, free_port, healthy, rows, serve
from test_gap_rebuild import records_url  # noqa: F401 - the fixture

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.timeout(120)]


def _events_received(port: int) -> int | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            links = json.load(response)["links"]
    except OSError:
        return None
    return int(links[0]["events_received"]) if links and links[0]["synced"] else None


async def caught_up(port: int) -> None:
    """The daemon has read all the (manual-clock) simulator sent: its count of events stays put."""
    last, steady = None, 0
    for _ in range(200):
        now = await asyncio.to_thread(_events_received, port)
        steady = steady + 1 if now is not None and now == last else 0
        if steady >= 4:
            return
        last = now
        await asyncio.sleep(0.1)
    raise AssertionError("the daemon never caught up with the simulator")


def stored(db: Path, linkedid: str) -> dict[str, Any] | None:
    query = (
        "SELECT outcome, direction, agent, closed_by, ivr_path,"
        " (SELECT queue FROM call_segments s WHERE s.call_id = c.id ORDER BY seq LIMIT 1)"
        f" FROM calls c WHERE linkedid = '{linkedid}'"
    )
    found = rows(db, query)
    if not found:
        return None
    names = ("outcome", "direction", "agent", "closed_by", "ivr_path", "queue")
    return dict(zip(names, found[0], strict=True))


async def until_stored(db: Path, linkedid: str) -> dict[str, Any]:
    for _ in range(300):
        call = await asyncio.to_thread(stored, db, linkedid)
        if call is not None and call["closed_by"] != "shutdown":
            return call
        await asyncio.sleep(0.1)
    raise AssertionError(f"{linkedid} never stored")


async def until_stored_as_shutdown(db: Path, linkedid: str) -> dict[str, Any]:
    call = await asyncio.to_thread(stored, db, linkedid)
    assert call is not None and call["closed_by"] == "shutdown", call
    return call


def ivr_of(call: dict[str, Any]) -> list[tuple[str, str]]:
    path = call["ivr_path"] if isinstance(call["ivr_path"], list) else json.loads(call["ivr_path"])
    return [(step["kind"], step["value"]) for step in path]


async def a_call_that_looks_originated(pbx: SimulatedPbx, web: int, steps_seen: int = 0) -> str:
    """A customer calls; the daemon sees it begin and the IVR answer (the Originate's response),
    and `steps_seen` of its IVR steps (Answer() waits half a second for media before the first)."""
    linkedid = pbx.inbound_call("+33612345678", digits="1", stay_s=120.0, talk_s=20.0)
    await pbx.advance(0.3)
    while len(pbx.truth.calls[linkedid].ivr_path) < steps_seen:
        await pbx.advance(0.05)
    await caught_up(web)
    assert len(pbx.truth.calls[linkedid].ivr_path) == steps_seen
    return linkedid


async def ivr_queue_and_answer(pbx: SimulatedPbx, linkedid: str) -> None:
    """Simulated time until an agent has answered the call (the IVR, the queue, the ring)."""
    for _ in range(60):
        await pbx.advance(0.5)
        if pbx.truth.calls[linkedid].agent is not None:
            return
    raise AssertionError("no agent answered")


async def followed_to_its_end(
    pbx: SimulatedPbx, web: int, process: asyncio.subprocess.Process, db: Path, linkedid: str
) -> dict[str, Any]:
    """The daemon back (reconnected, or started again) and caught up; the call run to its end
    and stored."""
    await healthy(web, process)
    await caught_up(web)
    await pbx.idle(timeout_s=120)
    return await until_stored(db, linkedid)


def check(call: dict[str, Any], pbx: SimulatedPbx, linkedid: str) -> None:
    truth = pbx.truth.calls[linkedid]
    assert truth.ivr_path and truth.outcome == "answered"
    assert (call["outcome"], call["direction"], call["agent"], call["queue"]) == (
        "answered",
        "inbound",
        truth.agent,
        truth.queue,
    )
    # The steps the daemon never saw, from Asterisk's records.
    assert ivr_of(call) == [("enter", "enter"), ("choice", "1")], call["ivr_path"]


@pytest.mark.parametrize("steps_seen", [0, 1], ids=["no-step-seen", "entry-seen"])
async def test_ivr_steps_during_an_ami_cut_come_from_the_records(
    tmp_path: Path,
    records_url: str,  # noqa: F811
    steps_seen: int,
) -> None:
    """Cut before the IVR's first step, or after it (the one seen live is not taken twice)."""
    db, log, web = tmp_path / "cti.db", tmp_path / "cti.log", free_port()
    async with SimulatedPbx(call_centre_config(4, speed=None, seed=3), records_url=records_url) as pbx:
        relay = AmiRelay(pbx.port)
        process = await serve(config_file(tmp_path, relay.port, web, db, records_url), log)
        try:
            await healthy(web, process)
            linkedid = await a_call_that_looks_originated(pbx, web, steps_seen)
            await asyncio.to_thread(relay.cut, 2.0)
            await ivr_queue_and_answer(pbx, linkedid)
            await asyncio.sleep(2.0)  # the relay's outage
            call = await followed_to_its_end(pbx, web, process, db, linkedid)
        finally:
            relay.close()
            process.kill()
            await process.wait()
    check(call, pbx, linkedid)


@pytest.mark.parametrize("steps_seen", [0, 1], ids=["no-step-seen", "entry-seen"])
async def test_ivr_steps_while_stopped_come_from_the_records(
    tmp_path: Path,
    records_url: str,  # noqa: F811
    steps_seen: int,
) -> None:
    """A clean stop stores the call in progress as it stood (with the step seen, if any); the
    restart takes it back."""
    db, log, web = tmp_path / "cti.db", tmp_path / "cti.log", free_port()
    async with SimulatedPbx(call_centre_config(4, speed=None, seed=3), records_url=records_url) as pbx:
        settings = config_file(tmp_path, pbx.port, web, db, records_url)
        process = await serve(settings, log)
        try:
            await healthy(web, process)
            linkedid = await a_call_that_looks_originated(pbx, web, steps_seen)
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
            as_stopped = await until_stored_as_shutdown(db, linkedid)
            assert len(ivr_of(as_stopped)) == steps_seen
            assert as_stopped["direction"] == ("outbound" if steps_seen == 0 else "inbound")
            await ivr_queue_and_answer(pbx, linkedid)
            process = await serve(settings, log)
            call = await followed_to_its_end(pbx, web, process, db, linkedid)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    check(call, pbx, linkedid)
