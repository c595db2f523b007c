"""Any node serves any desktop (issue 20, item 3): two `cti serve` processes share one
PostgreSQL database (a database of this test's own) and the real NATS JetStream (a stream of
this test's own); a simulated PBX is tracked by node A only. An agent logged in on node B gets
the pop of a call ringing their phone, and the ticket node A opens when they answer; a
supervisor on node B sees the call in the live figures. Sessions are valid on every node (the
shared `[web] secret`, sessions in the database), and a logout on one node ends the session on
the other within `session_recheck_s`.

In the first test node B has an `[[asterisk]]` of its own that nobody answers: the sim's stream
is A's alone, without stream ownership. The second runs both nodes with `[ha]` (both list the
sim; A owns its stream, B stands by): the agent on B gets the pop of A's call through the bus,
then A is killed (`kill -9`), B takes the stream over and the agent gets the next call's pop.
The third stops node B while A tracks a call, starts it again: B's figures count it once.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

from cti.db.engine import create_engine
from cti.sim.config import call_centre_config
from cti.sim.pbx import SimulatedPbx
from cti.web.auth import UserStore
from test_bus_jetstream import NATS_URL, _nats_up
from test_daemon import until
from test_gap_kill import free_port
from test_stream_lease import pg_url  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes"),
    pytest.mark.timeout(120),
]
PASSWORD = "correct horse battery"
AGENT_INTERFACE = "Local/agent1@agents/n"


def config(
    tmp_path: Path,
    name: str,
    url: str,
    ami_port: int,
    web_port: int,
    tag: str,
    ha: bool = False,
    dialer: bool = False,
) -> Path:
    """A node's settings; without `ha`, node A has the sim and node B a server of its own."""
    path = tmp_path / f"{name}.toml"
    server = "sim" if ha or name == "node-a" else "elsewhere"
    lease = f'[ha]\nenabled = true\nnode = "{name}-{tag}"\nlease_s = 3.0\n' if ha else ""
    path.write_text(
        lease + f'[[asterisk]]\nname = "{server}"\nhost = "127.0.0.1"\n'
        f'port = {ami_port}\nusername = "cti"\nkeepalive_s = 1.0\nreconnect_cap_s = 0.5\n'
        f'[database]\nurl = "{url}"\nflush_interval_s = 0.05\n'
        f'[web]\nport = {web_port}\nsecret = "shared-secret-of-the-floor-{tag}"\nsession_recheck_s = 0.5\n'
        f'metrics_token = "scrape-{tag}"\n'
        f'[bus]\nnats_url = "{NATS_URL}"\nnode = "{name}-{tag}"\nstream = "CTI_TEST_{tag}"\n'
        f'subject_prefix = "cti-test-{tag}"\n'
        f'[dialer]\nenabled = {"true" if dialer else "false"}\n[log]\nformat = "json"\nlevel = "info"\n',
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def serve(config_path: Path, log: Path, **extra: str) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**os.environ, "CTI_AMI_SIM_SECRET": "ctisecret", "CTI_AMI_ELSEWHERE_SECRET": "x", **extra}
    handle: IO[bytes] = open(log, "ab")  # noqa: ASYNC230, SIM115 - handed to the child
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cti.cli", "serve", "--config", str(config_path), env=env, stderr=handle
        )
    finally:
        handle.close()
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def answering(session: aiohttp.ClientSession, port: int, process: Any, want: str | None) -> None:
    """Wait until the node's web server answers (with `want` as its health status, if given)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        assert process.returncode is None, "cti serve exited"
        assert loop.time() < deadline, "cti serve never answered"
        with suppress(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                status = (await r.json()).get("status")
                if want is None or status == want:
                    return
        await asyncio.sleep(0.1)


async def login(session: aiohttp.ClientSession, port: int, user: str) -> str:
    async with session.post(
        f"http://127.0.0.1:{port}/api/login", json={"username": user, "password": PASSWORD}
    ) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def frame(ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any) -> dict[str, Any]:
    """The next frame of this type (whose fields hold `match`), skipping the others."""
    while True:
        msg = dict(await asyncio.wait_for(ws.receive_json(), 30))
        if msg["type"] == kind and all(_get(msg, k) == v for k, v in match.items()):
            return msg


def _get(msg: dict[str, Any], dotted: str) -> Any:
    value: Any = msg
    for part in dotted.split("__"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


async def delete_stream(tag: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    with suppress(Exception):
        await nc.jetstream().delete_stream(f"CTI_TEST_{tag}")
    await nc.close()


async def test_an_agent_on_node_b_gets_the_pop_and_ticket_of_a_call_tracked_on_node_a(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    sim = call_centre_config(1, speed=4.0, seed=3)
    try:
        async with (
            SimulatedPbx(sim) as pbx,
            serve(config(tmp_path, "node-a", pg_url, pbx.port, port_a, tag), tmp_path / "a.log") as a,
            serve(config(tmp_path, "node-b", pg_url, free_port(), port_b, tag), tmp_path / "b.log") as b,
            aiohttp.ClientSession() as session,
        ):
            await answering(session, port_a, a, "ok")  # A tracks the sim
            await answering(session, port_b, b, None)  # B's own PBX never answers: degraded
            # Users created once both nodes run (as `cti users add` would, a third process):
            # B reloads them at the login, A within its periodic reload (its ticket opener must
            # know whose phone rang).
            engine = create_engine(pg_url)
            users = UserStore(engine)
            await users.add("agent1", PASSWORD, "agent", "Agent One", interfaces=[AGENT_INTERFACE])
            await users.add("sup", PASSWORD, "supervisor", "Sup")
            await engine.dispose()
            await asyncio.sleep(6.0)
            token = await login(session, port_b, "agent1")
            ws = await session.ws_connect(f"http://127.0.0.1:{port_b}/ws", headers=bearer(token))
            await frame(ws, "state")

            linkedid = pbx.inbound_call("+33612345678", "Jean Dupont", digits="1", talk_s=20.0)
            pop = await frame(ws, "pop", pop__linkedid=linkedid)
            assert pop["pop"]["server"] == "sim" and pop["pop"]["caller"]["e164"] == "+33612345678"
            ticket = await frame(ws, "ticket")  # opened by node A when agent1 answered
            assert ticket["ticket"]["agent"] == "agent1"

            supervisor = await login(session, port_b, "sup")
            async with session.get(
                f"http://127.0.0.1:{port_b}/api/stats/live", headers=bearer(supervisor)
            ) as r:
                assert r.status == 200
                live = await r.json()
            # The whole floor: the sim's queue and agent, tracked on A.
            support = next(q for q in live["queues"] if q["queue"] == "support")
            assert support["presented"] >= 1 and support["answered"] >= 1, support
            assert AGENT_INTERFACE in {a["interface"] for a in live["agents"]}, live["agents"]

            # One session, every node: B's token is good on A; a logout on B ends it on A.
            async with session.get(f"http://127.0.0.1:{port_a}/api/me", headers=bearer(token)) as r:
                assert r.status == 200
            async with session.post(f"http://127.0.0.1:{port_b}/api/logout", headers=bearer(token)) as r:
                assert r.status in (200, 204), await r.text()
            await asyncio.sleep(0.8)  # A's cached answer is at most session_recheck_s old
            async with session.get(f"http://127.0.0.1:{port_a}/api/me", headers=bearer(token)) as r:
                assert r.status == 401
            await ws.close()

            # Node B's metrics: connected to NATS, other nodes' events delivered, none dropped.
            scrape = {"Authorization": f"Bearer scrape-{tag}"}
            async with session.get(f"http://127.0.0.1:{port_b}/metrics", headers=scrape) as r:
                assert r.status == 200
                metrics = {
                    line.split()[0]: float(line.split()[1])
                    for line in (await r.text()).splitlines()
                    if line.startswith("cti_bus_")
                }
            assert metrics["cti_bus_nats_connected"] == 1
            assert metrics["cti_bus_remote_events_total"] > 5
            assert metrics["cti_bus_nats_fenced_total"] == metrics["cti_bus_nats_undecodable_total"] == 0
    finally:
        await delete_stream(tag)


async def health(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
        return dict(await r.json())


async def test_an_agent_on_the_standby_keeps_getting_pops_when_the_owner_dies(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """With stream ownership (`[ha]`): both nodes list the sim, node A owns its stream and
    publishes with its lease's token, node B stands by and serves the desktop. A is killed
    (`kill -9`): B takes the stream over and the agent, still on B, gets the next call's pop."""
    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    engine = create_engine(pg_url)
    await UserStore(engine).add("agent1", PASSWORD, "agent", "Agent One", interfaces=[AGENT_INTERFACE])
    await engine.dispose()
    sim = call_centre_config(1, speed=4.0, seed=5)
    try:
        async with SimulatedPbx(sim) as pbx, aiohttp.ClientSession() as session:
            conf_a = config(tmp_path, "node-a", pg_url, pbx.port, port_a, tag, ha=True)
            conf_b = config(tmp_path, "node-b", pg_url, pbx.port, port_b, tag, ha=True)
            async with serve(conf_a, tmp_path / "a.log") as a:
                await answering(session, port_a, a, "ok")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while (await health(session, port_a))["links"][0].get("role") != "owner":
                    assert loop.time() < deadline, "node A never owned the stream"
                    await asyncio.sleep(0.1)
                async with serve(conf_b, tmp_path / "b.log") as b:
                    await answering(session, port_b, b, "ok")
                    assert (await health(session, port_b))["links"][0]["role"] == "standby"
                    token = await login(session, port_b, "agent1")
                    ws = await session.ws_connect(f"http://127.0.0.1:{port_b}/ws", headers=bearer(token))
                    await frame(ws, "state")

                    first = pbx.inbound_call("+33612345678", "Jean Dupont", digits="1", talk_s=2.0)
                    await frame(ws, "pop", pop__linkedid=first)  # tracked by A, through the bus

                    a.kill()  # kill -9: no release, B waits for the lease to lapse
                    await a.wait()
                    deadline = loop.time() + 30
                    while (await health(session, port_b))["links"][0].get("role") != "owner":
                        assert loop.time() < deadline, "node B never took the stream over"
                        await asyncio.sleep(0.1)
                    second = pbx.inbound_call("+33698765432", "Marie Curie", digits="1", talk_s=2.0)
                    pop = await frame(ws, "pop", pop__linkedid=second)  # tracked by B itself now
                    assert pop["pop"]["caller"]["e164"] == "+33698765432"
                    await ws.close()
    finally:
        await delete_stream(tag)


async def stored_calls(url: str) -> int:
    from sqlalchemy import text

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM calls"))).scalar() or 0)
    finally:
        await engine.dispose()


async def remote_events(session: aiohttp.ClientSession, port: int, tag: str) -> bool:
    """Node B received more than a few events of other nodes (its metrics say)."""
    scrape = {"Authorization": f"Bearer scrape-{tag}"}
    async with session.get(f"http://127.0.0.1:{port}/metrics", headers=scrape) as r:
        text = await r.text()
    line = next(ln for ln in text.splitlines() if ln.startswith("cti_bus_remote_events_total"))
    return float(line.split()[1]) > 3


async def support_figures(session: aiohttp.ClientSession, port: int, token: str) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}/api/stats/live", headers=bearer(token)) as r:
        assert r.status == 200, await r.text()
        live = await r.json()
    return next((q for q in live["queues"] if q["queue"] == "support"), {"presented": 0, "answered": 0})


async def test_a_restarted_node_counts_what_it_missed_once(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
) -> None:
    """Node B is stopped while node A tracks a call to its end, then started again: its durable
    consumer resumes after A's snapshot of the floor (which covers that call's events, over
    before B started) and its statistics restore the stored call; the
    supervisor on B sees the call counted once, not twice."""
    tag = uuid.uuid4().hex[:10]
    port_a, port_b = free_port(), free_port()
    engine = create_engine(pg_url)
    await UserStore(engine).add("agent1", PASSWORD, "agent", "Agent One", interfaces=[AGENT_INTERFACE])
    await UserStore(engine).add("sup", PASSWORD, "supervisor", "Sup")
    await engine.dispose()
    sim = call_centre_config(1, speed=4.0, seed=7)
    conf_b = None
    try:
        async with SimulatedPbx(sim) as pbx, aiohttp.ClientSession() as session:
            conf_a = config(tmp_path, "node-a", pg_url, pbx.port, port_a, tag)
            conf_b = config(tmp_path, "node-b", pg_url, free_port(), port_b, tag)
            async with serve(conf_a, tmp_path / "a.log") as a:
                await answering(session, port_a, a, "ok")
                async with serve(conf_b, tmp_path / "b.log") as b:  # its durable consumer is made
                    await answering(session, port_b, b, None)
                    sup = await login(session, port_b, "sup")
                    assert (await support_figures(session, port_b, sup))["presented"] == 0
                # B stopped (SIGTERM): a whole call meanwhile, tracked and stored by A.
                sup_a = await login(session, port_a, "sup")
                pbx.inbound_call("+33612345678", "Jean Dupont", digits="1", talk_s=4.0)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while (await support_figures(session, port_a, sup_a))["answered"] < 1:
                    assert loop.time() < deadline, "the call never ended on node A"
                    await asyncio.sleep(0.2)
                await pbx.idle(timeout_s=30)
                await until(lambda: stored_calls(pg_url), 30)  # A's writer stored it
                async with serve(conf_b, tmp_path / "b2.log") as b:
                    await answering(session, port_b, b, None)
                    sup = await login(session, port_b, "sup")
                    # B hears A (the snapshot of the floor, then the stream)...
                    await until(lambda: remote_events(session, port_b, tag), 30)
                    await asyncio.sleep(0.5)
                    # ...and the call is counted once: restored from the database, not again.
                    figures = await support_figures(session, port_b, sup)
                    assert figures["presented"] == 1 and figures["answered"] == 1, figures
    finally:
        await delete_stream(tag)
