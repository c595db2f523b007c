"""What the page tests share: a real daemon against the simulated call centre (the one `cti demo`
runs), logins in headless Chromium at a given screen size and language, layout checks that
measure the DOM, and screenshots kept as test artefacts.

Screenshots go to `$CTI_SCREENSHOTS` (default /tmp/cti-screenshots), one PNG per page, size and
language: `desktop-1366x768-fr.png`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cti.app import Daemon
from cti.config import AsteriskServer, DatabaseSettings, Secret, Settings, WebSettings
from cti.directory.importer import import_sample
from cti.sim.config import call_centre_config
from cti.sim.pbx import SimulatedPbx
from test_daemon import until

PASSWORD = "correct horse battery"
SHOTS = Path(os.environ.get("CTI_SCREENSHOTS", "/tmp/cti-screenshots"))
SIZES = {
    "wall": (1920, 1080),
    "wide": (1600, 900),
    "laptop": (1366, 768),
    "small": (1280, 720),
    "phone": (390, 844),
}


@dataclass
class Floor:
    pbx: SimulatedPbx
    daemon: Daemon

    @property
    def url(self) -> str:
        return self.daemon.web_url


@asynccontextmanager
async def simulated_floor(tmp_path: Path, agents: int = 6, traffic: bool = False) -> AsyncIterator[Floor]:
    """The demo's call centre: queues support, sales, billing, hotline, outbound; agentN users
    on `Local/agentN@agents/n`, a supervisor `sam` and an admin `ada`; sample customers."""
    async with SimulatedPbx(call_centre_config(agents, speed=1.0, seed=7)) as pbx:
        server = AsteriskServer(
            name="sim", port=pbx.port, secret=Secret("ctisecret"), keepalive_s=2.0, action_timeout_s=3.0
        )
        settings = Settings(
            asterisk=(server,),
            database=DatabaseSettings(
                url=f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}", flush_interval_s=0.05
            ),
            web=WebSettings(port=0),
        )
        daemon = Daemon(settings)
        await daemon.start()
        try:
            await import_sample(daemon.engine, "FR")
            for i in range(1, agents + 1):
                phone = [f"Local/agent{i}@agents/n"]
                await daemon.users.add(f"agent{i}", PASSWORD, "agent", f"Agent {i}", "fr", interfaces=phone)
            await daemon.users.add("sam", PASSWORD, "supervisor", "Sam", "fr")
            await daemon.users.add("ada", PASSWORD, "admin", "Ada", "en")
            await until(lambda: daemon.trackings[0].resyncs >= 1)
            if traffic:
                pbx.start_traffic()
            yield Floor(pbx, daemon)
        finally:
            await daemon.shutdown()


async def open_page(
    browser: Any, url: str, path: str, user: str, size: str = "laptop", lang: str = "fr"
) -> Any:
    """A fresh browser context at `size`, logged in as `user` through the page's own form."""
    width, height = SIZES[size]
    context = await browser.new_context(viewport={"width": width, "height": height})
    # The language is the page's own choice, remembered in the browser (as an agent would set it).
    await context.add_init_script(f"localStorage.setItem('cti.lang', {lang!r})")
    page = await context.new_page()
    await page.goto(f"{url}{path}")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector("#link.on", timeout=15_000)
    return page


async def resize(page: Any, size: str) -> None:
    width, height = SIZES[size]
    await page.set_viewport_size({"width": width, "height": height})


async def horizontal_overflow(page: Any) -> list[str]:
    """Every element that scrolls sideways or sticks out of the viewport, described; [] when the
    page fits its width."""
    found: list[str] = await page.evaluate(
        """() => {
          const out = [];
          const root = document.documentElement;
          if (root.scrollWidth > root.clientWidth) out.push(`page ${root.scrollWidth} > ${root.clientWidth}`);
          const vw = root.clientWidth;
          for (const el of document.querySelectorAll('body *')) {
            if (el.closest('[hidden]') || !el.getClientRects().length) continue;
            const style = getComputedStyle(el);
            if (style.visibility === 'hidden' || style.display === 'none') continue;
            const cls = typeof el.className === 'string' && el.className ? '.' + el.className : '';
            const name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + cls;
            if (el.scrollWidth > el.clientWidth + 1 && ['auto', 'scroll'].includes(style.overflowX))
              out.push(`${name} scrolls ${el.scrollWidth} > ${el.clientWidth}`);
            const r = el.getBoundingClientRect();
            if (r.width && (r.right > vw + 1 || r.left < -1))
              out.push(`${name} at ${Math.round(r.left)}..${Math.round(r.right)} of ${vw}`);
          }
          return out.slice(0, 20);
        }"""
    )
    return found


async def shoot(page: Any, name: str, size: str, lang: str) -> Path:
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    width, height = SIZES[size]
    path = SHOTS / f"{name}-{width}x{height}-{lang}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def answered_call(floor: Floor, digits: str = "1") -> tuple[str, str]:
    """A customer (Boulangerie Riviere, in the sample directory) calls; (linkedid, the agent who
    answered)."""
    linkedid = floor.pbx.inbound_call("+33478123456", "", digits=digits, stay_s=120, talk_s=120)
    key = ("sim", linkedid)
    await until(lambda: (c := floor.daemon.pops.calls.get(key)) is not None and c.answered_by, 20)
    agent = floor.daemon.pops.calls["sim", linkedid].answered_by
    assert agent is not None
    return linkedid, agent
