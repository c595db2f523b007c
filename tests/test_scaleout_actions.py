"""Actions to the right PBX from whichever node (issue 20, item 5; docs/scale-out.md, "Actions to
the right PBX"): two `cti serve` processes with `[ha]` and `[bus]` on one PostgreSQL database
(of this test's own) and the real NATS JetStream; one simulated PBX whose stream node A owns
(node B stands by for it, so its own AMI link is down). Every action the simulator's manager
handles is recorded.

The agent logs in on node B and pauses, unpauses, hangs up two answered calls (the call
control, which lists Asterisk's channels first, and the plain hang-up), clicks to call; a
supervisor on B listens to them. The simulator receives each action exactly once, through node
A, and B's HTTP answers are the ones a single daemon gives. Node A frozen (SIGSTOP): B's next
action is a 503 `owner-unreachable` within the action's timeout plus `[bus] timeout_s`; thawed,
A does not send the action B already answered for; the next one goes through again.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cti.ami.message import Message
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.sim.config import call_centre_config
from cti.sim.pbx import SimulatedPbx
from cti.web.auth import UserStore
from test_bus_jetstream import NATS_URL, _nats_up
from test_daemon import until
from test_gap_kill import free_port
from test_scaleout_desk import PASSWORD, answering, bearer, delete_stream, frame, health, login, serve
from test_stream_lease import pg_url  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes"),
    pytest.mark.timeout(240),
]
AGENT = "Local/agent1@agents/n"
ACTION_TIMEOUT_S = 2.0  # [[asterisk]] action_timeout_s
BUS_TIMEOUT_S = 1.0  # [bus] timeout_s


def config(tmp_path: Path, name: str, url: str, ami_port: int, web_port: int, tag: str) -> Path:
    """Both nodes list the sim; a lease long enough that B never takes it over while A is frozen."""
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[ha]\nenabled = true\nnode = "{name}-{tag}"\nlease_s = 15.0\n'
        f'[[asterisk]]\nname = "sim"\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "cti"\n'
        f"keepalive_s = 1.0\nreconnect_cap_s = 0.5\naction_timeout_s = {ACTION_TIMEOUT_S}\n"
        f'[database]\nurl = "{url}"\nflush_interval_s = 0.05\n'
        f'[web]\nport = {web_port}\nsecret = "shared-secret-of-the-floor-{tag}"\n'
        f'metrics_token = "scrape-{tag}"\n'
        f'[bus]\nnats_url = "{NATS_URL}"\nnode = "{name}-{tag}"\nstream = "CTI_TEST_{tag}"\n'
        f'subject_prefix = "cti-test-{tag}"\naction_prefix = "cti-test-actions-{tag}"\n'
        f"timeout_s = {BUS_TIMEOUT_S}\n"
        f'[dialer]\nenabled = false\n[log]\nformat = "json"\nlevel = "info"\n',
        encoding="utf-8",
    )
    return path


async def relay_metrics(session: aiohttp.ClientSession, port: int, tag: str) -> dict[str, float]:
    scrape = {"Authorization": f"Bearer scrape-{tag}"}
    async with session.get(f"http://127.0.0.1:{port}/metrics", headers=scrape) as r:
        assert r.status == 200
        lines = (await r.text()).splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("cti_relay_")}


def recorded(pbx: SimulatedPbx) -> list[Message]:
    """Every action the PBX's manager handles, in order."""
    seen: list[Message] = []
    handle = pbx.manager.handle

    def recording(session: Any, action: Message) -> None:
        seen.append(action)
        handle(session, action)

    pbx.manager.handle = recording  # type: ignore[method-assign]
    return seen


def named(actions: list[Message], name: str) -> list[Message]:
    return [a for a in actions if a.get("Action", "").lower() == name.lower()]


async def post(
    session: aiohttp.ClientSession, port: int, path: str, token: str, body: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"http://127.0.0.1:{port}{path}", json=body, headers=bearer(token)) as r:
        return r.status, dict(await r.json())


async def test_an_agent_on_the_standby_node_acts_on_the_pbx_its_owner_tracks(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    engine = create_engine(pg_url)
    await upgrade_async(engine)
    users = UserStore(engine)
    await users.add("agent1", PASSWORD, "agent", "Agent One", "fr", [AGENT], [AGENT])
    await users.add("sup", PASSWORD, "supervisor", "Sup", "fr", [], ["PJSIP/9001"])
    await engine.dispose()
    sim = call_centre_config(1, speed=4.0, seed=7)
    try:
        async with SimulatedPbx(sim) as pbx, aiohttp.ClientSession() as session:
            actions = recorded(pbx)
            async with serve(
                config(tmp_path, "node-a", pg_url, pbx.port, port_a, tag), tmp_path / "a.log"
            ) as a:
                await answering(session, port_a, a, "ok")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                while (await health(session, port_a))["links"][0].get("role") != "owner":
                    assert loop.time() < deadline, "node A never owned the stream"
                    await asyncio.sleep(0.1)
                conf_b = config(tmp_path, "node-b", pg_url, pbx.port, port_b, tag)
                async with serve(conf_b, tmp_path / "b.log") as b:
                    await answering(session, port_b, b, "ok")
                    assert (await health(session, port_b))["links"][0]["role"] == "standby"
                    await _act_through_node_a(session, pbx, actions, port_b)
                    await _owner_frozen(session, actions, a, port_b)
                    # Every action B asked for was sent by A but the one it got too late.
                    asked, served = (
                        await relay_metrics(session, port_b, tag),
                        await relay_metrics(session, port_a, tag),
                    )
                    assert asked["cti_relay_asked_total"] >= 14 and asked["cti_relay_unreachable_total"] == 1
                    assert served["cti_relay_served_total"] == asked["cti_relay_asked_total"] - 1
                    assert served["cti_relay_expired_total"] == 1
                    assert served["cti_relay_asked_total"] == asked["cti_relay_served_total"] == 0
    finally:
        await delete_stream(tag)


async def _act_through_node_a(
    session: aiohttp.ClientSession, pbx: SimulatedPbx, actions: list[Message], port_b: int
) -> None:
    token = await login(session, port_b, "agent1")
    member = next(m for m in pbx.engine.queues.members_of(AGENT))

    # Pause, unpause: one QueuePause each, the answers as from one daemon.
    assert await post(session, port_b, "/api/agent/pause", token, {"paused": True, "reason": "lunch"}) == (
        200,
        {"paused": True, "reason": "lunch"},
    )
    assert [(p["Interface"], p["Paused"], p["Reason"]) for p in named(actions, "QueuePause")] == [
        (AGENT, "true", "lunch")
    ]
    assert member.paused and member.paused_reason == "lunch"
    status, body = await post(session, port_b, "/api/agent/pause", token, {"paused": False})
    assert (status, body["paused"]) == (200, False)
    assert [p["Paused"] for p in named(actions, "QueuePause")] == ["true", "false"]
    assert not member.paused

    # Out of the support queue and back in: one QueueRemove, one QueueAdd.
    status, body = await post(session, port_b, "/api/agent/queues/support/logout", token, None)
    assert (status, body) == (200, {"queue": "support", "logged_in": False}), body
    status, body = await post(session, port_b, "/api/agent/queues/support/login", token, None)
    assert (status, body) == (200, {"queue": "support", "logged_in": True}), body
    assert [(a["Queue"], a["Interface"]) for a in named(actions, "QueueRemove")] == [("support", AGENT)]
    assert [(a["Queue"], a["Interface"], a["MemberName"]) for a in named(actions, "QueueAdd")] == [
        ("support", AGENT, "Agent One")
    ]

    # Hang up an answered call with the call control: Asterisk's channels listed through A, then
    # one Hangup of the agent's own channel.
    ws = await session.ws_connect(f"http://127.0.0.1:{port_b}/ws", headers=bearer(token))
    await frame(ws, "state")
    first = pbx.inbound_call("+33612345678", "Jean Dupont", digits="1", talk_s=60.0)
    await frame(ws, "ticket", ticket__linkedid=first)  # answered: A's ticket reaches B
    status, body = await post(session, port_b, "/api/agent/call/hangup", token, {})
    assert status == 200, body
    assert (
        body["action"] == "hangup"
        and body["linkedid"] == first
        and body["channel"].startswith("Local/agent1@")
    )
    [hangup] = named(actions, "Hangup")
    assert hangup["Channel"] == body["channel"]
    await until(lambda: not pbx.engine.core.channels, 30)

    # The plain hang-up of the agent's phone's calls.
    second = pbx.inbound_call("+33698765432", "Marie Curie", digits="1", talk_s=60.0)
    await frame(ws, "ticket", ticket__linkedid=second)
    assert await post(session, port_b, "/api/agent/hangup", token, {}) == (200, {"ok": True})
    assert [h["Channel"] for h in named(actions, "Hangup")][1] == "/^Local/agent1@agents-/"
    await until(lambda: not pbx.engine.core.channels, 30)
    await ws.close()

    # Nothing to hang up: Asterisk's refusal, relayed, is the 409 one daemon answers.
    status, body = await post(session, port_b, "/api/agent/hangup", token, {})
    assert (status, body["error_id"]) == (409, "no-live-call"), body
    assert len(named(actions, "Hangup")) == 3

    # Click-to-call: one Originate of the agent's phone into the click-to-call context.
    status, body = await post(session, port_b, "/api/agent/call", token, {"number": "06 12 34 56 78"})
    assert status == 202 and body["dialing"] == "+33612345678", body
    [originate] = named(actions, "Originate")
    assert (originate["Channel"], originate["Context"], originate["ActionID"]) == (
        AGENT,
        "cti-click-to-call",
        body["action_id"],
    )
    assert originate["Variable"] == "CTI_DIAL=+33612345678"

    # A supervisor on B listens to the agent: one ChanSpy Originate from the supervisor's phone.
    sup = await login(session, port_b, "sup")
    status, body = await post(session, port_b, "/api/floor/spy", sup, {"interface": AGENT, "mode": "listen"})
    assert status == 202, body
    spy = named(actions, "Originate")[1]
    assert (spy["Channel"], spy["Application"], spy["Data"]) == (
        "PJSIP/9001",
        "ChanSpy",
        "Local/agent1@agents-,qE",
    )
    # An agent may not: the object rules are the receiving node's, as before.
    status, body = await post(
        session, port_b, "/api/floor/spy", token, {"interface": AGENT, "mode": "listen"}
    )
    assert status == 403 and len(named(actions, "Originate")) == 2
    # The supervisor logs the agent out of every queue: Asterisk's list of the agent's queues
    # (QueueStatus, a list action) read through A, then one QueueRemove per queue.
    removed = len(named(actions, "QueueRemove"))
    status, body = await post(session, port_b, "/api/floor/logout", sup, {"interface": AGENT})
    assert status == 200 and "support" in body["queues"], body
    assert [a["Queue"] for a in named(actions, "QueueRemove")[removed:]] == body["queues"]
    status, body = await post(session, port_b, "/api/agent/queues/support/login", token, None)
    assert status == 200 and len(named(actions, "QueueAdd")) == 2, body


async def _owner_frozen(session: aiohttp.ClientSession, actions: list[Message], a: Any, port_b: int) -> None:
    token = await login(session, port_b, "agent1")
    sent = len(named(actions, "QueuePause"))
    loop = asyncio.get_running_loop()
    a.send_signal(signal.SIGSTOP)
    try:
        started = loop.time()
        status, body = await post(session, port_b, "/api/agent/pause", token, {"paused": True})
        waited = loop.time() - started
        assert (status, body["error_id"]) == (503, "owner-unreachable"), body
        # Bounded: the action's timeout plus [bus] timeout_s (3 s), with slack for a loaded box.
        assert waited < 30, waited
        await asyncio.sleep(1.0)
    finally:
        a.send_signal(signal.SIGCONT)
    # Thawed, A reads B's request: too old to be started, it is not sent.
    await asyncio.sleep(3.0)
    assert len(named(actions, "QueuePause")) == sent
    assert (await health(session, port_b))["links"][0]["role"] == "standby"
    status, body = await post(session, port_b, "/api/agent/pause", token, {"paused": True})
    assert status == 200, body
    assert len(named(actions, "QueuePause")) == sent + 1


def two_sites_config(
    tmp_path: Path, name: str, url: str, paris: int, lyon: int, web_port: int, tag: str
) -> Path:
    """Both nodes list both PBXs, each with the patterns of its agents' phones."""
    servers = "".join(
        f'[[asterisk]]\nname = "{site}"\nhost = "127.0.0.1"\nport = {port}\nusername = "cti"\n'
        f'secret = "ctisecret"\nkeepalive_s = 1.0\nreconnect_cap_s = 0.5\n'
        f"action_timeout_s = {ACTION_TIMEOUT_S}\nphones = {phones}\n"
        for site, port, phones in (
            ("paris", paris, '["Local/agent1@agents/n", "Local/agent2@agents/n"]'),
            ("lyon", lyon, '["Local/agent2?@agents/n"]'),
        )
    )
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[ha]\nenabled = true\nnode = "{name}-{tag}"\nlease_s = 15.0\n'
        + servers
        + f'[database]\nurl = "{url}"\nflush_interval_s = 0.05\n'
        f'[web]\nport = {web_port}\nsecret = "shared-secret-of-the-floor-{tag}"\n'
        f'[bus]\nnats_url = "{NATS_URL}"\nnode = "{name}-{tag}"\nstream = "CTI_TEST_{tag}"\n'
        f'subject_prefix = "cti-test-{tag}"\naction_prefix = "cti-test-actions-{tag}"\n'
        f"timeout_s = {BUS_TIMEOUT_S}\n"
        f'[dialer]\nenabled = false\n[log]\nformat = "json"\nlevel = "info"\n',
        encoding="utf-8",
    )
    return path


async def test_a_node_that_tracks_no_pbx_routes_by_the_configured_phones(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """Two PBXs, both owned by node A; node B owns neither, so its trackers know no phone: the
    `phones` patterns place each agent, and each action reaches that PBX only, through A."""
    from test_two_pbxs import interface, site

    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    engine = create_engine(pg_url)
    await upgrade_async(engine)
    users = UserStore(engine)
    for agent in ("agent1", "agent21"):
        await users.add(agent, PASSWORD, "agent", agent, "fr", [interface(agent)], [interface(agent)])
    await engine.dispose()
    try:
        async with (
            SimulatedPbx(site(("agent1", "agent2"))) as paris,
            SimulatedPbx(site(("agent21", "agent22"))) as lyon,
            aiohttp.ClientSession() as session,
        ):
            at_paris, at_lyon = recorded(paris), recorded(lyon)
            conf_a = two_sites_config(tmp_path, "node-a", pg_url, paris.port, lyon.port, port_a, tag)
            async with serve(conf_a, tmp_path / "a.log") as a:
                await answering(session, port_a, a, "ok")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                while {link.get("role") for link in (await health(session, port_a))["links"]} != {"owner"}:
                    assert loop.time() < deadline, "node A never owned both streams"
                    await asyncio.sleep(0.1)
                conf_b = two_sites_config(tmp_path, "node-b", pg_url, paris.port, lyon.port, port_b, tag)
                async with serve(conf_b, tmp_path / "b.log") as b:
                    await answering(session, port_b, b, "ok")
                    roles = {
                        link["server"]: link["role"] for link in (await health(session, port_b))["links"]
                    }
                    assert roles == {"paris": "standby", "lyon": "standby"}

                    lyon_agent = await login(session, port_b, "agent21")
                    status, body = await post(
                        session, port_b, "/api/agent/pause", lyon_agent, {"paused": True}
                    )
                    assert status == 200, body
                    assert [p["Interface"] for p in named(at_lyon, "QueuePause")] == [interface("agent21")]
                    assert named(at_paris, "QueuePause") == []

                    paris_agent = await login(session, port_b, "agent1")
                    status, body = await post(
                        session, port_b, "/api/agent/call", paris_agent, {"number": "0612345678"}
                    )
                    assert status == 202, body
                    assert [o["Channel"] for o in named(at_paris, "Originate")] == [interface("agent1")]
                    assert named(at_lyon, "Originate") == []
    finally:
        await delete_stream(tag)


async def test_actions_go_on_when_the_owner_dies_and_the_standby_takes_over(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """Node A killed (`kill -9`) right after an action: B's next one waits for the takeover
    (asked again while nobody owns the stream) or is a clear 503; asked until it succeeds, it is
    sent once, by B itself once it owns the stream."""
    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    engine = create_engine(pg_url)
    await upgrade_async(engine)
    await UserStore(engine).add("agent1", PASSWORD, "agent", "Agent One", "fr", [AGENT], [AGENT])
    await engine.dispose()
    try:
        async with (
            SimulatedPbx(call_centre_config(1, speed=4.0, seed=9)) as pbx,
            aiohttp.ClientSession() as session,
        ):
            actions = recorded(pbx)
            conf_a, conf_b = (
                config(tmp_path, name, pg_url, pbx.port, port, tag)
                .read_text()
                .replace("lease_s = 15.0", "lease_s = 1.0")
                for name, port in (("node-a", port_a), ("node-b", port_b))
            )
            (tmp_path / "a.toml").write_text(conf_a)
            (tmp_path / "b.toml").write_text(conf_b)
            async with serve(tmp_path / "a.toml", tmp_path / "a.log") as a:
                await answering(session, port_a, a, "ok")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 60
                while (await health(session, port_a))["links"][0].get("role") != "owner":
                    assert loop.time() < deadline, "node A never owned the stream"
                    await asyncio.sleep(0.1)
                async with serve(tmp_path / "b.toml", tmp_path / "b.log") as b:
                    await answering(session, port_b, b, "ok")
                    token = await login(session, port_b, "agent1")
                    status, body = await post(session, port_b, "/api/agent/pause", token, {"paused": True})
                    assert status == 200, body
                    a.kill()
                    await a.wait()
                    answers = []
                    deadline = loop.time() + 60
                    while True:
                        status, body = await post(
                            session, port_b, "/api/agent/pause", token, {"paused": False}
                        )
                        answers.append((status, body.get("error_id")))
                        if status == 200:
                            break
                        assert status == 503 and body["error_id"] in (
                            "owner-unreachable",
                            "ami-unavailable",
                        ), body
                        assert loop.time() < deadline, answers
                        await asyncio.sleep(0.5)
                    assert [p["Paused"] for p in named(actions, "QueuePause")] == ["true", "false"], answers
                    assert (await health(session, port_b))["links"][0]["role"] == "owner"
    finally:
        await delete_stream(tag)
