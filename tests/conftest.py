"""Shared fixtures.

Passwords: the users tests create in-process are hashed with argon2id at its cheapest parameters
(`cheap_password_hashes`), the same code path at a few microseconds instead of a quarter of a
second of CPU per hash and per login (seconds on a loaded runner, in nearly every web fixture).
A test of the real cost, of the checks' thread pool and of the login limits under a burst keeps
the production parameters: mark it `real_password_cost` (tests/test_security_login.py is).
Subprocesses (`cti users add`, `cti serve`) always hash at the real cost.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

CHROMIUM = os.environ.get("CTI_CHROMIUM", "/usr/bin/chromium")
# Flags as this machine's browser probe uses them: no sandbox as root, no background networking.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """Headless Debian Chromium driven by Playwright (browsers cannot be downloaded here)."""
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


# Tests that run several daemons (or their leases) and time a kill, a freeze or a takeover
# against the wall clock: marked `processes` and run after the rest of the suite, so that in CI
# they meet fewer of the CPU-heavy background jobs (.ci/run: Asterisk build, lab images, mypy,
# second virtualenv), which stretch every step of such a test (test_dialer_ha failed beside them).
HERE = Path(__file__).parent
PROCESS_MODULES = frozenset(
    {
        "test_dialer_ha.py",
        "test_dialer_kill.py",
        "test_gap_kill.py",
        "test_ha_takeover.py",
        "test_scaleout_acceptance.py",
        "test_scaleout_desk.py",
        "test_scaleout_actions.py",
        "test_scaleout_stack.py",
        "test_campaign_leases.py",
        "test_scaleout_catchup.py",
        "test_lease_cut.py",
        "test_readiness.py",
        "test_security_login_shared.py",
    }
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: tests/pbx/conftest.py's hook runs after this one and moves the real-PBX tier
    # (marked `pbx`) behind these: it waits for the Asterisk build and must stay last.
    for item in items:
        if item.path.name in PROCESS_MODULES and item.path.parent == HERE:
            item.add_marker(pytest.mark.processes)
    late = [item for item in items if item.get_closest_marker("processes") is not None]
    if late:
        items[:] = [item for item in items if item.get_closest_marker("processes") is None] + late


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_password_cost: hash and check passwords with the production argon2 parameters"
    )


@pytest.fixture(autouse=True)
def cheap_password_hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker("real_password_cost") is not None:
        yield
        return
    from cti.web import auth

    # argon2id with its minimum memory, one pass, one lane: a hash's parameters travel in it, so
    # logins against these hashes are as cheap; the dummy hash (unknown users) is remade too.
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    auth._dummy_hash.cache_clear()
    try:
        yield
    finally:
        auth._dummy_hash.cache_clear()
