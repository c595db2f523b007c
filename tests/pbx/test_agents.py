"""Agents on a real Asterisk: logging in, pausing and out, by feature code and from the desktop."""

from __future__ import annotations

import asyncio
from typing import Any

from daemon import CtiDaemon, Desk
from floor import agent_password, finish, log_in, register
from lab import Asterisk
from sipp import Answer, SipLab
from truth import member_events


async def _agent(desk: Desk, interface: str, state: str, within_s: float = 10.0) -> dict[str, Any]:
    """The supervisor's live view of one agent, once it shows `state`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        live = await desk.get("/api/stats/live")
        row = next((a for a in live["agents"] if a["interface"] == interface), None)
        if (row and row["state"] == state) or asyncio.get_running_loop().time() > deadline:
            assert row is not None and row["state"] == state, (row, [a["interface"] for a in live["agents"]])
            return dict(row)
        await asyncio.sleep(0.2)


async def test_feature_codes_log_in_pause_resume_and_log_out(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    phone = (await log_in(pbx, sip, ["1001"]))["1001"]
    chef = desks["chef"]
    await _agent(chef, "PJSIP/1001", "available")
    assert await finish(phone.dial("*432")) == 0  # pause, reason 2: lunch
    paused = await _agent(chef, "PJSIP/1001", "paused")
    assert paused["reason"] == "lunch"
    assert await finish(phone.dial("*44")) == 0
    await _agent(chef, "PJSIP/1001", "available")
    assert await finish(phone.dial("*42")) == 0
    await _agent(chef, "PJSIP/1001", "logged_out")

    verbs = [(queue, verb, data[:1]) for queue, agent, verb, data in member_events(pbx.queue_log)]
    assert ("support", "ADDMEMBER", ("",)) in verbs or ("support", "ADDMEMBER", ()) in verbs
    assert ("support", "PAUSE", ("lunch",)) in verbs and ("hotline", "PAUSE", ("lunch",)) in verbs
    assert ("support", "UNPAUSE", ("",)) in verbs and ("support", "REMOVEMEMBER", ("",)) in verbs
    # An agent's own calls to feature codes are not customer calls.
    calls = await cti.ended_calls(4)
    assert {c["direction"] for c in calls} == {"internal"} and len(calls) == 4


async def test_desktop_logs_in_pauses_and_logs_out_through_ami(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    await register(sip, "1002")
    agent, chef = desks["agent2"], desks["chef"]
    await agent.post("/api/agent/queues/sales/login")
    row = await _agent(chef, "PJSIP/1002", "available")
    await agent.post("/api/agent/pause", {"paused": True, "reason": "training"})
    assert (await _agent(chef, "PJSIP/1002", "paused"))["reason"] == "training"
    await agent.post("/api/agent/pause", {"paused": False})
    await _agent(chef, "PJSIP/1002", "available")
    await agent.post("/api/agent/queues/sales/logout")
    await _agent(chef, "PJSIP/1002", "logged_out")
    events = [(queue, name, verb) for queue, name, verb, _ in member_events(pbx.queue_log)]
    # The same member name as the *41 feature code gives: queue_log and reports show one agent.
    assert ("sales", "Agent 1002", "ADDMEMBER") in events and (
        "sales",
        "Agent 1002",
        "REMOVEMEMBER",
    ) in events
    assert row["agent"] == "Agent 1002"
    assert "PJSIP/1002" not in pbx.cli("queue show sales")


async def test_feature_code_from_a_channel_that_is_no_phone_adds_no_member(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon
) -> None:
    # What an Originate into the feature code, or a misrouted Local channel, does with *41: the
    # agent's queues are there (as a phone's set_var would give them), the phone is not.
    response = pbx.ami(
        "Originate", Channel="Local/*41@cti-agents", Application="Wait", Data="1",
        Variable="CTI_AGENT_QUEUES=support&hotline",
    )  # fmt: skip
    assert "Success" in response, response
    await asyncio.sleep(3)
    for queue in ("support", "hotline", "sales"):
        assert "PJSIP/)" not in pbx.cli(f"queue show {queue}") and "Agent  (" not in pbx.cli(
            f"queue show {queue}"
        )
    assert not [e for e in member_events(pbx.queue_log) if e[2] == "ADDMEMBER"]


async def test_static_member_whose_phone_is_not_registered_is_unreachable_not_connected(
    pbx: Asterisk, sip: SipLab, cti: CtiDaemon, desks: dict[str, Desk]
) -> None:
    # escalation has a static member, PJSIP/1006 (queues.conf); its phone never registered.
    assert "PJSIP/1006" in pbx.cli("queue show escalation")
    row = await _agent(desks["chef"], "PJSIP/1006", "unavailable")
    assert row["reason"] is None
    # Once the phone registers, Asterisk says so and the supervisor sees the agent free.
    await register(sip, "1006", Answer())
    await _agent(desks["chef"], "PJSIP/1006", "available", within_s=15)
    assert agent_password("1006") == "lab-1006-change-me"
