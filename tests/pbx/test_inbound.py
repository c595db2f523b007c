"""Inbound calls on a real Asterisk: SVI → queue → agent, and the ways they end otherwise.

Each scenario drives real SIP phones (SIPp) against the shipped configuration, and checks what cti
stored and pushed against Asterisk's own queue_log for the same calls.
"""

from __future__ import annotations

from daemon import CtiDaemon, Desk
from floor import call_in, finish, log_in
from lab import Asterisk
from sipp import Answer, SipLab
from truth import close, queue_calls

SUPPORT = "1,1,1"  # French, then "problème technique", then "panne ou incident"


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

    [call] = [c for c in await cti.ended_calls(2) if c["caller_raw"] == "0612345678"]
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
