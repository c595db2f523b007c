"""Issue 20's acceptance test (docs/scale-out.md, "How it is tested"): three `cti serve` nodes with
`[ha]` and `[bus]` on one PostgreSQL database (of this test's own) and the real NATS JetStream
(a stream of this test's own, deleted after); two simulated PBXs, each writing its CEL and
queue_log to a PostgreSQL database of its own (`records_url`). Inbound traffic on both, and two
progressive campaigns on pbx1 for the same two agents (its `outbound` floor, which takes no
inbound call).

Node a starts first and takes both streams; b and c stand by. An agent's desktop is on c, which
owns neither PBX. Mid-traffic, the owner of pbx1 (the dialer's PBX) is killed (`kill -9`): the
owner found then, in `stream_leases` (on a loaded machine an owner that cannot renew its lease
in time stands down and a standby takes over, so it may no longer be a). Then:

- every stream it owned has a new owner within two lease periods of the kill, on PostgreSQL's
  clock (a trigger notes each change of `stream_leases`' token);
- the agent on c keeps getting pops: every call that agent answered on a PBX that changed hands,
  queued after the new owner was connected and synchronised (and before any later change of
  hands), popped on the desktop;
- against both simulators' ground truth, every call is stored once, with its outcome, queue,
  agent, direction and who hung up (those of the gap recovered from the PBX's CEL);
- the campaigns changed hands too, and against the Originates pbx1 received: each once, owned by
  one attempt row, no contact called again before its retry delay, every attempt closed; at every
  Originate the campaign calls waiting for an agent were never more than the agents of the floor
  out of a call.

The pieces each have their own tests (test_ha_takeover, test_scaleout_desk, test_dialer_ha); this
one reuses their helpers and runs them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cti.db.engine import create_engine
from cti.sim.config import MemberSpec, OutboundMix, SimConfig
from cti.sim.pbx import SimulatedPbx
from cti.sim.truth import CallTruth
from cti.web.auth import UserStore
from test_bus_jetstream import NATS_URL, _nats_up
from test_dialer_ha import (
    Watch,
    _placed,
    change,
    check_once_and_paced,
    lease_of,
    more_contacts,
    prepare,
    stop,
    wind_down,
)
from test_dialer_sim import START
from test_gap_kill import free_port, healthy, traffic_config
from test_gap_rebuild import records_database
from test_ha_takeover import (
    Cluster,
    Node,
    check_calls,
    cluster,
    lease,
    no_traceback,
    stored,
    until,
)
from test_scaleout_desk import PASSWORD, bearer, delete_stream, login

pytestmark = [
    pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.timeout(900),
]
_ = cluster  # the fixture
LEASE_S = 3.0
SPEED = 10.0  # the simulators' and the dialer's clocks: simulated seconds per second
TRAFFIC_S = 600.0  # simulated: a minute of wall clock
SERVERS = ("pbx1", "pbx2")
FLOOR = ("agent5", "agent6")  # pbx1's `outbound` queue: the campaigns' agents, no inbound call
AGENT = "agent1"  # the desktop's: an inbound agent on both PBXs (named Agent1 in queue events)
CONTACTS = 40  # per campaign at the start; 10 more each after a kill of the dialling node


def dialer_site() -> SimConfig:
    """pbx1: the inbound traffic of test_gap_kill on agents 1-4, no random outbound call (every
    outbound call is the dialer's), and a floor of two agents who pick up at once (a progressive
    campaign then abandons nobody) answering the campaigns' calls only."""
    base = traffic_config()
    quick = {"ring_s": 0.5, "ring_jitter_s": 0.0, "miss_rate": 0.0, "talk_s": 20.0}
    agents = tuple(dataclasses.replace(a, **quick) if a.exten in FLOOR else a for a in base.agents)
    queues = tuple(
        dataclasses.replace(
            q,
            members=tuple(MemberSpec(a) for a in FLOOR)
            if q.name == "outbound"
            else tuple(m for m in q.members if m.agent not in FLOOR),
        )
        for q in base.queues
    )
    return dataclasses.replace(
        base,
        agents=agents,
        queues=queues,
        traffic=dataclasses.replace(base.traffic, outbound_per_minute=0),
        outbound_mix=OutboundMix(by_last_digit=True),
    )


def inbound_site() -> SimConfig:
    """pbx2: test_gap_kill's traffic, other calls; its uniqueids in a range of their own, as two
    Asterisks' are (each counts from its own start)."""
    return dataclasses.replace(traffic_config(), seed=2, first_uniqueid=1_000_000)


def config_file(
    tmp_path: Path, node: str, url: str, pbxs: dict[str, tuple[int, str]], web_port: int, tag: str
) -> Path:
    """The same settings on every node but its name: both PBXs, the bus, the web secret."""
    servers = "".join(
        f'[[asterisk]]\nname = "{server}"\nhost = "127.0.0.1"\nport = {port}\nusername = "cti"\n'
        f'secret = "ctisecret"\nkeepalive_s = 1.0\nreconnect_cap_s = 0.2\nrecords_url = "{records}"\n'
        for server, (port, records) in pbxs.items()
    )
    path = tmp_path / f"cti-{node}.toml"
    path.write_text(
        servers + f'[database]\nurl = "{url}"\nflush_interval_s = 0.05\n'
        f'[ha]\nenabled = true\nnode = "{node}"\nlease_s = {LEASE_S}\n'
        f'[bus]\nnats_url = "{NATS_URL}"\nnode = "{node}-{tag}"\nstream = "CTI_TEST_{tag}"\n'
        f'subject_prefix = "cti-test-{tag}"\naction_prefix = "cti-test-actions-{tag}"\n'
        f'[web]\nport = {web_port}\nsecret = "shared-secret-of-the-floor-{tag}"\n'
        '[dialer]\ndial_string = "Local/{national}@fake-pstn"\nconnect_context = "dialer-connect"\n'
        f'clock_start = "{START.replace(hour=10).isoformat()}"\nclock_speed = {SPEED}\n'
        "tick_s = 0.1\nreconcile_after_s = 20\n"
        '[log]\nformat = "json"\nlevel = "info"\n',
        encoding="utf-8",
    )
    return path


class Desk:
    """An agent's desktop WebSocket: every pop it receives, as (server, linkedid)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pops: list[tuple[str, str]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = msg.json()
            if frame.get("type") in ("pop", "pop.answered"):
                self.pops.append((frame["pop"]["server"], frame["pop"]["linkedid"]))

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.reader, 10)


async def owners(cluster: Cluster) -> dict[str, str]:
    return {
        row["server"]: row["holder"] for row in await cluster.rows("SELECT server, holder FROM stream_leases")
    }


def roles(node: Node) -> dict[str, dict[str, Any]]:
    """Its /healthz links by server (role, connected, synced)."""
    return {link["server"]: link for link in node.health()["links"]}


async def tracked(nodes: Iterable[Node], server: str) -> bool:
    """A node owns the server's stream, connected and synchronised."""
    for node in nodes:
        with contextlib.suppress(OSError):
            link = (await asyncio.to_thread(roles, node))[server]
            if link.get("role") == "owner" and link["connected"] and link["synced"]:
                return True
    return False


@dataclass
class Floor:
    """The two PBXs, the three nodes, the dialer's watch and the agent's desktop."""

    cluster: Cluster
    pbxs: dict[str, SimulatedPbx]
    nodes: dict[str, Node]
    watch: Watch
    campaigns: dict[str, int]
    desk: Desk | None = None
    deskside: str = ""  # the desktop's node
    # What the kill showed: the streams the killed node owned, the seconds to each new owner
    # (PostgreSQL's clock), when each was tracked again (simulated time, and PostgreSQL's clock),
    # the Originates before.
    taken: list[str] = field(default_factory=list)
    takeover_s: dict[str, float] = field(default_factory=dict)
    settled: dict[str, tuple[float, float]] = field(default_factory=dict)
    dialled_before: int = 0

    async def start(self) -> None:
        """a first (it takes both streams), then b and c (standbys)."""
        for name, node in self.nodes.items():
            await node.start()
            await healthy(node.web, node.alive, within_s=120)
            if name == "a":
                await until(lambda: self._held_by("a"), 60, "a takes both streams")
        await until(lambda: self._tracked(self.nodes.values()), 60, "both streams tracked")
        held = await owners(self.cluster)
        # One owner per PBX, and every node's /healthz says the same.
        for node in self.nodes.values():
            links = await asyncio.to_thread(roles, node)
            assert {s: link["role"] for s, link in links.items()} == {
                s: "owner" if held[s] == node.name else "standby" for s in SERVERS
            }

    async def open_desk(self, session: aiohttp.ClientSession) -> None:
        """The agent's desktop on a node that owns neither PBX."""
        held = set((await owners(self.cluster)).values())
        deskside = next(n for n in reversed(self.nodes.values()) if n.name not in held)
        token = await login(session, deskside.web, AGENT)
        ws = await session.ws_connect(f"http://127.0.0.1:{deskside.web}/ws", headers=bearer(token))
        self.desk, self.deskside = Desk(ws), deskside.name

    async def owner_to_kill(self) -> Node:
        """The owner of pbx1 (the dialer's PBX) now; or of pbx2, should the desktop's node have
        taken pbx1 meanwhile (under load an owner that cannot renew its lease in time stands down
        and a standby takes over: ownership may have moved since the start)."""
        held = await owners(self.cluster)
        for server in SERVERS:
            if held[server] != self.deskside:
                return self.nodes[held[server]]
        raise AssertionError(f"the desktop's node owns every stream: {held}")

    async def mid_traffic(self) -> None:
        """Both campaigns and both PBXs' traffic under way, seen on the desktop; recovery marks."""
        desk = self.desk
        assert desk is not None
        # The owner stored how far it saw each PBX (recovery_marks): a takeover recovers from there.
        await until(self._marked, 120, "a recovery mark for each PBX")
        placed = self.placed
        await until(lambda: _now(min(placed(0).values()) >= 2), 120, "both campaigns dial")
        await until(lambda: _now({s for s, _ in desk.pops} == set(SERVERS)), 120, "pops of both PBXs")
        await asyncio.sleep(2.0)
        assert all(pbx.truth.open() for pbx in self.pbxs.values())  # calls in progress on both

    async def kill(self, victim: Node) -> None:
        """kill -9 the node; a standby owns each of its streams, then tracks it; the campaigns."""
        held = await owners(self.cluster)
        self.taken = [s for s in SERVERS if held[s] == victim.name]
        _, _, killed_at = await lease(self.cluster)
        self.dialled_before = len(self.watch.received)
        victim.alive.kill()
        await victim.alive.wait()
        survivors = [n for n in self.nodes.values() if n is not victim]
        await until(lambda: self._moved(victim.name), 30 * LEASE_S, "a standby owns each stream")
        rows = await self.cluster.rows(
            "SELECT server, min(extract(epoch FROM at)) AS at FROM lease_changes"
            " WHERE holder <> $1 AND at > to_timestamp($2) GROUP BY server",
            victim.name,
            killed_at,
        )
        self.takeover_s = {r["server"]: round(float(r["at"]) - killed_at, 2) for r in rows}
        for server in self.taken:
            await until(lambda s=server: self._tracked(survivors, s), 120, f"{server} tracked again")
            self.settled[server] = (self.pbxs[server].now, (await lease(self.cluster))[2])
        if "pbx1" in self.taken:  # the campaigns follow pbx1's stream and are dialled on
            await until(self._campaigns_follow_pbx1, 120, "the campaigns taken over")
            # Fresh contacts, due at once on the new owner's clock. On a busy machine the killed
            # node may have called every contact of a campaign before the kill (CI: 70 Originates
            # for 80 contacts, none of campaign 1 after it), and what it leaves are retries due
            # on its own demo clock, which the new owner's lags (`more_contacts`).
            for name in self.campaigns:
                await more_contacts(self.cluster.url(), victim.config.parent, name, CONTACTS)
            before = self.dialled_before
            await until(lambda: _now(min(self.placed(before).values()) >= 2), 120, "each campaign dialled on")

    async def wind_up(self, survivors: list[Node]) -> dict[str, dict[str, CallTruth]]:
        """The traffic's end, the campaigns paused and every attempt closed, every call stored;
        the survivors stopped cleanly. The simulators' ground truth."""
        for pbx in self.pbxs.values():
            await asyncio.wait_for(pbx.traffic_finished(), 300)
        await wind_down(self.cluster.url(), self.pbxs["pbx1"], tuple(self.campaigns))
        await self.pbxs["pbx2"].idle(timeout_s=120)
        truth = {s: {c.linkedid: c for c in pbx.truth.finished()} for s, pbx in self.pbxs.items()}

        async def all_stored() -> bool:
            return all([len(await stored(self.cluster, s)) >= len(truth[s]) for s in SERVERS])

        with contextlib.suppress(AssertionError):  # what is missing is named by check_calls()
            await until(all_stored, 120, "every call stored")
        await asyncio.sleep(2.0)  # anything stored twice, any late pop, would show now
        for node in survivors:
            await stop(node.alive)
        return truth

    def placed(self, since: int) -> dict[str, int]:
        return _placed(self.watch.received[since:], self.campaigns)

    async def _held_by(self, node: str) -> bool:
        return set((await owners(self.cluster)).items()) == {(s, node) for s in SERVERS}

    async def _tracked(self, nodes: Iterable[Node], server: str | None = None) -> bool:
        listed = list(nodes)
        return all([await tracked(listed, s) for s in ([server] if server else SERVERS)])

    async def _marked(self) -> bool:
        rows = await self.cluster.rows("SELECT DISTINCT server FROM recovery_marks")
        return {r["server"] for r in rows} == set(SERVERS)

    async def _moved(self, victim: str) -> bool:
        held = await owners(self.cluster)
        return all(held[s] != victim for s in self.taken)

    async def _campaigns_follow_pbx1(self) -> bool:
        url, owner = self.cluster.url(), (await owners(self.cluster))["pbx1"]
        return all([(await lease_of(url, i) or ("", 0))[0] == owner for i in self.campaigns.values()])

    async def popped_until(self, server: str) -> float:
        """Until when (simulated time) the desktop must have had every pop of the server's calls:
        the end, or a lease period before the stream next changed hands after the takeover (an
        owner standing down under load: nobody tracks the calls of that gap live)."""
        since_sim, since = self.settled[server]
        rows = await self.cluster.rows(
            "SELECT min(extract(epoch FROM at)) AS at FROM lease_changes"
            " WHERE server = $1 AND at > to_timestamp($2)",
            server,
            since,
        )
        later = rows[0]["at"]
        return float("inf") if later is None else since_sim + (float(later) - 2 * LEASE_S - since) * SPEED


async def test_kill_the_owner_of_a_pbx_mid_traffic(tmp_path: Path, cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:10]
    url = cluster.url()
    campaigns = await prepare(url, tmp_path, CONTACTS)  # `a` and `b`, on the first server: pbx1
    engine = create_engine(url)
    await UserStore(engine).add(AGENT, PASSWORD, "agent", "Agent One", interfaces=[f"Local/{AGENT}@agents/n"])
    await engine.dispose()
    async with (
        records_database() as records1,
        records_database() as records2,
        SimulatedPbx(dialer_site(), records_url=records1) as pbx1,
        SimulatedPbx(inbound_site(), records_url=records2) as pbx2,
        aiohttp.ClientSession() as session,
    ):
        sites = {"pbx1": (pbx1.port, records1), "pbx2": (pbx2.port, records2)}
        nodes = {}
        for name in ("a", "b", "c"):
            web = free_port()
            config = config_file(tmp_path, name, cluster.url(name), sites, web, tag)
            nodes[name] = Node(name, config, tmp_path / f"cti-{name}.log", web)
        floor = Floor(cluster, {"pbx1": pbx1, "pbx2": pbx2}, nodes, Watch(pbx1), campaigns)
        try:
            await floor.start()
            await floor.open_desk(session)
            for name in campaigns:
                await change(url, name, "start")
            for pbx in floor.pbxs.values():
                pbx.start_traffic(TRAFFIC_S)
            await floor.mid_traffic()
            victim = await floor.owner_to_kill()
            await floor.kill(victim)
            truth = await floor.wind_up([n for n in nodes.values() if n is not victim])
        finally:
            if floor.desk is not None:
                await floor.desk.close()
            for node in nodes.values():
                await node.stop()
            await delete_stream(tag)
    await check_floor(floor, truth)


async def check_floor(floor: Floor, truth: dict[str, dict[str, CallTruth]]) -> None:
    # Within two lease periods of the kill, on PostgreSQL's clock.
    assert set(floor.takeover_s) == set(floor.taken) and floor.taken, floor.takeover_s
    assert all(s <= 2 * LEASE_S for s in floor.takeover_s.values()), floor.takeover_s
    # Every call of both simulators stored once, as it went; the kill hid calls from every node:
    # the new owner recorded them from the PBX's CEL.
    calls = {server: await check_calls(truth[server], floor.cluster, server) for server in SERVERS}
    assert all(any(c["closed_by"] == "cel" for c in calls[server]) for server in floor.taken)

    # Each Originate once, per attempt; no contact called again within its retry delay; never
    # more calls waiting than free agents; the campaigns taken over with pbx1 and dialled on.
    url = floor.cluster.url()
    by_action = await check_once_and_paced(url, floor.watch)
    dialled = [(by_action[action].campaign_id, round(at)) for action, at in floor.watch.received]
    if "pbx1" in floor.taken:
        after = {campaign for campaign, _ in dialled[floor.dialled_before :]}
        assert after == set(floor.campaigns.values()), (floor.dialled_before, dialled)
        for campaign_id in floor.campaigns.values():
            lease_row = await lease_of(url, campaign_id)
            assert lease_row is not None and lease_row[1] >= 2  # a new token

    # The agent on the surviving node kept getting pops: every call they answered on a PBX that
    # changed hands, queued once its new owner tracked it, popped on their desktop.
    assert floor.desk is not None
    popped = set(floor.desk.pops)
    for server in floor.taken:
        since, until_sim = floor.settled[server][0], await floor.popped_until(server)
        due = [
            linkedid
            for linkedid, call in truth[server].items()
            if any(
                s.agent == "Agent1"
                and s.outcome == "answered"
                and s.joined_at >= since
                and (s.connected_at or 0) <= until_sim
                for s in call.segments
            )
        ]
        assert due, server
        assert [linkedid for linkedid in due if (server, linkedid) not in popped] == [], server
    for node in floor.nodes.values():
        no_traceback(node)
    later = {
        (server, linkedid)
        for server, linkedid in floor.desk.pops
        if server in floor.settled and truth[server][linkedid].started_at >= floor.settled[server][0]
    }
    changes = await floor.cluster.rows("SELECT count(*) AS n FROM lease_changes")
    originates = len(floor.watch.received)
    print(  # the figures of the run (pytest -s)
        f"takeover {floor.takeover_s}; calls { ({s: len(c) for s, c in calls.items()}) }, "
        f"from CEL { ({s: sum(c['closed_by'] == 'cel' for c in calls[s]) for s in SERVERS}) }; "
        f"pop frames {len(floor.desk.pops)}, calls popped after the takeover {len(later)}; "
        f"originates {originates} ({originates - floor.dialled_before} after the kill); "
        f"stream leases taken {changes[0]['n']} times"
    )


async def _now(value: bool) -> bool:
    return value
