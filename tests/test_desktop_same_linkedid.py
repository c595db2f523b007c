"""Two PBXs name two calls alike (no `systemname`: docs/scale-out.md), and both ring one agent: the
desktop's frames name each call by its server and its linkedid, and the desktop page acts on the
right one (docs/websocket.md).

The calls are domain events published on the daemon's bus, as the AMI tracker of pbx1 or the
JetStream bus (another node's pbx2) would publish them; the agent is connected through a real
WebSocket, then through the desktop page in headless Chromium.

pbx1's call 1700000000.1 rings alice, then pbx2's call of the same linkedid rings her (her pop is
now pbx2's); pbx1's caller hangs up: the withdrawal says server pbx1, and the desktop keeps
pbx2's pop. Before, `pop.withdraw` carried the linkedid alone and the page dropped pbx2's pop.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import CHROMIUM
from cti.app import Daemon
from cti.calls import events as ev
from cti.calls.records import CallRecord
from fakeami import FakeAmi
from test_daemon import settings_for, until

PASSWORD = "correct horse battery"
INTERFACE = "Local/agent1@agents/n"
LINKEDID = "1700000000.1"  # on both PBXs


def ring(server: str, caller: str, name: str, at: float) -> list[ev.Event]:
    return [
        ev.CallStarted(server, at, LINKEDID, "inbound", caller, name),
        ev.AgentRinging(server, at + 1, LINKEDID, "support", "Agent", INTERFACE, "Local/x-1;1", caller, None),
    ]


def ended(server: str, at: float, agent: str | None = None) -> ev.CallEnded:
    record = CallRecord(server, LINKEDID, "inbound", at - 10, ended_at=at, outcome="abandoned", agent=agent)
    return ev.CallEnded(server, at, LINKEDID, record)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        made = Daemon(settings_for(fake, tmp_path / "cti.db"))
        await made.start()
        try:
            await made.users.add("alice", PASSWORD, "agent", "Alice", interfaces=[INTERFACE])
            await until(lambda: fake.actions("QueueStatus"))
            yield made
        finally:
            await made.shutdown()


async def frames_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(ws.receive_json(), 10)
        if message.get("type") == kind:
            return dict(message)


async def test_frames_name_the_call_by_server_and_linkedid(daemon: Daemon) -> None:
    url = daemon.web_url
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/api/login", json={"username": "alice", "password": PASSWORD}) as r:
            token = (await r.json())["token"]
        async with s.ws_connect(f"{url}/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
            await frames_until(ws, "state")
            for event in ring("pbx1", "0612345678", "Jean Dupont", 1000.0):
                daemon.bus.publish(event)
            first = await frames_until(ws, "pop")
            assert (first["pop"]["server"], first["pop"]["linkedid"]) == ("pbx1", LINKEDID)
            for event in ring("pbx2", "0698765432", "Marie Curie", 1002.0):
                daemon.bus.publish(event)
            second = await frames_until(ws, "pop")
            assert (second["pop"]["server"], second["pop"]["linkedid"]) == ("pbx2", LINKEDID)

            daemon.bus.publish(ended("pbx1", 1005.0))
            withdrawn = await frames_until(ws, "pop.withdraw")
            assert withdrawn == {
                "v": 1,
                "type": "pop.withdraw",
                "server": "pbx1",  # not pbx2's call, though named alike
                "linkedid": LINKEDID,
                "reason": "caller_left",
            }

            daemon.bus.publish(
                ev.CallAnswered("pbx2", 1006.0, LINKEDID, "support", "Agent", INTERFACE, None, 4.0, 4.0)
            )
            answered = await frames_until(ws, "pop.answered")
            assert (answered["pop"]["server"], answered["pop"]["state"]) == ("pbx2", "answered")
            daemon.bus.publish(ended("pbx2", 1030.0, agent="alice"))
            over = await frames_until(ws, "pop.ended")
            assert (over["server"], over["linkedid"]) == ("pbx2", LINKEDID)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} not installed")
async def test_the_desktop_keeps_the_other_pbxs_pop(daemon: Daemon, browser: Any) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{daemon.web_url}/desktop")
    await page.fill("#username", "alice")
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#link.on", timeout=10_000)

    for event in ring("pbx1", "0612345678", "Jean Dupont", 1000.0):
        daemon.bus.publish(event)
    await page.wait_for_function(
        "document.getElementById('pop-caller').textContent.includes('Jean Dupont')", timeout=10_000
    )
    for event in ring("pbx2", "0698765432", "Marie Curie", 1002.0):
        daemon.bus.publish(event)
    await page.wait_for_function(
        "document.getElementById('pop-caller').textContent.includes('Marie Curie')", timeout=10_000
    )
    # pbx1's caller leaves: its withdrawal, then a frame the page reads after it (pbx2's call
    # answered). Whether the pop was hidden in between is watched from before the withdrawal.
    await page.evaluate(
        "window.popHidden = false; new MutationObserver(() => {"
        " if (document.getElementById('pop').hidden) window.popHidden = true; })"
        ".observe(document.getElementById('pop'), {attributes: true})"
    )
    daemon.bus.publish(ended("pbx1", 1005.0))
    daemon.bus.publish(
        ev.CallAnswered("pbx2", 1006.0, LINKEDID, "support", "Agent", INTERFACE, None, 4.0, 4.0)
    )
    await page.wait_for_function("document.getElementById('call-timer').textContent !== ''", timeout=10_000)
    assert await page.evaluate("window.popHidden") is False  # pbx1's end did not take pbx2's pop
    assert await page.is_visible("#pop")
    assert "Marie Curie" in await page.inner_text("#pop-caller")
    # pbx2's call ends: now the pop goes, and the wrap-up begins.
    daemon.bus.publish(ended("pbx2", 1030.0, agent="alice"))
    await page.wait_for_selector("#wrapup:not([hidden])", timeout=10_000)
    assert await page.is_hidden("#pop")
    await context.close()
