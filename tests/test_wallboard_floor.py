"""The supervisor's floor on the wallboard, in headless Chromium against the real daemon and the
simulated PBX: force a break from an agent's row, today's abandoned calls with their callback
button, the service-level alert, listening refused without a phone of one's own, and the TV
mode: everything on one screen without scrolling at 1920×1080 and 1280×720."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import CHROMIUM
from floor_pages import horizontal_overflow, open_page, resize, shoot, simulated_floor
from test_daemon import until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing")
AGENTS = 8


async def agent_row(page: Any, name: str) -> Any:
    return page.locator("#agents tbody tr", has_text=name)


async def test_floor_control_abandoned_calls_alerts_and_tv_mode(tmp_path: Path, browser: Any) -> None:
    async with simulated_floor(tmp_path, agents=AGENTS) as floor:
        page = await open_page(browser, floor.url, "/wallboard", "sam", "wall", "fr")
        await page.wait_for_function(f"document.querySelectorAll('#agents tbody tr').length >= {AGENTS}")

        # A call in conversation: listening needs a phone of one's own (sam has none).
        linkedid = floor.pbx.inbound_call("+33478123456", "", digits="1", stay_s=60, talk_s=60)
        key = ("sim", linkedid)
        await until(lambda: (c := floor.daemon.pops.calls.get(key)) is not None and c.answered_by, 20)
        busy = floor.daemon.pops.calls["sim", linkedid].answered_by
        assert busy is not None
        busy_name = "Agent" + busy.removeprefix("agent")
        row = await agent_row(page, busy_name)
        await page.wait_for_function(
            "[...document.querySelectorAll('#agents tbody tr')]"
            f".some(r => r.textContent.includes({busy_name!r}) && r.dataset.state === 'acd')"
        )
        await row.locator("summary").click()
        await row.locator("button[data-action=wb_listen]").click()
        await page.wait_for_function(
            "document.getElementById('floor-message').textContent.includes('Aucun téléphone')"
        )

        # Force a break on everyone else from their rows, then end one: the PBX's own view follows.
        others = [i for i in range(1, AGENTS + 1) if f"agent{i}" != busy]
        for i in others:
            await (await agent_row(page, f"Agent{i}")).locator("summary").click()
            await (await agent_row(page, f"Agent{i}")).locator("button[data-action=wb_force_pause]").click()
        for i in others:
            await page.wait_for_function(
                "[...document.querySelectorAll('#agents tbody tr')]"
                f".some(r => r.textContent.startsWith('Agent{i}') && r.dataset.state === 'paused')",
                timeout=15_000,
            )
        assert "Pause (imposée)" in await (await agent_row(page, f"Agent{others[0]}")).inner_text()

        # Nobody free: five callers give up after 7 s. The list shows them, each with a callback
        # button; the service level falls under target: an alert.
        for n in range(5):
            floor.pbx.inbound_call(f"+3361234560{n}", "", digits="1", stay_s=7, talk_s=10)
        await page.wait_for_function(
            "document.querySelectorAll('#abandoned-list li[data-linkedid]').length === 5", timeout=30_000
        )
        assert await page.locator("#abandoned-list button.call-back").count() == 5
        assert await page.inner_text("#abandoned-count") == "5"
        await page.wait_for_selector("#alerts li[data-alert=sl]", timeout=15_000)
        assert "NS sous l'objectif : support" in await page.inner_text("#alerts")
        assert await horizontal_overflow(page) == []
        await shoot(page, "wallboard-floor", "wall", "fr")

        # TV mode: large figures, everything on one screen.
        await page.click("#tv")
        for size in ("wall", "small"):
            await resize(page, size)
            assert await horizontal_overflow(page) == []
            height = await page.evaluate("[document.documentElement.scrollHeight, innerHeight]")
            assert height[0] <= height[1] + 1, (size, height)
            await shoot(page, "wallboard-tv", size, "fr")
        await page.context.close()
