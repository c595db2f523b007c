"""Call controls from the desktop on a real Asterisk 22 (the shipped dialplan and features.conf):
an attended transfer from the agent's own channel (Atxfer on PJSIP/1001-...), completed by the
transferer leaving, hands the caller and the same ticket to the colleague; cancelled
(CancelAtxfer), the agent is back with the caller; DTMF and hang-up act on the agent's phone.

What cti did is checked against what the phones saw (SIPp's logs) and Asterisk's queue_log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from daemon import PASSWORD, CtiDaemon, Desk
from floor import answered_at, call_in, finish, log_in, logged_messages, register
from lab import Asterisk
from sipp import Answer, SipLab
from truth import queue_calls

SUPPORT = "1,1,1"  # French, then "problème technique", then "panne ou incident"


async def until(predicate: Callable[[], object], within_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


def byes_received(sip: SipLab, stem: str) -> int:
    return sum(
        1 for _, way, lines in logged_messages(sip, stem) if way == "received" and lines[0].startswith("BYE ")
    )


async def test_attended_transfer_from_the_desktop_hands_caller_and_ticket_to_the_colleague(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=500))
    await register(sip, "1002", Answer(ring_ms=800))  # not in any queue: reached by its extension
    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=25_000)
    agent, colleague = desks["agent1"], desks["agent2"]
    answered = await agent.next("pop.answered", timeout_s=30)
    linkedid = answered["pop"]["linkedid"]
    ticket = (await agent.next("ticket"))["ticket"]
    # Someone else's call is out of reach: agent2 has none, whatever they send.
    refused = await colleague.post("/api/agent/call/hangup", {}, status=404)
    assert refused["error_id"] == "no-live-call"

    reply = await agent.post(
        "/api/agent/call/transfer", {"mode": "attended", "target": {"kind": "agent", "value": "agent2"}}
    )
    assert reply["linkedid"] == linkedid and reply["channel"].startswith("PJSIP/1001-")
    assert reply["target"] == "1002@cti-agents"
    # The consultation leg rings the colleague's phone, who picks up; then the agent completes.
    await until(lambda: answered_at(sip, "phone-1002"))
    done = await agent.post("/api/agent/call/transfer/complete", {})
    assert done["channel"].startswith("PJSIP/1001-")

    handed = await colleague.next("pop.answered", timeout_s=20)
    assert handed["pop"]["linkedid"] == linkedid
    assert (await agent.next("pop.transferred"))["linkedid"] == linkedid
    moved = (await colleague.next("ticket"))["ticket"]
    assert (moved["id"], moved["agent"]) == (ticket["id"], "agent2")
    assert await finish(caller) == 0, caller.errors()

    [call] = await cti.customer_calls()
    assert call["linkedid"] == linkedid and call["transfers"] == 1
    assert call["transferred_to"] == ["PJSIP/1002"]
    truth = queue_calls(pbx.queue_log)[linkedid]
    assert truth.agent == "Agent 1001" and "ATTENDEDTRANSFER" in truth.verbs


async def test_cancelled_consultation_dtmf_and_hang_up_from_the_desktop(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=500))
    await register(sip, "1002", Answer(ring_ms=800))
    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=40_000)
    agent = desks["agent1"]
    linkedid = (await agent.next("pop.answered", timeout_s=30))["pop"]["linkedid"]

    await agent.post(
        "/api/agent/call/transfer", {"mode": "attended", "target": {"kind": "agent", "value": "agent2"}}
    )
    await until(lambda: answered_at(sip, "phone-1002"))
    cancelled = await agent.post("/api/agent/call/transfer/cancel", {})
    assert cancelled["linkedid"] == linkedid
    # The colleague's leg is hung up; the agent is back with the caller (the call goes on).
    await until(lambda: byes_received(sip, "phone-1002") >= 1)
    assert (await agent.post("/api/agent/call/dtmf", {"digits": "1#"}))["target"] == "1#"
    await asyncio.sleep(1.0)
    hung = await agent.post("/api/agent/call/hangup", {})
    assert hung["linkedid"] == linkedid and hung["channel"].startswith("PJSIP/1001-")
    assert await finish(caller) == 0, caller.errors()
    [call] = await cti.customer_calls()
    assert call["transfers"] == 0
    # The desktop's hang-up ended the call, long before the caller's own 40 s. (Who hung up:
    # Asterisk reports a manager Hangup with no HangupRequest on the agent's channel, only the
    # bridge's SoftHangupRequest on the trunk, which the tracker reads as the caller's.)
    assert call["talk_s"] < 20, call["talk_s"]
    assert call["agent_interface"] == "PJSIP/1001"


async def test_a_supervisor_listens_to_an_agents_call_from_their_own_phone(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    # The supervisor's phone is 1006 (a device mapped to them, as `cti users add --device` does).
    cti.cli(
        "users", "add", "chef", "--role", "supervisor", "--device", "PJSIP/1006", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    await register(sip, "1006", Answer(ring_ms=300))
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=500))
    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=15_000)
    await desks["agent1"].next("pop.answered", timeout_s=30)
    chef = await Desk(cti, "chef").login()
    try:
        refused = await desks["agent2"].post(
            "/api/floor/spy", {"interface": "PJSIP/1001", "mode": "listen"}, 403
        )
        assert refused["error_id"] == "forbidden"
        reply = await chef.post("/api/floor/spy", {"interface": "PJSIP/1001", "mode": "listen"}, status=202)
        assert reply["from_device"] == "PJSIP/1006" and reply["action_id"].startswith("cti-spy-")
        # The Originate reached the PBX: the supervisor's phone rings, answers, and ChanSpy
        # spies on the agent's channel.
        await until(lambda: answered_at(sip, "phone-1006"))
        full = pbx.log_dir / "full.log"
        await until(lambda: "Spying on channel PJSIP/1001-" in full.read_text(errors="replace"))
    finally:
        await chef.close()
    assert await finish(caller) == 0, caller.errors()
