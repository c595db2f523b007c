"""The web layer through a real aiohttp server on 127.0.0.1 and real HTTP/WebSocket clients."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.calls import events as ev
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.screenpop.router import PopRouter
from cti.screenpop.service import ScreenPops
from cti.web.auth import LoginLimiter, Principal, TokenSigner, UserStore
from cti.web.hub import Hub
from cti.web.server import WebContext, build_app


class Site:
    def __init__(self, server: TestServer, ctx: WebContext, pops: ScreenPops) -> None:
        self.server, self.ctx, self.pops = server, ctx, pops

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def token(self, session: aiohttp.ClientSession, user: str, password: str = "pw-" + "x" * 8) -> str:
        async with session.post(self.url("/api/login"), json={"username": user, "password": password}) as r:
            assert r.status == 200, await r.text()
            return str((await r.json())["token"])


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
    await upgrade_async(engine)
    users = UserStore(engine)
    password = "pw-" + "x" * 8
    await users.add("alice", password, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
    await users.add("bob", password, "agent", "Bob", interfaces=["Local/agent2@agents/n"])
    await users.add("sam", password, "supervisor", "Sam")
    router = PopRouter(users.user_for_interface)
    hub = Hub(client_queue=8)
    ctx = WebContext(users, TokenSigner(b"test-secret", 3600), LoginLimiter(3), hub, router, time.time)
    pops = ScreenPops(router, hub.send)
    server = TestServer(build_app(ctx), host="127.0.0.1")
    await server.start_server()
    try:
        yield Site(server, ctx, pops)
    finally:
        await hub.close()
        await server.close()
        await engine.dispose()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_unauthenticated_rest_and_websocket_are_refused(site: Site) -> None:
    site.ctx.settings = dataclasses.replace(site.ctx.settings, ws_auth_timeout_s=0.3)
    async with aiohttp.ClientSession() as s:
        async with s.get(site.url("/api/me")) as r:
            assert r.status == 401 and (await r.json())["error_id"] == "unauthenticated"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await s.ws_connect(site.url("/ws"), headers=_bearer("forged.token"))
        assert refused.value.status == 401
        # Without any credential the socket opens, but only an `auth` first message lets it on.
        async with s.ws_connect(site.url("/ws")) as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
        async with s.get(site.url("/api/me"), headers=_bearer("forged.token")) as r:
            assert r.status == 401


async def test_login_sets_a_cookie_and_bad_passwords_are_rate_limited(site: Site) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.post(site.url("/api/login"), json={"username": "alice", "password": "nope"}) as r:
                assert r.status == 401 and (await r.json())["error_id"] == "bad-credentials"
        async with s.post(
            site.url("/api/login"), json={"username": "alice", "password": "pw-" + "x" * 8}
        ) as r:
            assert r.status == 429  # even the right password waits out the minute
    # unsafe=True: aiohttp's client keeps no cookie for a bare IP address otherwise.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        await site.token(s, "bob")
        async with s.get(site.url("/api/me")) as r:  # the HttpOnly cookie alone authenticates
            body = await r.json()
            assert body.get("username") == "bob", body


async def test_bad_rest_bodies_get_400_with_a_stable_error_id(site: Site) -> None:
    async with aiohttp.ClientSession() as s:
        json_type = {"Content-Type": "application/json"}
        async with s.post(site.url("/api/login"), data=b"{not json", headers=json_type) as r:
            assert r.status == 400 and (await r.json())["error_id"] == "bad-json"
        async with s.post(site.url("/api/login"), data=b'{"username": "a", "password": "b"}') as r:
            assert r.status == 415 and (await r.json())["error_id"] == "json-required"
        async with s.post(site.url("/api/login"), json={"username": 5, "password": "x"}) as r:
            assert r.status == 400 and (await r.json())["error_id"] == "bad-field"


async def _receive(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), 5)
        if msg["type"] == kind:
            return dict(msg)


async def test_malformed_websocket_messages_get_errors_and_the_connection_stays_up(site: Site) -> None:
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        async with s.ws_connect(site.url("/ws"), headers=_bearer(token)) as ws:
            await _receive(ws, "state")
            await ws.send_str("{oops")
            assert (await _receive(ws, "error"))["error_id"] == "bad-json"
            await ws.send_str(json.dumps([1, 2]))
            assert (await _receive(ws, "error"))["error_id"] == "bad-message"
            await ws.send_json({"type": "launch.missiles", "ref": 7})
            err = await _receive(ws, "error")
            assert (err["error_id"], err["ref"]) == ("unknown-type", 7)
            await ws.send_bytes(b"\x00\x01")
            assert (await _receive(ws, "error"))["error_id"] == "bad-message"
            await ws.send_json({"type": "ping", "ref": 8})
            assert (await _receive(ws, "pong"))["ref"] == 8


def _ringing(linkedid: str, interface: str) -> list[ev.Event]:
    return [
        ev.CallStarted("pbx", 1.0, linkedid, "inbound", "+33612345678", "Jean Dupont"),
        ev.QueueJoined("pbx", 2.0, linkedid, "support", 1, 1),
        ev.AgentRinging(
            "pbx", 3.0, linkedid, "support", "Agent", interface, "Local/x-1;1", "+33612345678", "+33612345678"
        ),
    ]


async def test_an_agent_gets_only_their_own_pop_and_gets_it_back_on_resume(site: Site) -> None:
    async with aiohttp.ClientSession() as sa, aiohttp.ClientSession() as sb:
        ta, tb = await site.token(sa, "alice"), await site.token(sb, "bob")
        async with (
            sa.ws_connect(site.url("/ws"), headers=_bearer(ta)) as wa,
            sb.ws_connect(site.url("/ws"), headers=_bearer(tb)) as wb,
        ):
            await _receive(wa, "state")
            await _receive(wb, "state")
            for e in _ringing("1.1", "Local/agent1@agents/n"):
                site.pops.on_event(e)
            pop = await _receive(wa, "pop")
            assert pop["pop"]["linkedid"] == "1.1" and pop["pop"]["caller"]["name"] == "Jean Dupont"
            await wb.send_json({"type": "ping"})
            assert (await wb.receive_json(timeout=5))["type"] == "pong"  # bob got nothing before his pong
        async with sa.ws_connect(site.url("/ws"), headers=_bearer(ta)) as wa:
            state = await _receive(wa, "state")
            assert state["pop"]["pop"]["linkedid"] == "1.1"  # a reconnecting desktop resumes its pop


async def test_a_pop_sent_while_the_snapshot_is_read_is_not_undone_by_it(site: Site) -> None:
    # The snapshot (`state`) is read first, then sent: a pop that rings in between must reach
    # the desktop after the snapshot, or the older snapshot (no pop) would hide it.
    reading, go_on = asyncio.Event(), asyncio.Event()

    async def slow_extra(principal: Any) -> dict[str, Any]:
        reading.set()
        await go_on.wait()
        return {}

    site.ctx.resume_extra.append(slow_extra)
    async with aiohttp.ClientSession() as s:
        token = await site.token(s, "alice")
        async with s.ws_connect(site.url("/ws"), headers=_bearer(token)) as ws:
            await asyncio.wait_for(reading.wait(), 5)
            for e in _ringing("3.1", "Local/agent1@agents/n"):
                site.pops.on_event(e)
            go_on.set()
            first = await asyncio.wait_for(ws.receive_json(), 5)
            assert first["type"] == "state" and first["pop"] is None  # read before the ring
            assert (await _receive(ws, "pop"))["pop"]["linkedid"] == "3.1"  # then the ring
            reading.clear()
            go_on.clear()
            await ws.send_json({"type": "resume"})  # the same on a resume
            await asyncio.wait_for(reading.wait(), 5)
            site.ctx.hub.send("alice", {"type": "tick", "i": 1})
            go_on.set()
            assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "state"
            assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "tick"


async def test_a_slow_desktop_is_dropped_without_delaying_the_others(site: Site) -> None:
    async with aiohttp.ClientSession() as sa, aiohttp.ClientSession() as sb:
        ta, tb = await site.token(sa, "alice"), await site.token(sb, "bob")
        async with (
            sa.ws_connect(site.url("/ws"), headers=_bearer(ta), max_msg_size=0) as wa,
            sb.ws_connect(site.url("/ws"), headers=_bearer(tb)) as wb,
        ):
            await _receive(wa, "state")
            await _receive(wb, "state")
            # Alice's desktop stops reading: the socket's buffers fill, then her backlog (8).
            big = {"type": "tick", "pad": "x" * 1_000_000}
            sent_to_bob = 0
            for i in range(200):
                site.ctx.hub.send("alice", big)
                site.ctx.hub.send("bob", {"type": "tick", "i": i})
                sent_to_bob += 1
                await asyncio.sleep(0.005)  # events arrive over time; bob's desktop keeps up
                if site.ctx.hub.slow_disconnects:
                    break
            assert site.ctx.hub.slow_disconnects == 1
            got = [await _receive(wb, "tick") for _ in range(sent_to_bob)]
            assert [m["i"] for m in got] == list(range(sent_to_bob))
            while (msg := await asyncio.wait_for(wa.receive(), 10)).type == aiohttp.WSMsgType.TEXT:
                pass  # what was buffered before the server gave up on her
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_healthz_is_public(site: Site) -> None:
    async with aiohttp.ClientSession() as s, s.get(site.url("/healthz")) as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"


class _StalledSocket:
    """A desktop's socket that stays full until `drain` is set: what `Hub` sees of a slow one."""

    def __init__(self) -> None:
        self.drain = asyncio.Event()
        self.frames: list[str] = []

    async def send_str(self, text: str) -> None:
        self.frames.append(text)
        await self.drain.wait()


async def test_a_resume_on_a_full_socket_keeps_older_frames_ahead_of_the_snapshot() -> None:
    # Frames queued behind a full socket before a resume are older than its snapshot: they go
    # first; frames produced while the snapshot is read go after it.
    hub = Hub(client_queue=8)
    socket = _StalledSocket()
    client = hub.attach(Principal("alice", "agent"), socket)  # type: ignore[arg-type]
    hub.start(client, {"type": "state", "n": 0})  # the socket fills on this first frame
    hub.send("alice", {"type": "tick", "n": 1})  # queued behind it
    hub.hold(client)  # a resume: its snapshot is being read
    hub.send("alice", {"type": "tick", "n": 3})  # happens during the read
    hub.start(client, {"type": "state", "n": 2})
    socket.drain.set()
    assert client.flusher is not None
    await client.flusher
    assert [json.loads(f)["n"] for f in socket.frames] == [0, 1, 2, 3]
    await hub.detach(client)
