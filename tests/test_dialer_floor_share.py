"""Two campaigns calling for the same agents take turns (docs/dialer.md, Pacing).

The real daemon against the simulated PBX: two progressive campaigns on the `outbound` queue,
every contact answers. Each free agent goes to one campaign; the one served longest ago gets the
next. CI's scale-out run showed the other way: the engine paced campaigns in id order at every
tick, the first took every free agent of the floor, and the second placed 2 Originates to the
first's 52 until the first ran out of contacts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cti.app import Daemon
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.dialer import store
from cti.dialer.importer import import_contacts
from cti.sim.originate import OriginateRequest
from cti.sim.pbx import SimulatedPbx
from test_dialer_sim import dialer_settings, fast_agents_config
from test_sim_daemon import settings

# A Monday morning in Paris: hours open for the whole test.
START = datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Europe/Paris"))
CONTACTS = 20
PLACED = 16  # Originates looked at: both campaigns still have contacts by then


async def prepare(db: Path, tmp_path: Path) -> dict[str, int]:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    ids = {}
    try:
        await upgrade_async(engine)
        for name, prefix in (("relance", "0612"), ("fidelite", "0613")):
            spec = {"ruleset": "fr", "dial_mode": "progressive", "queue": "outbound", "ring_timeout_s": 15}
            ids[name] = (await store.create_campaign(engine, name, spec)).id
            path = tmp_path / f"{name}.csv"
            # Last digit 1: the simulator's PSTN answers every one.
            lines = "".join(f"C{i};{prefix}345{i:02d}1\n" for i in range(CONTACTS))
            path.write_text("nom;telephone\n" + lines, encoding="utf-8")
            report = await import_contacts(engine, path, name)
            assert report.accepted == CONTACTS, report.reasons
        for name in ids:
            await store.change_state(engine, name, "start")
        return ids
    finally:
        await engine.dispose()


async def test_two_campaigns_on_one_floor_share_its_agents(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    ids = await prepare(db, tmp_path)
    config = dataclasses.replace(fast_agents_config(), start_time=START.timestamp())
    placed: list[str] = []
    enough = asyncio.Event()
    async with SimulatedPbx(config) as pbx:

        def originated(request: OriginateRequest, _leg: object, _reason: int) -> None:
            placed.append(request.action_id or "")
            if len(placed) >= PLACED:
                enough.set()

        pbx.engine.originator.on_result.append(originated)
        dialer = dataclasses.replace(dialer_settings(), clock_start=START.isoformat())
        daemon = Daemon(dataclasses.replace(settings(pbx.port, db), dialer=dialer))
        await daemon.start()
        try:
            await asyncio.wait_for(enough.wait(), 120)
        finally:
            await daemon.shutdown()
    # The dialer's ActionIDs say whose each call is: cti-dialer-<campaign id>-...
    first = [action.split("-")[2] for action in placed[:PLACED]]
    shares = {name: first.count(str(campaign_id)) for name, campaign_id in ids.items()}
    assert min(shares.values()) >= PLACED // 4, (shares, first)
