"""One daemon, two Asterisk servers (issue 20, item 5): every action goes to the PBX the agent,
the call or the campaign is on, and never to the other one.

Two simulated PBXs over real sockets: "paris" (agent1, agent2) and "lyon" (agent21, agent22),
both with queues named support and outbound, as two sites of one company have. What each PBX
received is recorded at its AMI manager: a pause, a click-to-call, a hang-up of a live call and a
campaign's Originate for lyon reach lyon and not paris; a phone no PBX knows, and a campaign
on a server that is not configured, are refused with a clear error while the daemon goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import select

from cti.ami.message import Message
from cti.app import Daemon
from cti.calls.controls import ControlRefused, Phone
from cti.calls.events import AgentStateChanged
from cti.calls.pbxs import Pbx, PbxMap
from cti.calls.tracker import CallTracker
from cti.config import AsteriskServer, DatabaseSettings, DialerSettings, Secret, Settings, WebSettings
from cti.db.engine import create_engine, session_factory
from cti.db.migrate import upgrade_async
from cti.db.models import DialerAttempt
from cti.dialer import store
from cti.dialer.importer import import_contacts
from cti.sim.config import AgentSpec, MemberSpec, OutboundMix, QueueSpec, SimConfig, call_centre_config
from cti.sim.pbx import SimulatedPbx
from cti.web.auth import UserStore
from test_daemon import until

PASSWORD = "correct horse battery"
# A Monday at 11:00 in Paris: inside the French calling hours, for the dialer's clock.
MONDAY = datetime(2026, 3, 2, 11, 0, tzinfo=ZoneInfo("Europe/Paris"))


def site(agents: tuple[str, ...]) -> SimConfig:
    """A site whose queues have the same names as the other site's, with its own agents."""
    specs = tuple(AgentSpec(a, a.capitalize(), ring_s=0.5, talk_s=60.0) for a in agents)
    members = tuple(MemberSpec(a) for a in agents)
    queues = (QueueSpec("support", members=members), QueueSpec("outbound", members=members))
    base = call_centre_config(len(agents), speed=1.0, seed=11, outbound_mix=OutboundMix(by_last_digit=True))
    return dataclasses.replace(base, agents=specs, queues=queues)


def interface(agent: str) -> str:
    return f"Local/{agent}@agents/n"


@dataclass
class Site:
    pbx: SimulatedPbx
    actions: list[Message]

    def received(self, name: str) -> list[Message]:
        return [a for a in self.actions if a.get("Action", "").lower() == name.lower()]


def recorded(pbx: SimulatedPbx) -> Site:
    """Every action the PBX's manager handles, in order (authenticated or not)."""
    seen: list[Message] = []
    handle = pbx.manager.handle

    def recording(session: Any, action: Message) -> None:
        seen.append(action)
        handle(session, action)

    pbx.manager.handle = recording  # type: ignore[method-assign]
    return Site(pbx, seen)


def server(name: str, pbx: SimulatedPbx) -> AsteriskServer:
    return AsteriskServer(
        name=name, port=pbx.port, secret=Secret("ctisecret"), keepalive_s=2.0, action_timeout_s=3.0
    )


async def prepare(db: Path, tmp_path: Path, campaigns: bool) -> None:
    """Users on each site; with `campaigns`, running campaigns for lyon and for a server nobody
    configured."""
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await upgrade_async(engine)
        users = UserStore(engine)
        for agent in ("agent1", "agent2", "agent21", "agent22", "agent99"):
            phone = [interface(agent)]
            await users.add(agent, PASSWORD, "agent", agent, "fr", phone, phone)
        await users.add("chef", PASSWORD, "supervisor", "Chef", "fr", [], [])
        if not campaigns:
            return
        path = tmp_path / "contacts.csv"
        path.write_text("nom;telephone\nAnswers;06 12 34 56 01\n", encoding="utf-8")
        for name, where in (("relance-lyon", "lyon"), ("relance-nice", "nice")):
            settings = {"ruleset": "fr", "dial_mode": "progressive", "queue": "outbound", "server": where}
            await store.create_campaign(engine, name, settings)
            await import_contacts(engine, path, name)
            await store.change_state(engine, name, "start")
    finally:
        await engine.dispose()


@dataclass
class TwoSites:
    daemon: Daemon
    paris: Site
    lyon: Site


@asynccontextmanager
async def two_sites(tmp_path: Path, campaigns: bool = False) -> AsyncIterator[TwoSites]:
    db = tmp_path / "cti.db"
    await prepare(db, tmp_path, campaigns)
    async with AsyncExitStack() as stack:
        paris = recorded(await stack.enter_async_context(SimulatedPbx(site(("agent1", "agent2")))))
        lyon = recorded(await stack.enter_async_context(SimulatedPbx(site(("agent21", "agent22")))))
        settings = Settings(
            asterisk=(server("paris", paris.pbx), server("lyon", lyon.pbx)),
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{db}", flush_interval_s=0.05),
            web=WebSettings(port=0),
            dialer=DialerSettings(
                dial_string="Local/{national}@fake-pstn",
                connect_context="dialer-connect",
                clock_start=MONDAY.isoformat(),
                clock_speed=1.0,
                tick_s=0.05,
            ),
        )
        daemon = Daemon(settings)
        await daemon.start()
        try:
            await until(lambda: all(t.resyncs >= 1 for t in daemon.trackings))
            await until(lambda: all(len(t.tracker.members) == 4 for t in daemon.trackings))
            yield TwoSites(daemon, paris, lyon)
        finally:
            await daemon.shutdown()


@asynccontextmanager
async def desk(daemon: Daemon, user: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=daemon.web_url) as http:
        async with http.post("/api/login", json={"username": user, "password": PASSWORD}) as r:
            token = (await r.json())["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


async def post(http: aiohttp.ClientSession, path: str, body: Any, status: int) -> dict[str, Any]:
    async with http.post(path, json=body) as r:
        data: dict[str, Any] = await r.json()
        assert r.status == status, data
        return data


def only(actions: list[Message], key: str) -> list[str]:
    return [a.get(key, "") for a in actions]


def paused(sites: TwoSites, name: str) -> Callable[[], bool]:
    tracker = next(t.tracker for t in sites.daemon.trackings if t.tracker.server == name)
    return lambda: any(m.paused for m in tracker.members.values())


async def test_agent_actions_go_to_the_pbx_the_agent_is_on(tmp_path: Path) -> None:
    async with two_sites(tmp_path) as sites:
        paris, lyon = sites.paris, sites.lyon
        async with desk(sites.daemon, "agent21") as http:
            await post(http, "/api/agent/pause", {"paused": True, "reason": "lunch"}, 200)
            await post(http, "/api/agent/call", {"number": "06 12 34 56 78"}, 202)
        assert only(lyon.received("QueuePause"), "Interface") == [interface("agent21")]
        assert only(lyon.received("Originate"), "Channel") == [interface("agent21")]
        assert paris.received("QueuePause") == [] and paris.received("Originate") == []
        await until(paused(sites, "lyon"))
        assert not paused(sites, "paris")()

        # The other way round: the first server is not just a default that happens to be right.
        async with desk(sites.daemon, "agent1") as http:
            await post(http, "/api/agent/pause", {"paused": True}, 200)
        assert only(paris.received("QueuePause"), "Interface") == [interface("agent1")]
        assert len(lyon.received("QueuePause")) == 1

        # A supervisor's forced break, on lyon's agent.
        async with desk(sites.daemon, "chef") as http:
            await post(http, "/api/floor/pause", {"interface": interface("agent22")}, 200)
        assert only(lyon.received("QueuePause"), "Interface")[-1] == interface("agent22")
        assert len(paris.received("QueuePause")) == 1

        # A phone neither PBX knows: a clear 409, no action sent anywhere.
        sent = len(paris.actions), len(lyon.actions)
        async with desk(sites.daemon, "agent99") as http:
            refused = await post(http, "/api/agent/pause", {"paused": True}, 409)
            assert refused["error_id"] == "unknown-server"
            refused = await post(http, "/api/agent/call", {"number": "0612345678"}, 409)
            assert refused["error_id"] == "unknown-server"
        assert (len(paris.actions), len(lyon.actions)) == sent
        async with desk(sites.daemon, "agent1") as http:
            await post(http, "/api/agent/pause", {"paused": False}, 200)  # the daemon goes on


async def test_a_live_call_is_controlled_on_its_own_pbx(tmp_path: Path) -> None:
    async with two_sites(tmp_path) as sites:
        lyon_tracker = sites.daemon.trackings[1].tracker
        sites.lyon.pbx.inbound_call("+33612345678", digits="1", talk_s=60.0)
        await until(lambda: any(c.bridged for c in lyon_tracker.channels.values()), 15)
        names = [c.name for c in lyon_tracker.channels.values()]
        answered = next(a for a in ("agent21", "agent22") if any(n.startswith(f"Local/{a}@") for n in names))
        async with desk(sites.daemon, answered) as http:
            done = await post(http, "/api/agent/call/hangup", {}, 200)
        assert done["action"] == "hangup"
        assert sites.lyon.received("Hangup") and sites.paris.received("Hangup") == []
        await until(lambda: sites.lyon.pbx.engine.core.channels == {}, 10)


async def test_a_campaign_dials_on_its_own_server_only(tmp_path: Path) -> None:
    async with two_sites(tmp_path, campaigns=True) as sites:
        dialer = sites.daemon.dialer
        await until(lambda: sites.lyon.received("Originate"), 15)
        [originate] = sites.lyon.received("Originate")
        assert originate.get("Channel") == "Local/0612345601@fake-pstn"
        assert sites.paris.received("Originate") == []
        # The campaign on a server nobody configured: said, never dialled, the daemon goes on.
        await until(lambda: "nice" in dialer.status.get("relance-nice", _Status()).reason)
        assert "not configured" in dialer.status["relance-nice"].reason
        async with session_factory(sites.daemon.engine)() as session:
            attempts = (await session.scalars(select(DialerAttempt))).all()
        assert [(a.server, a.phone_e164) for a in attempts] == [("lyon", "+33612345601")]
        # A campaign naming a server that is not configured is refused when it is written.
        async with desk(sites.daemon, "chef") as http:
            refused = await post(http, "/api/dialer/campaigns", {"name": "x", "server": "nice"}, 400)
            assert refused["error_id"] == "unknown-server"
            await post(http, "/api/dialer/campaigns", {"name": "y", "server": "lyon"}, 201)


@dataclass
class _Status:
    reason: str = ""


def member(server: str, queue: str, iface: str) -> AgentStateChanged:
    return AgentStateChanged(server, 0.0, queue, iface, None, 1, False, None, True, False, 0)


def test_a_phone_on_two_servers_is_refused_rather_than_guessed() -> None:
    paris, lyon = CallTracker("paris", "FR", 2.0), CallTracker("lyon", "FR", 2.0)
    paris.members[("support", "PJSIP/1001")] = member("paris", "support", "PJSIP/1001")
    lyon.members[("support", "PJSIP/1001")] = member("lyon", "support", "PJSIP/1001")
    lyon.members[("sales", "PJSIP/2001")] = member("lyon", "sales", "PJSIP/2001")
    pbxs = PbxMap([Pbx("paris", "link-paris", paris), Pbx("lyon", "link-lyon", lyon)])

    def refusal(call: Callable[[], object]) -> tuple[str, int]:
        try:
            call()
        except ControlRefused as exc:
            return exc.error_id, exc.status
        raise AssertionError("not refused")

    assert pbxs.for_phone(Phone(("PJSIP/2001",))).link == "link-lyon"
    assert refusal(lambda: pbxs.for_phone(Phone(("PJSIP/1001",)))) == ("ambiguous-server", 409)
    assert refusal(lambda: pbxs.for_phone(Phone(("PJSIP/3001",)))) == ("unknown-server", 409)
    # A queue login of a phone known nowhere: the server whose queue it is.
    assert pbxs.for_phone(Phone(("PJSIP/3001",)), "sales").name == "lyon"
    assert pbxs.named(None).name == "paris" and pbxs.named("lyon").name == "lyon"
    assert refusal(lambda: pbxs.named("nice")) == ("unknown-server", 409)
