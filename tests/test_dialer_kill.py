"""`kill -9` of a real `cti serve` in the middle of a campaign, then a restart.

The simulated PBX runs in the test process and records every Originate it receives; the daemon
is a subprocess killed with SIGKILL while calls are ringing, then started again on the same
database. Afterwards: every Originate the PBX received belongs to exactly one attempt row and
was received once, no contact was dialled again before its retry delay, and every attempt is
closed with an outcome (none left open, none missing).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import IO

import pytest

from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.dialer import store
from cti.dialer.importer import import_contacts
from cti.sim.originate import OriginateRequest
from cti.sim.pbx import SimulatedPbx
from test_dialer_sim import SPEED, START, fast_agents_config, rows

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
CONTACTS = 24  # last digits 1 (answers) and 3 (never answers): calls ring 15 simulated seconds


async def prepare(db: Path, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await upgrade_async(engine)
        policy = {"no_answer": {"delay": "1m", "max": 1}}
        await store.create_campaign(
            engine,
            "nuit",
            {"ruleset": "fr", "dial_mode": "progressive", "ring_timeout_s": 15, "retry_policy": policy},
        )
        lines = "".join(f"C{i};06123457{i:02d}{'1' if i % 3 == 0 else '3'}\n" for i in range(CONTACTS))
        path = tmp_path / "contacts.csv"
        path.write_text("nom;telephone\n" + lines.replace(";0612345", ";061234"), encoding="utf-8")
        report = await import_contacts(engine, path, "nuit")
        assert report.rejected == 0, report.reasons
        await store.change_state(engine, "nuit", "start")
    finally:
        await engine.dispose()


def config_file(tmp_path: Path, port: int, db: Path) -> Path:
    config = tmp_path / "cti.toml"
    config.write_text(
        f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {port}\nusername = "cti"\n'
        "keepalive_s = 1.0\nreconnect_cap_s = 0.2\n"
        f'[database]\nurl = "sqlite+aiosqlite:///{db}"\nflush_interval_s = 0.05\n'
        '[log]\nformat = "json"\nlevel = "info"\n[web]\nport = 0\n',
        encoding="utf-8",
    )
    return config


async def serve(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CTI_AMI_PBX1_SECRET": "ctisecret",
        "CTI_DIALER_DIAL_STRING": "Local/{national}@fake-pstn",
        "CTI_DIALER_CONNECT_CONTEXT": "dialer-connect",
        "CTI_DIALER_CLOCK_START": START.replace(hour=10).isoformat(),
        "CTI_DIALER_CLOCK_SPEED": str(SPEED),
        "CTI_DIALER_TICK_S": "0.05",
        # Simulated seconds (the dialer's clock runs at SPEED): an unanswered Originate is
        # closed 15 s ring + 20 s after it was written.
        "CTI_DIALER_RECONCILE_AFTER_S": "20",
    }
    handle = _append(log)
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cti.cli", "serve", "--config", str(config), env=env, stderr=handle
        )
    finally:
        handle.close()


def _append(path: Path) -> IO[bytes]:
    return open(path, "ab")


async def until(check: object, within_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def pause(db: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await store.change_state(engine, "nuit", "pause")
    finally:
        await engine.dispose()


async def settled(db: Path, within_s: float = 30.0) -> None:
    """Every attempt closed (the last results have reached the database)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        attempts, _ = await rows(db)
        if all(a.state == "ended" for a in attempts):
            return
        await asyncio.sleep(0.1)


async def test_kill_9_mid_campaign_neither_double_dials_nor_loses_an_attempt(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    await prepare(db, tmp_path)
    received: list[tuple[str, float]] = []
    async with SimulatedPbx(fast_agents_config()) as pbx:

        def dialled(request: OriginateRequest, _leg: object) -> None:
            received.append((request.action_id or "", pbx.engine.now))

        pbx.engine.originator.on_dial.append(dialled)
        config = config_file(tmp_path, pbx.port, db)
        log = tmp_path / "cti.log"
        first = await serve(config, log)
        try:
            # Killed while Originates are ringing, after a few have been placed.
            await until(lambda: len(received) >= 6 and pbx.engine.originator.active, within_s=40)
            first.send_signal(signal.SIGKILL)
            await first.wait()
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        in_flight_at_kill = {a for a, _ in received}
        second = await serve(config, log)
        try:
            await until(lambda: len(received) >= len(in_flight_at_kill) + 6, within_s=40)
            await pause(db)
            await pbx.idle(timeout_s=60)
            await settled(db)
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 20)
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()

    attempts, contacts = await rows(db)
    by_action = {a.action_id: a for a in attempts}
    # Every Originate the PBX received has its attempt row, and was received once.
    counts = Counter(action for action, _ in received)
    assert all(n == 1 for n in counts.values()), counts.most_common(3)
    assert set(counts) <= set(by_action)
    # No attempt left open; those that never reached the PBX (written, then the kill) are lost.
    assert {a.state for a in attempts} == {"ended"}, Counter(a.state for a in attempts)
    assert all(a.outcome for a in attempts)
    for attempt in attempts:
        if attempt.action_id not in counts:
            assert attempt.outcome == "lost", attempt.action_id
    # No contact dialled again before its retry delay (1 simulated minute).
    per_contact: dict[int, list[float]] = {}
    for action, at in received:
        per_contact.setdefault(by_action[action].contact_id, []).append(at)
    for times in per_contact.values():
        assert all(b - a >= 50 for a, b in pairwise(times)), times
    # The counts agree: each contact's attempt counter is its number of attempt rows.
    rows_per_contact = Counter(a.contact_id for a in attempts)
    assert all(contacts[c].attempts == n for c, n in rows_per_contact.items())
    # The calls placed before the kill all have an outcome: the real one when its news came
    # after the restart (or was stored before the kill), else "lost" (counted as an attempt).
    assert all(by_action[a].outcome for a in in_flight_at_kill)
    assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace")
