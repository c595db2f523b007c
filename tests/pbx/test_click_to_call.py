"""Click-to-call on a real Asterisk: `POST /api/agent/call` rings the agent's phone first, then
the customer's number is dialled through the shipped `cti-click-to-call` and the test trunk.

What cti stored (the call record: the number called, when the customer answered, how long they
talked, who hung up) and reported (`cti stats --report outbound`: a call of no campaign, never a
dialer drop) is checked against the phones' own account: the INVITEs the agent's phone and the
SIPp "PSTN" received and when each sent its 200 OK.
"""

from __future__ import annotations

import json

import pytest
from daemon import CtiDaemon, Desk
from floor import answered_at, logged_messages, received_invites, register
from lab import Asterisk
from sipp import Answer, SipLab
from truth import close

CLI = "+33187654321"  # CTI_OUTBOUND_CLI: what the customer sees
CUSTOMER = "+33612345678"


@pytest.mark.parametrize("hangs_up", ["customer", "agent"])
async def test_click_to_call_rings_the_agent_then_dials_the_customer(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk], hangs_up: str
) -> None:
    talk_ms = 5000
    customer_hangs_up = hangs_up == "customer"
    hanger = "pstn" if customer_hangs_up else "phone-1001"
    sip.answer_pstn(
        pbx.ports.pstn, Answer(ring_ms=1000, hangup_after_ms=talk_ms if customer_hangs_up else None)
    )
    # No queue login: any registered agent phone can call out. The agent picks up after 1 s.
    await register(sip, "1001", Answer(ring_ms=1000, hangup_after_ms=None if customer_hangs_up else talk_ms))

    reply = await desks["agent1"].post("/api/agent/call", {"number": "06 12 34 56 78"}, status=202)
    assert reply["dialing"] == CUSTOMER and reply["action_id"].startswith("cti-click-")

    [call] = [c for c in await cti.ended_calls(1, within_s=30) if c["direction"] == "outbound"]
    [to_agent] = received_invites(sip, "phone-1001")
    [to_customer] = received_invites(sip, "pstn")
    # The agent's phone rang first, showing whom they are about to call...
    assert to_agent.user == "1001" and to_agent.from_user == CUSTOMER
    agent_answer = answered_at(sip, "phone-1001")[0]
    # ...then, once they answered, the customer was dialled with the centre's caller ID.
    assert agent_answer <= to_customer.at
    assert (to_customer.user, to_customer.from_user) == (CUSTOMER, CLI)
    customer_answer = answered_at(sip, "pstn")[0]

    assert (call["called"], call["campaign"], call["outcome"]) == (CUSTOMER, None, "outbound_answered")
    assert call["agent_interface"] == "PJSIP/1001" and call["queue"] is None
    # The conversation is the customer's: from their answer (not the agent's, 1 s earlier).
    assert close(call["answered_at"].timestamp(), customer_answer, 0.3), (
        call["answered_at"],
        customer_answer,
    )
    # Until the first BYE, as the phone that hung up sent it.
    [bye] = [
        at for at, way, lines in logged_messages(sip, hanger) if way == "sent" and lines[0].startswith("BYE ")
    ]
    assert close(call["talk_s"], bye - customer_answer, 0.3), (call["talk_s"], bye - customer_answer)
    assert call["hangup_by"] == ("caller" if customer_hangs_up else "agent")

    report = json.loads(cti.cli("stats", "--report", "outbound", "--format", "json"))
    [row] = report["totals"]
    # A call of no campaign: an outbound attempt the callee answered, never a dialer drop.
    assert (row["campaign"], row["kind"]) == (None, "manual")
    assert (row["attempts"], row["connects"], row["dropped"], row["drop_rate"]) == (1, 1, 0, None)
    assert report["overall"]["attempts"] == 0  # the campaigns' own figures
    assert report["manual"]["attempts"] == 1
