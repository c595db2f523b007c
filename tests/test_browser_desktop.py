"""The agent desktop in headless Chromium (Debian's package), driven by Playwright.

A real ring-all call (inbound_ringall_answered: Agent1, Agent3 and Agent4 ring, Agent3 answers) is
pushed through a fake AMI socket into the daemon; two agents watch it in their browsers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import CHROMIUM
from cti.app import Daemon
from fakeami import CAPTURES, FakeAmi
from test_daemon import event_bytes, settings_for, until

pytestmark = [
    pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing"),
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} not installed: apt-get install chromium"
    ),
]
PASSWORD = "correct horse battery"


async def _login(browser: object, url: str, user: str) -> object:
    context = await browser.new_context()  # type: ignore[attr-defined]
    page = await context.new_page()
    await page.goto(f"{url}/desktop")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#link.on", timeout=10_000)
    return page


async def test_pop_ticket_timer_and_ringall_withdrawal_in_the_browser(
    tmp_path: Path, browser: object
) -> None:
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, tmp_path / "cti.db"))
        await daemon.start()
        try:
            async with daemon.engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO customers (id, name, account, vip) VALUES "
                        "(7, 'Boulangerie Rivière SARL', 'C-0007', false)"
                    )
                )
                await conn.execute(
                    text("INSERT INTO customer_phones (customer_id, e164) VALUES (7, '+33478123456')")
                )
            await daemon.users.add("alice", PASSWORD, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
            await daemon.users.add("chloe", PASSWORD, "agent", "Chloé", interfaces=["Local/agent3@agents/n"])
            await until(lambda: fake.actions("QueueStatus"))
            alice = await _login(browser, daemon.web_url, "alice")
            chloe = await _login(browser, daemon.web_url, "chloe")

            # Up to the three AgentCalled events: every ring-all agent's phone rings.
            stream = event_bytes("inbound_ringall_answered")
            third = stream.index(b"Event: AgentCalled\r\n")
            for _ in range(2):
                third = stream.index(b"Event: AgentCalled\r\n", third + 1)
            cut = stream.index(b"\r\n\r\n", third)
            await fake.push(stream[: cut + 4])
            for page in (alice, chloe):
                await page.wait_for_selector("#pop:not([hidden])", timeout=10_000)  # type: ignore[attr-defined]
                await page.wait_for_function(  # type: ignore[attr-defined]
                    "document.getElementById('pop-caller').textContent.includes('Boulangerie Rivière SARL')",
                    timeout=10_000,
                )
            assert "Appel entrant" in await alice.inner_text("#pop-state")  # type: ignore[attr-defined]

            # The rest: Agent3 (chloe) answers; alice lost the race and her pop goes away.
            await fake.push(stream[cut + 4 :])
            await alice.wait_for_selector("#pop", state="hidden", timeout=10_000)  # type: ignore[attr-defined]
            await chloe.wait_for_selector("#ticket:not([hidden])", timeout=10_000)  # type: ignore[attr-defined]
            first = await chloe.inner_text("#ticket-elapsed")  # type: ignore[attr-defined]
            await chloe.wait_for_function(  # type: ignore[attr-defined]
                f"document.getElementById('ticket-elapsed').textContent !== {first!r}", timeout=10_000
            )
            assert await alice.is_hidden("#ticket")  # type: ignore[attr-defined]
            await chloe.screenshot(path=str(tmp_path / "chloe.png"))  # type: ignore[attr-defined]
        finally:
            await daemon.shutdown()
