"""Call controls through the REST API, on the simulated PBX (real AMI over a socket): an agent
transfers their call (attended to a colleague: the colleague gets the pop and the same ticket;
blind to a queue: the caller queues again), keys DTMF and hangs up; each control acts on the
agent's own channel only, found in Asterisk's own channel list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from cti.calls.controls import LiveChannel, Phone, TransferPlan, agent_call
from floor_pages import PASSWORD, Floor, answered_call, simulated_floor
from test_daemon import until


@asynccontextmanager
async def desk(floor: Floor, user: str) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession(base_url=floor.url) as http:
        async with http.post("/api/login", json={"username": user, "password": PASSWORD}) as r:
            token = (await r.json())["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


async def post(http: Any, path: str, body: Any, status: int = 200) -> dict[str, Any]:
    async with http.post(path, json=body) as r:
        data: dict[str, Any] = await r.json()
        assert r.status == status, data
        return data


def other_than(agent: str) -> str:
    return "agent3" if agent != "agent3" else "agent2"


async def test_attended_transfer_hands_the_call_and_its_ticket_to_the_colleague(tmp_path: Path) -> None:
    async with simulated_floor(tmp_path) as floor:
        linkedid, agent = await answered_call(floor)
        colleague = other_than(agent)
        tickets = floor.daemon.tickets
        await until(lambda: tickets.open_for_agent(agent), 10)
        [ticket] = await tickets.open_for_agent(agent)
        async with desk(floor, agent) as http:
            targets = await (await http.get("/api/agent/transfer-targets")).json()
            assert colleague in [c["username"] for c in targets["colleagues"]]
            assert agent not in [c["username"] for c in targets["colleagues"]]
            reply = await post(
                http,
                "/api/agent/call/transfer",
                {"mode": "attended", "target": {"kind": "agent", "value": colleague}},
            )
            assert reply["linkedid"] == linkedid and reply["channel"].startswith(f"Local/{agent}@agents-")
            assert reply["channel"].endswith(";1")  # the member leg, in the caller's bridge
            await until(
                lambda: len([c for c in floor.pbx.engine.core.channels.values() if colleague in c.name]) > 0
            )
            done = await post(http, "/api/agent/call/transfer/complete", {})
            assert done["channel"].endswith(";2")  # the phone hangs up: the transfer completes
        await until(lambda: floor.daemon.pops.calls["sim", linkedid].answered_by == colleague, 10)
        await until(lambda: tickets.open_for_agent(colleague), 10)
        [handed] = await tickets.open_for_agent(colleague)
        assert handed.id == ticket.id and await tickets.open_for_agent(agent) == []


async def test_blind_transfer_to_a_queue_dtmf_hangup_and_only_ones_own_call(tmp_path: Path) -> None:
    async with simulated_floor(tmp_path) as floor:
        linkedid, agent = await answered_call(floor)
        bystander = other_than(agent)
        async with desk(floor, bystander) as http:
            # Someone without a call controls nothing: there is no parameter naming another's.
            for path, body in [
                ("/api/agent/call/hangup", {}),
                ("/api/agent/call/dtmf", {"digits": "1"}),
                (
                    "/api/agent/call/transfer",
                    {"mode": "blind", "target": {"kind": "queue", "value": "sales"}},
                ),
            ]:
                assert (await post(http, path, body, 404))["error_id"] == "no-live-call"
        async with desk(floor, agent) as http:
            assert (await post(http, "/api/agent/call/dtmf", {"digits": "12#"}))["target"] == "12#"
            assert (await post(http, "/api/agent/call/dtmf", {"digits": "1;2"}, 400))[
                "error_id"
            ] == "bad-field"
            refused = await post(
                http,
                "/api/agent/call/transfer",
                {"mode": "blind", "target": {"kind": "agent", "value": agent}},
                404,
            )
            assert refused["error_id"] == "no-such-target"
            reply = await post(
                http,
                "/api/agent/call/transfer",
                {"mode": "blind", "target": {"kind": "queue", "value": "sales"}},
            )
            assert reply["target"] == "sales@to-queue"
            # The caller queues again in sales; another agent answers: the same call.
            await until(lambda: floor.daemon.pops.calls["sim", linkedid].queue == "sales", 10)
            await until(lambda: floor.daemon.pops.calls["sim", linkedid].answered_by not in (None, agent), 15)
            assert (await post(http, "/api/agent/call/hangup", {}, 404))["error_id"] == "no-live-call"
        second = floor.daemon.pops.calls["sim", linkedid].answered_by
        assert second is not None
        async with desk(floor, second) as http:
            hung_up = await post(http, "/api/agent/call/hangup", {})
            assert (hung_up["server"], hung_up["linkedid"]) == ("sim", linkedid)  # the call: both
        await until(lambda: ("sim", linkedid) not in floor.daemon.pops.calls, 10)


def test_the_agents_channels_are_found_by_their_phone_only() -> None:
    def ch(name: str, linkedid: str = "1.0", bridge: str = "b1", state: str = "Up") -> LiveChannel:
        return LiveChannel(name, name, linkedid, bridge, state, "")

    channels = [
        ch("PJSIP/trunk-00000001"),
        ch("PJSIP/1001-00000002"),
        ch("PJSIP/10010-00000003", "2.0"),  # another phone whose name starts the same way
        ch("Local/agent1@agents-00000004;1", "3.0"),
        ch("Local/agent1@agents-00000004;2", "3.0", ""),
    ]
    device = agent_call(channels, Phone(("PJSIP/1001",)))
    assert device is not None and device.member.name == device.phone.name == "PJSIP/1001-00000002"
    local = agent_call(channels, Phone(("Local/agent1@agents/n",)))
    assert local is not None
    assert (local.member.name, local.phone.name) == (
        "Local/agent1@agents-00000004;1",
        "Local/agent1@agents-00000004;2",
    )
    assert agent_call(channels, Phone(("PJSIP/1002",))) is None
    assert agent_call(channels, Phone(("PJSIP/1001",)), linkedid="3.0") is None
    plan = TransferPlan()
    assert plan.agent(Phone(("PJSIP/1003",))) == ("cti-agents", "1003")
    assert plan.agent(Phone(("Local/agent3@agents/n",))) == ("agents", "agent3")
    assert plan.queue("billing", Phone(("PJSIP/1001",))) == ("cti-agents", "803")
    assert plan.number("+33612345678", Phone(("PJSIP/1001",))) == ("cti-agents", "0612345678")
