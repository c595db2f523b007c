"""The issue's browser scenario with a *simulated* call: the simulated PBX (real AMI over a
socket) rings a ring-all queue; two agents watch in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CHROMIUM
from cti.app import Daemon
from cti.config import AsteriskServer, DatabaseSettings, Secret, Settings, WebSettings
from cti.directory.importer import import_sample
from cti.sim.config import lab_config
from cti.sim.pbx import SimulatedPbx
from test_browser_desktop import PASSWORD, _login
from test_daemon import until

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing")


async def test_simulated_ringall_call_pops_answers_and_withdraws(tmp_path: Path, browser: object) -> None:
    async with SimulatedPbx(lab_config(speed=1.0)) as pbx:
        server = AsteriskServer(name="sim", port=pbx.port, secret=Secret("ctisecret"), keepalive_s=2.0)
        settings = Settings(
            asterisk=(server,),
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"),
            web=WebSettings(port=0),
        )
        daemon = Daemon(settings)
        await daemon.start()
        try:
            await import_sample(daemon.engine, "FR")  # Boulangerie Riviere is 04 78 12 34 56
            await daemon.users.add("alice", PASSWORD, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
            await daemon.users.add("chloe", PASSWORD, "agent", "Chloé", interfaces=["Local/agent3@agents/n"])
            await until(lambda: daemon.trackings[0].resyncs >= 1)
            alice = await _login(browser, daemon.web_url, "alice")
            chloe = await _login(browser, daemon.web_url, "chloe")
            # Choice 5 = hotline, ring-all over agent1 (2 s), agent3 (1 s), agent4 (3 s): agent3 wins.
            pbx.inbound_call("+33478123456", "", digits="5", stay_s=30, talk_s=20)
            for page in (alice, chloe):
                await page.wait_for_function(  # type: ignore[attr-defined]
                    "document.getElementById('pop-caller').textContent.includes('Boulangerie Riviere')",
                    timeout=15_000,
                )
            await alice.wait_for_selector("#pop", state="hidden", timeout=15_000)  # type: ignore[attr-defined]
            await chloe.wait_for_selector("#ticket:not([hidden])", timeout=15_000)  # type: ignore[attr-defined]
            assert "En communication" in await chloe.inner_text("#pop-state")  # type: ignore[attr-defined]
            first = await chloe.inner_text("#ticket-elapsed")  # type: ignore[attr-defined]
            await chloe.wait_for_function(  # type: ignore[attr-defined]
                f"document.getElementById('ticket-elapsed').textContent !== {first!r}", timeout=10_000
            )
        finally:
            await daemon.shutdown()
