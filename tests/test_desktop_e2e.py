"""The desktop path end to end: real AMI bytes on a socket → daemon → an agent's WebSocket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cti.app import Daemon
from cti.calls import events as ev
from fakeami import CAPTURES, FakeAmi
from test_daemon import event_bytes, settings_for, until

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")
PASSWORD = "correct horse battery"


def _ringing(server: str, linkedid: str, interface: str) -> list[ev.Event]:
    return [
        ev.CallStarted(server, 1.0, linkedid, "inbound", "+33612345678", "Jean Dupont"),
        ev.AgentRinging(
            server, 2.0, linkedid, "support", "Agent", interface, "Local/x-1;1", *["+33612345678"] * 2
        ),
    ]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _next(ws: aiohttp.ClientWebSocketResponse, *kinds: str) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive_json(), 10)
        if msg["type"] in kinds:
            return dict(msg)


async def _login(session: aiohttp.ClientSession, daemon: Daemon, user: str) -> str:
    async with session.post(
        f"{daemon.web_url}/api/login", json={"username": user, "password": PASSWORD}
    ) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


async def test_pop_ticket_and_resume_for_the_answering_agent_only(tmp_path: Path) -> None:
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, tmp_path / "cti.db"))
        await daemon.start()
        try:
            await daemon.users.add("alice", PASSWORD, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
            await daemon.users.add("driss", PASSWORD, "agent", "Driss", interfaces=["Local/agent4@agents/n"])
            await until(lambda: fake.actions("QueueStatus"))
            async with aiohttp.ClientSession() as sa, aiohttp.ClientSession() as sd:
                ta, td = await _login(sa, daemon, "alice"), await _login(sd, daemon, "driss")
                wa = await sa.ws_connect(f"{daemon.web_url}/ws", headers=_bearer(ta))
                wd = await sd.ws_connect(f"{daemon.web_url}/ws", headers=_bearer(td))
                assert (await _next(wa, "state"))["pop"] is None
                await _next(wd, "state")
                await fake.push(event_bytes("inbound_answered"))
                pop = await _next(wa, "pop")
                assert pop["pop"]["caller"]["e164"] == "+33612345678" and pop["pop"]["queue"] == "support"
                # the pop and the ticket travel through separate consumers: either may come first
                seen: dict[str, dict[str, Any]] = {}
                while not {"pop.answered", "ticket", "pop.ended"} <= set(seen):
                    msg = await _next(wa, "pop.answered", "ticket", "pop.ended")
                    seen.setdefault(msg["type"], msg)
                assert seen["pop.answered"]["pop"]["state"] == "answered"
                ticket = seen["ticket"]["ticket"]
                assert (ticket["agent"], ticket["status"], ticket["queue"]) == ("alice", "open", "support")
                await wa.close()
                # driss's phone never rang: he got nothing but his own figures (the periodic
                # `stats` push of an agent: his rows and his queues' waiting calls), then the pong
                await wd.send_json({"type": "ping"})
                while (msg := await wd.receive_json(timeout=5))["type"] != "pong":
                    assert msg["type"] == "stats" and msg["scope"] == "agent", msg
                    assert all(row["interface"] == "Local/agent4@agents/n" for row in msg["me"]), msg
                await wd.close()
                # a reconnecting desktop gets its open ticket back, its chronometer still running
                await asyncio.sleep(0.3)
                wa = await sa.ws_connect(f"{daemon.web_url}/ws", headers=_bearer(ta))
                state = await _next(wa, "state")
                [resumed] = state["tickets"]
                assert resumed["id"] == ticket["id"] and resumed["elapsed_s"] > ticket["elapsed_s"]
                await wa.close()
        finally:
            await daemon.shutdown()


async def test_customer_rest_create_lookup_choose_and_history(tmp_path: Path) -> None:
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, tmp_path / "cti.db"))
        await daemon.start()
        try:
            await daemon.users.add("alice", PASSWORD, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
            await until(lambda: fake.actions("QueueStatus"))
            async with aiohttp.ClientSession() as s:
                token = await _login(s, daemon, "alice")
                auth = {"Authorization": f"Bearer {token}"}
                url = daemon.web_url
                async with s.post(f"{url}/api/customers", json={"name": ""}, headers=auth) as r:
                    assert r.status == 400 and (await r.json())["error_id"] == "bad-field"
                body = {
                    "name": "Jean Dupont",
                    "phones": ["06 12 34 56 78"],
                    "server": "pbx1",
                    "linkedid": "9.9",
                }
                # Not a call of hers: nothing is created or linked (docs/security.md).
                async with s.post(f"{url}/api/customers", json=body, headers=auth) as r:
                    assert r.status == 404 and (await r.json())["error_id"] == "call-not-found"
                for event in _ringing("pbx1", "9.9", "Local/agent1@agents/n"):
                    daemon.screen_pops.on_event(event)
                async with s.post(f"{url}/api/customers", json=body, headers=auth) as r:
                    assert r.status == 201, await r.text()
                    created = await r.json()
                async with s.get(
                    f"{url}/api/customers/lookup", params={"number": "+33612345678"}, headers=auth
                ) as r:
                    found = await r.json()
                assert found["status"] == "found" and found["customers"][0]["id"] == created["id"]
                async with s.get(f"{url}/api/customers/{created['id']}/history", headers=auth) as r:
                    assert r.status == 200
                async with s.get(f"{url}/api/customers/999999", headers=auth) as r:
                    assert r.status == 404 and (await r.json())["error_id"] == "customer-not-found"
                chosen = await daemon.directory.customer_for_call("pbx1", "9.9")
                assert chosen is not None and chosen.id == created["id"]
        finally:
            await daemon.shutdown()


async def test_ticket_elapsed_time_survives_a_daemon_restart(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        first = Daemon(settings_for(fake, db))
        await first.start()
        try:
            await first.users.add("alice", PASSWORD, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
            await until(lambda: fake.actions("QueueStatus"))
            await fake.push(event_bytes("inbound_answered"))
            await until(lambda: first.tickets.open_for_agent("alice"))
            [before] = await first.tickets.open_for_agent("alice")
            opened_at = before.opened_at
        finally:
            await first.shutdown()
        second = Daemon(settings_for(fake, db))
        await second.start()
        try:
            async with aiohttp.ClientSession() as s:
                token = await _login(s, second, "alice")
                ws = await s.ws_connect(f"{second.web_url}/ws", headers=_bearer(token))
                state = await _next(ws, "state")
                await ws.close()
        finally:
            await second.shutdown()
    [ticket] = state["tickets"]
    assert ticket["id"] == before.id and ticket["status"] == "open"
    # The chronometer kept running from the same stored opening instant, daemon down or not.
    assert ticket["opened_at"] == pytest.approx(opened_at, abs=1e-3)
    assert ticket["elapsed_s"] == pytest.approx(state["now"] - opened_at, abs=0.5)
