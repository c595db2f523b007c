"""A supervisor's click on the floor is never lost to a live update (headless Chromium, the real
daemon, the simulated PBX). The agents' table changes with every figure the daemon pushes; when
it was rebuilt from scratch, a click whose button went down before an update and up after it
landed on two different elements, and the browser sent no click at all: the forced break was
never asked for (seen in CI, tests/test_wallboard_floor.py: the next row's menu stayed open)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from conftest import CHROMIUM
from floor_pages import open_page, simulated_floor

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing")


# Another supervisor's forced break, as the floor's own script sends it.
_PAUSE = """async () => (await fetch('/api/floor/pause', {method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({interface: 'INTERFACE', paused: true})})).status"""


def _row_state(name: str, state: str) -> str:
    return (
        "[...document.querySelectorAll('#agents tbody tr')]"
        f".some(r => r.textContent.startsWith({name!r}) && r.dataset.state === {state!r})"
    )


async def test_a_click_that_spans_a_live_update_still_acts(tmp_path: Path, browser: Any) -> None:
    async with simulated_floor(tmp_path, agents=3) as floor:
        page = await open_page(browser, floor.url, "/wallboard", "sam", "wall", "fr")
        await page.wait_for_function(_row_state("Agent3", "available"))
        row = page.locator("#agents tbody tr", has_text="Agent1")
        await row.locator("summary").click()
        button = row.locator("button[data-action=wb_force_pause]")
        box = await button.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.mouse.down()
        # Meanwhile another supervisor puts Agent 3 on a break: the table shows it.
        status = await page.evaluate(_PAUSE.replace("INTERFACE", "Local/agent3@agents/n"))
        assert status == 200
        await page.wait_for_function(_row_state("Agent3", "paused"))
        await page.mouse.up()
        # The click went through: Agent 1 is on a break too, and its menu is closed.
        await page.wait_for_function(_row_state("Agent1", "paused"), timeout=10_000)
        assert await row.locator("details[open]").count() == 0


async def test_a_call_back_click_that_spans_a_refresh_of_the_list_still_acts(
    tmp_path: Path, browser: Any
) -> None:
    async with simulated_floor(tmp_path, agents=1) as floor:
        page = await open_page(browser, floor.url, "/wallboard", "sam", "wall", "fr")
        # The page's clock under the test's hand (its minute's refresh of the list), from a reload.
        await page.clock.install()
        await page.reload()
        await page.wait_for_function(_row_state("Agent1", "available"))
        status = await page.evaluate(_PAUSE.replace("INTERFACE", "Local/agent1@agents/n"))
        assert status == 200
        await page.wait_for_function(_row_state("Agent1", "paused"))
        floor.pbx.inbound_call("+33612345601", "", digits="1", stay_s=2)  # nobody free: abandoned
        button = page.locator("#abandoned-list li[data-linkedid] button.call-back")
        await button.wait_for(timeout=20_000)
        box = await button.bounding_box()
        assert box is not None
        assert await page.inner_text("#floor-message") == ""
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.mouse.down()
        # The list is read again meanwhile (every minute), unchanged.
        async with page.expect_response(lambda r: "/api/floor/abandoned" in r.url):
            await page.clock.run_for(61_000)
        await asyncio.sleep(0.5)  # the page reads the answer and draws the list
        await page.mouse.up()
        # The click went through: the call back was asked for (sam has no phone of his own, so
        # the daemon says why it cannot dial; either way the floor's message says the outcome).
        await page.wait_for_function("document.getElementById('floor-message').textContent !== ''")


async def test_an_agents_click_on_a_ticket_that_spans_the_lists_redraw_still_acts(
    tmp_path: Path, browser: Any
) -> None:
    async with simulated_floor(tmp_path) as floor:
        tickets = floor.daemon.tickets
        mine = [await tickets.open_for_answer("sim", f"17000000{i}.1", "agent1", "support") for i in range(2)]
        page = await open_page(browser, floor.url, "/desktop", "agent1", "laptop", "fr")
        # The page's clock under the test's hand (the list's redraw every 5 s), from a reload.
        await page.clock.install()
        await page.reload()
        await page.wait_for_function("document.querySelectorAll('#tickets-list li').length === 2")
        shown = await page.inner_text("#ticket-id")
        other = next(t for t in mine if f"#{t.id}" != shown)
        button = page.locator(f"#tickets-list button[data-ticket='{other.id}']")
        await button.scroll_into_view_if_needed()
        box = await button.bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.mouse.down()
        await page.clock.run_for(5_100)  # the chronometers' redraw of the list
        await page.mouse.up()
        await page.wait_for_function(
            f"document.getElementById('ticket-id').textContent === '#{other.id}'", timeout=5_000
        )
