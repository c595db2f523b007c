"""Inbound calls on a real Asterisk: SVI → queue → agent, and the ways they end otherwise.

Each scenario drives real SIP phones (SIPp) against the shipped configuration, and checks what cti
stored and pushed against Asterisk's own queue_log for the same calls.
"""

from __future__ import annotations

import json

import pytest
from daemon import CtiDaemon, Desk
from floor import call_in, finish, log_in
from lab import Asterisk
from sipp import Answer, SipLab
from truth import agrees_with_cdr, close, queue_calls

SUPPORT = "1,1,1"  # French, then "problème technique", then "panne ou incident"


@pytest.mark.external  # also against the compose lab (CTI_PBX_EXTERNAL)
async def test_svi_queue_answer_pops_opens_ticket_and_matches_queue_log(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    cti.cli("customers", "import", "/dev/stdin", stdin="name,phone\nJeanne Martin,06 12 34 56 78\n")
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=1000))
    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=7000)

    desk = desks["agent1"]
    pop = (await desk.next("pop", timeout_s=30))["pop"]
    assert pop["caller"]["e164"] == "+33612345678"
    assert pop["queue"] == "support"
    if pop["customer"]["status"] == "pending":  # the lookup answered after the pop went out
        pop = (await desk.next("pop.update"))["pop"]
    assert pop["customer"]["status"] == "found"
    assert [c["name"] for c in pop["customer"]["customers"]] == ["Jeanne Martin"]
    answered = await desk.next("pop.answered")
    assert answered["pop"]["state"] == "answered"
    ticket = (await desk.next("ticket"))["ticket"]
    assert (ticket["agent"], ticket["status"], ticket["queue"]) == ("agent1", "open", "support")
    # One customer matches: the ticket is theirs without the agent having to pick.
    assert ticket["customer_id"] == pop["customer"]["customers"][0]["id"]
    assert await finish(caller) == 0, caller.errors()

    [call] = await cti.customer_calls()
    assert call["outcome"] == "answered" and call["queue"] == "support"
    assert call["agent"] == "Agent 1001" and call["agent_interface"] == "PJSIP/1001"
    assert call["hangup_by"] == "caller"
    assert [(s["menu"], s["kind"], s["value"]) for s in call["ivr_path"]] == [
        ("language", "enter", "enter"), ("language", "choice", "1"), ("main", "enter", "enter"),
        ("main", "choice", "1"), ("support", "enter", "enter"), ("support", "choice", "1"),
    ]  # fmt: skip
    truth = queue_calls(pbx.queue_log)[call["linkedid"]]
    assert truth.outcome == "answered" and truth.agent == "Agent 1001" and truth.completed_by == "caller"
    assert close(call["wait_s"], truth.wait_s), (call["wait_s"], truth.wait_s)
    assert close(call["talk_s"], truth.talk_s), (call["talk_s"], truth.talk_s)
    assert agrees_with_cdr(call, pbx.cdr_rows()) == []
    # The history report reads the same stored call: one presented, one answered, its wait.
    report = json.loads(cti.cli("stats", "--format", "json", "--interval", "day"))
    support = next(t for t in report["totals"] if t["queue"] == "support")
    assert (support["presented"], support["answered"], support["abandoned"]) == (1, 1, 0)
    assert close(support["asa_s"], truth.wait_s), support


async def test_caller_hangs_up_in_queue_is_an_abandon_and_the_pop_is_withdrawn(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    await log_in(pbx, sip, ["1001"], Answer(never_answer=True))
    caller = call_in(sip, pbx, SUPPORT, hangup_after_ms=4000)
    desk = desks["agent1"]
    await desk.next("pop", timeout_s=30)
    withdrawn = await desk.next("pop.withdraw", timeout_s=30)
    assert withdrawn["reason"] == "caller_left"
    assert await finish(caller) == 0, caller.errors()

    [call] = await cti.customer_calls()
    truth = queue_calls(pbx.queue_log)[call["linkedid"]]
    assert truth.outcome == "abandoned"
    assert call["outcome"] == "abandoned" and call["hangup_by"] == "caller" and call["agent"] is None
    assert close(call["wait_s"], truth.wait_s), (call["wait_s"], truth.wait_s)
    report = json.loads(cti.cli("stats", "--format", "json", "--interval", "day"))
    support = next(t for t in report["totals"] if t["queue"] == "support")
    assert (support["presented"], support["answered"], support["abandoned"]) == (1, 0, 1)


@pytest.mark.external  # also against the compose lab (CTI_PBX_EXTERNAL)
async def test_ivr_only_call_never_reaches_a_queue(pbx: Asterisk, sip: SipLab, cti: CtiDaemon) -> None:
    # French, then "horaires et adresse" (an information message), then hang up in the menu.
    caller = call_in(sip, pbx, "1,4", hangup_after_ms=1500)
    assert await finish(caller) == 0, caller.errors()
    [call] = await cti.ended_calls(1)
    assert call["outcome"] == "ivr_only" and call["segments"] == [] and call["hangup_by"] == "caller"
    assert ("main", "choice", "4") in [(s["menu"], s["kind"], s["value"]) for s in call["ivr_path"]]
    assert call["linkedid"] not in queue_calls(pbx.queue_log)
    assert agrees_with_cdr(call, pbx.cdr_rows()) == []


async def test_ivr_invalid_key_and_silence_count_then_fallback_to_hotline(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    await log_in(pbx, sip, ["1001"], Answer(ring_ms=500, hangup_after_ms=2000))
    # French; in the main menu: 7 (no such choice), then nothing for 6 s, then 8: three misses.
    caller = call_in(sip, pbx, "1,7,,,,,,,,8")
    await desks["agent1"].next("pop", timeout_s=40)
    assert await finish(caller) == 0, caller.errors()
    [call] = await cti.customer_calls()
    steps = [(s["menu"], s["kind"], s["value"]) for s in call["ivr_path"]]
    assert ("main", "invalid", "7") in steps and ("main", "timeout", "yes") in steps
    assert ("main", "invalid", "8") in steps and steps[-1] == ("main", "step", "fallback")
    assert call["queue"] == "hotline" and call["outcome"] == "answered" and call["hangup_by"] == "agent"
    stats = await desks["chef"].get("/api/stats/live")
    main = next(node for node in stats["ivr"]["menus"] if node["menu"] == "main")
    assert (main["invalid"], main["timeouts"]) == (2, 1), main


async def test_queue_timeout_is_not_an_abandon(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    # The longest wait is a global: set at run time as an admin would (no config edit).
    pbx.cli("dialplan set global CTI_QUEUE_TIMEOUT 6")
    await log_in(pbx, sip, ["1001"], Answer(never_answer=True))
    caller = call_in(sip, pbx, SUPPORT)  # waits for the PBX to hang up
    await desks["agent1"].next("pop", timeout_s=30)
    assert await finish(caller) == 0, caller.errors()
    [call] = await cti.customer_calls()
    truth = queue_calls(pbx.queue_log)[call["linkedid"]]
    assert truth.outcome == "timeout"
    assert call["outcome"] == "timeout" and call["hangup_by"] == "system"
    assert close(call["wait_s"], truth.wait_s), (call["wait_s"], truth.wait_s)
