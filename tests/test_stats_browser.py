"""The wallboard in headless Chromium (Debian's package), driven by Playwright.

Real captures are pushed through a fake AMI socket into the daemon: the supervisor's wallboard
shows the waiting-call count rise as callers join queues and fall as they are answered or hang
up; an agent is refused the supervisor-only page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cti.app import Daemon
from fakeami import CAPTURES, FakeAmi
from test_daemon import event_bytes, settings_for, until

CHROMIUM = os.environ.get("CTI_CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing"),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} not installed: apt-get install chromium"
    ),
]
playwright_api = pytest.importorskip("playwright.async_api")
PASSWORD = "correct horse battery"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


def _until_join(name: str) -> tuple[bytes, bytes]:
    """The capture's events cut just after the caller joined the queue."""
    stream = event_bytes(name)
    cut = stream.index(b"\r\n\r\n", stream.index(b"Event: QueueCallerJoin")) + 4
    return stream[:cut], stream[cut:]


async def _waiting_is(page: Any, n: int) -> None:
    await page.wait_for_function(f"document.getElementById('waiting').textContent === '{n}'", timeout=10_000)


async def test_wallboard_waiting_count_rises_and_falls_and_agents_are_refused(
    tmp_path: Path, browser: Any
) -> None:
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, tmp_path / "cti.db"))
        await daemon.start()
        try:
            await daemon.users.add("sam", PASSWORD, "supervisor", "Sam", language="fr")
            await daemon.users.add("alice", PASSWORD, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
            await until(lambda: fake.actions("QueueStatus"))
            url = daemon.web_url

            # An agent: the page itself answers 403.
            agent_ctx = await browser.new_context()
            login = await agent_ctx.request.post(
                f"{url}/api/login", data={"username": "alice", "password": PASSWORD}
            )
            assert login.ok
            agent_page = await agent_ctx.new_page()
            response = await agent_page.goto(f"{url}/wallboard")
            assert response.status == 403
            assert "Accès réservé aux superviseurs" in await agent_page.inner_text("h1")

            # The supervisor logs in on the wallboard's own form and gets the board.
            ctx = await browser.new_context()
            page = await ctx.new_page()
            await page.goto(f"{url}/static/wallboard.html")
            await page.fill("#username", "sam")
            await page.fill("#password", PASSWORD)
            await page.click("#login-form button[type=submit]")
            await page.wait_for_selector("#link.on", timeout=10_000)
            response = await page.goto(f"{url}/wallboard")
            assert response.status == 200
            await page.wait_for_selector("#board:not([hidden])", timeout=10_000)
            await page.wait_for_selector("#link.on", timeout=10_000)
            await _waiting_is(page, 0)
            assert await page.inner_text("[data-i18n=wb_waiting]") == "Appels en attente"

            # Two callers join (support, then billing): 1, then 2 waiting.
            answered_head, answered_tail = _until_join("inbound_answered")
            abandoned_head, abandoned_tail = _until_join("inbound_abandoned")
            await fake.push(answered_head)
            await _waiting_is(page, 1)
            await fake.push(abandoned_head)
            await _waiting_is(page, 2)
            assert await page.locator("#queues tbody tr").count() >= 2
            # Agent1 answers the first: 1 left; the second hangs up: 0.
            await fake.push(answered_tail)
            await _waiting_is(page, 1)
            await fake.push(abandoned_tail)
            await _waiting_is(page, 0)
            # Agent1 shows up in the agents table; the charts are drawn.
            await page.wait_for_function(
                "document.querySelector('#agents tbody').textContent.includes('Agent1')", timeout=10_000
            )
            # One bar per agent state (metrics.AGENT_STATES), "Injoignable" included.
            from cti.stats.metrics import AGENT_STATES

            assert await page.locator("#chart-states rect").count() == len(AGENT_STATES)

            # English on demand, the same figures.
            await page.click("#lang")
            assert await page.inner_text("[data-i18n=wb_waiting]") == "Calls waiting"
            await page.screenshot(path=str(tmp_path / "wallboard.png"), full_page=True)
            await ctx.close()
            await agent_ctx.close()
        finally:
            await daemon.shutdown()
