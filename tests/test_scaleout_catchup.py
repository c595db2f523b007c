"""A node that starts knows the floor at once (docs/scale-out.md, "Desktops on any node",
"A node that starts"): two `cti serve` processes on one PostgreSQL database of the test's own
and the real NATS JetStream (a stream of the test's own); a simulated PBX is tracked by node A
only, node B has an `[[asterisk]]` of its own that never answers (as in test_scaleout_desk).

- The floor: B, started after A's agents last changed state, shows them on its wallboard (and
  their queues' members) as A does, without waiting for their next change.
- A ringing call: B is started while an agent's phone rings with a call A tracks; the agent,
  logging in on B, gets the pop; the supervisor on B sees the caller waiting; the call goes on
  (answered, ended) on B's desktop and is counted once in B's figures.
- A campaign call: A dials a campaign contact; the agent's desktop on B gets a pop carrying the
  contact (name, fields) as A's dialer knows it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cti.db.engine import create_engine
from cti.dialer import store
from cti.dialer.importer import import_contacts
from cti.sim.config import QueueSpec, call_centre_config
from cti.sim.pbx import SimulatedPbx
from cti.web.auth import UserStore
from test_bus_jetstream import _nats_up
from test_daemon import until
from test_dialer_sim import SPEED, START, fast_agents_config
from test_gap_kill import free_port
from test_scaleout_desk import (
    AGENT_INTERFACE,
    PASSWORD,
    _get,
    answering,
    bearer,
    config,
    delete_stream,
    login,
    serve,
)
from test_stream_lease import pg_url  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes"),
    pytest.mark.timeout(180),
]


async def frame(
    ws: aiohttp.ClientWebSocketResponse, kind: str, within_s: float = 45.0, **match: Any
) -> dict[str, Any]:
    """The next frame of this type (whose fields hold `match`) within `within_s`, skipping the
    others (the desktop gets `stats` frames all along: a wait per frame would never end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        remaining = deadline - loop.time()
        assert remaining > 0, f"no {kind} frame {match} within {within_s} s"
        msg = dict(await asyncio.wait_for(ws.receive_json(), remaining))
        if msg["type"] == kind and all(_get(msg, k) == v for k, v in match.items()):
            return msg


async def add_users(url: str) -> None:
    engine = create_engine(url)
    try:
        users = UserStore(engine)
        await users.add("agent1", PASSWORD, "agent", "Agent One", interfaces=[AGENT_INTERFACE])
        await users.add("sup", PASSWORD, "supervisor", "Sup")
    finally:
        await engine.dispose()


async def live(session: aiohttp.ClientSession, port: int, token: str) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}/api/stats/live", headers=bearer(token)) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


def queue(figures: dict[str, Any], name: str) -> dict[str, Any]:
    empty = {"presented": 0, "answered": 0, "waiting": 0, "agents_logged_in": 0}
    return next((q for q in figures["queues"] if q["queue"] == name), empty)


def agent_row(figures: dict[str, Any]) -> dict[str, Any] | None:
    return next((a for a in figures["agents"] if a["interface"] == AGENT_INTERFACE), None)


def floor_of(figures: dict[str, Any]) -> dict[str, tuple[int, str | None]]:
    """Per queue: its logged-in members and, for agent1, its state (what B must agree on)."""
    row = agent_row(figures)
    state = None if row is None else row["state"]
    return {q["queue"]: (q["agents_logged_in"], state) for q in figures["queues"]}


async def test_a_node_started_later_shows_the_whole_floor_at_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """No call at all: agent1's state on A was set when A connected (its resync) and never
    changed since. Node B, started afterwards, shows it and its queues' members as A does."""
    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    await add_users(pg_url)
    sim = call_centre_config(1, speed=1.0, seed=3)
    try:
        async with (
            SimulatedPbx(sim) as pbx,
            aiohttp.ClientSession() as session,
            serve(config(tmp_path, "node-a", pg_url, pbx.port, port_a, tag), tmp_path / "a.log") as a,
        ):
            await answering(session, port_a, a, "ok")
            sup_a = await login(session, port_a, "sup")

            async def a_knows() -> bool:
                return queue(await live(session, port_a, sup_a), "support")["agents_logged_in"] == 1

            await until(a_knows, 30)
            on_a = floor_of(await live(session, port_a, sup_a))
            assert on_a["support"] == (1, "available"), on_a
            conf_b = config(tmp_path, "node-b", pg_url, free_port(), port_b, tag)
            async with serve(conf_b, tmp_path / "b.log") as b:
                await answering(session, port_b, b, None)
                sup_b = await login(session, port_b, "sup")

                async def b_agrees() -> bool:
                    return floor_of(await live(session, port_b, sup_b)) == on_a

                # Nothing changes on the floor meanwhile: without the catch-up B never agrees.
                await until(b_agrees, 20)
                row = agent_row(await live(session, port_b, sup_b))
                assert row is not None and row["server"] == "sim" and set(row["queues"]) == set(on_a)
    finally:
        await delete_stream(tag)


def ringing_centre() -> Any:
    """One agent whose phone rings for 60 simulated seconds (30 s at speed 2) before they
    answer, in a support queue that rings them that long."""
    config = call_centre_config(1, speed=2.0, seed=3)
    slow = {"ring_s": 60.0, "ring_jitter_s": 0.0, "miss_rate": 0.0, "talk_s": 4.0}
    agents = tuple(dataclasses.replace(a, **slow) for a in config.agents)
    queues = tuple(dataclasses.replace(q, timeout_s=120) if q.name == "support" else q for q in config.queues)
    assert any(isinstance(q, QueueSpec) and q.name == "support" for q in queues)
    dialplan = dataclasses.replace(config.dialplan, queue_timeout_s=300)
    return dataclasses.replace(config, agents=agents, queues=queues, dialplan=dialplan)


async def test_an_agent_on_a_node_started_while_their_phone_rings_gets_the_pop(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    await add_users(pg_url)
    try:
        async with (
            SimulatedPbx(ringing_centre()) as pbx,
            aiohttp.ClientSession() as session,
            serve(config(tmp_path, "node-a", pg_url, pbx.port, port_a, tag), tmp_path / "a.log") as a,
        ):
            await answering(session, port_a, a, "ok")
            sup_a = await login(session, port_a, "sup")
            await until(
                lambda: _logged_in(session, port_a, sup_a), 30
            )  # A has its resync: the call starts on a known floor
            linkedid = pbx.inbound_call("+33612345678", "Jean Dupont", digits="1", stay_s=600.0, talk_s=4.0)

            async def ringing_on_a() -> bool:
                row = agent_row(await live(session, port_a, sup_a))
                return row is not None and row["state"] == "ringing"

            await until(ringing_on_a, 20)
            conf_b = config(tmp_path, "node-b", pg_url, free_port(), port_b, tag)
            async with serve(conf_b, tmp_path / "b.log") as b:
                await answering(session, port_b, b, None)
                token = await login(session, port_b, "agent1")
                ws = await session.ws_connect(f"http://127.0.0.1:{port_b}/ws", headers=bearer(token))
                # Still ringing (30 s of it): the desktop's state, as it connects, has this pop.
                state = await frame(ws, "state")
                pop = state.get("pop") or {}
                assert pop.get("type") == "pop", state
                assert pop["pop"]["linkedid"] == linkedid, pop
                assert pop["pop"]["state"] == "ringing" and pop["pop"]["server"] == "sim"
                assert pop["pop"]["caller"]["e164"] == "+33612345678"
                assert pop["pop"]["queue"] == "support"
                # The supervisor on B sees the caller waiting and the agent ringing.
                sup_b = await login(session, port_b, "sup")
                figures = await live(session, port_b, sup_b)
                assert queue(figures, "support")["waiting"] == 1, queue(figures, "support")
                row = agent_row(figures)
                assert row is not None and row["state"] == "ringing", row
                # The call goes on through the bus: answered, then over.
                await frame(ws, "pop.answered", pop__linkedid=linkedid)
                await frame(ws, "pop.ended", linkedid=linkedid)
                await ws.close()

                async def counted_once() -> bool:
                    support = queue(await live(session, port_b, sup_b), "support")
                    return bool(support["answered"] == 1 and support["waiting"] == 0)

                await until(counted_once, 20)
                support = queue(await live(session, port_b, sup_b), "support")
                assert support["presented"] == 1 and support["answered"] == 1, support
    finally:
        await delete_stream(tag)


async def _logged_in(session: aiohttp.ClientSession, port: int, token: str) -> bool:
    return bool(queue(await live(session, port, token), "support")["agents_logged_in"] == 1)


async def prepare_campaign(url: str, tmp_path: Path) -> None:
    engine = create_engine(url)
    try:
        data = {"ruleset": "fr", "dial_mode": "progressive", "ring_timeout_s": 15}
        await store.create_campaign(engine, "promo", data)
        path = tmp_path / "promo.csv"
        # Last digit 1: the simulator's callee answers.
        path.write_text("nom;telephone;offre\nDupont;0612345601;fibre\n", encoding="utf-8")
        report = await import_contacts(engine, path, "promo")
        assert report.rejected == 0, report.reasons
    finally:
        await engine.dispose()


DIALER_ENV = {
    "CTI_DIALER_DIAL_STRING": "Local/{national}@fake-pstn",
    "CTI_DIALER_CONNECT_CONTEXT": "dialer-connect",
    "CTI_DIALER_CLOCK_START": START.replace(hour=10).isoformat(),
    "CTI_DIALER_CLOCK_SPEED": str(SPEED),
    "CTI_DIALER_TICK_S": "0.05",
}


async def test_a_campaign_calls_pop_on_another_node_shows_the_contact(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """Node A dials (its dialer holds the campaign); agent1's desktop is on node B. The pop B
    sends carries the contact as A's dialer knows it: its name and fields, its number."""
    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    await add_users(pg_url)
    await prepare_campaign(pg_url, tmp_path)
    try:
        async with SimulatedPbx(fast_agents_config()) as pbx, aiohttp.ClientSession() as session:
            conf_a = config(tmp_path, "node-a", pg_url, pbx.port, port_a, tag, dialer=True)
            conf_b = config(tmp_path, "node-b", pg_url, free_port(), port_b, tag)
            async with (
                serve(conf_a, tmp_path / "a.log", **DIALER_ENV) as a,
                serve(conf_b, tmp_path / "b.log") as b,
            ):
                await answering(session, port_a, a, "ok")
                await answering(session, port_b, b, None)
                token = await login(session, port_b, "agent1")
                ws = await session.ws_connect(f"http://127.0.0.1:{port_b}/ws", headers=bearer(token))
                await frame(ws, "state")
                engine = create_engine(pg_url)
                try:
                    await store.change_state(engine, "promo", "start")
                finally:
                    await engine.dispose()
                pop = await frame(ws, "pop", pop__campaign="promo")
                await ws.close()
                assert pop["pop"]["direction"] == "outbound"
                customer = pop["pop"]["customer"]
                assert customer["status"] == "contact", customer
                contact = customer["contact"]
                assert contact["campaign"] == "promo"
                assert contact["phone"] == "+33612345601", contact
                assert contact["fields"] == {"nom": "Dupont", "offre": "fibre"}, contact
                assert pop["pop"]["caller"]["e164"] == "+33612345601"
    finally:
        await delete_stream(tag)
