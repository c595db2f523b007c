"""The README's "run it": `cti demo` as a newcomer runs it, then an agent logs in on the desktop
in headless Chromium: a call rings them within 10 seconds of logging in (the demo's welcome call
rings every free agent), and the wallboard and the management page open for the supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import CHROMIUM
from floor_pages import shoot

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium missing")
CTI = Path(sys.executable).parent / "cti"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def login(browser: Any, url: str, path: str, user: str) -> Any:
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    await page.goto(f"{url}{path}")
    await page.fill("#username", user)
    await page.fill("#password", "cti-demo")
    await page.click("#login-form button[type=submit]")
    return page


async def test_an_agent_who_just_logged_in_gets_a_call_within_ten_seconds(
    tmp_path: Path, browser: Any
) -> None:
    port = free_port()
    demo = await asyncio.create_subprocess_exec(
        str(CTI), "demo", "--port", str(port), "--calls-per-minute", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        banner = b""
        async with asyncio.timeout(60):
            while b"Ctrl-C" not in banner:
                line = await demo.stdout.readline()
                assert line, banner.decode()
                banner += line
        url = f"http://127.0.0.1:{port}"
        assert f"{url}/admin".encode() in banner
        page = await login(browser, url, "/desktop", "agent4")
        await page.wait_for_selector("#link.on", timeout=10_000)
        # Within 10 s of logging in, a call rings this agent: the pop shows.
        await page.wait_for_selector("#pop:not([hidden])", timeout=10_000)
        await shoot(page, "demo-desktop", "laptop", "fr")
        board = await login(browser, url, "/wallboard", "superviseur")
        await board.wait_for_selector("#board:not([hidden])", timeout=10_000)
        admin = await login(browser, url, "/admin", "superviseur")
        await admin.wait_for_selector("#campaigns:not([hidden])", timeout=10_000)
        for opened in (page, board, admin):
            await opened.context.close()
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(20):
                    await demo.communicate()
            except TimeoutError:
                demo.kill()
                await demo.wait()
