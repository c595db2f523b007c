"""End to end: a campaign from a CSV file, run by the real daemon against the simulated PBX.

The simulated PBX's fake PSTN decides each call by the number's last digit (1 answers, 2 busy,
3 never answers, 4 congestion). The dialer's clock and the simulator's both start on Monday
2 March 2026 at 19:52 in Paris and run 30 times faster than the wall clock, so the French window
closes at 20:00 during the test: calls are placed, retried, qualified by agents over REST, and
none leaves after 20:00.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import select

from cti.app import Daemon
from cti.config import DialerSettings
from cti.db.engine import create_engine, session_factory
from cti.db.migrate import upgrade_async
from cti.db.models import DialerAttempt, DialerContact
from cti.dialer import store
from cti.dialer.importer import import_contacts
from cti.sim.config import OutboundMix, call_centre_config
from cti.sim.originate import OriginateRequest
from cti.sim.pbx import SimulatedPbx
from cti.web.auth import UserStore
from test_sim_daemon import settings  # the same daemon settings against the simulator

SPEED = 30.0
START = datetime(2026, 3, 2, 19, 52, tzinfo=ZoneInfo("Europe/Paris"))
CLOSE = datetime(2026, 3, 2, 20, 0, tzinfo=ZoneInfo("Europe/Paris"))
PARIS = ZoneInfo("Europe/Paris")
CSV = (
    "nom;telephone;offre\n"
    "Answers A;06 12 34 56 01;fibre\n"
    "Answers B;0612345611;mobile\n"
    "Answers C;+33 6 12 34 56 21;fibre\n"
    "Busy;06.12.34.56.02;fibre\n"
    "No answer;0612345603;box\n"
    "Congestion;0612345604;box\n"
    "Duplicate;06 12 34 56 01;fibre\n"
    "Invalid;12345;x\n"
    "Empty;;x\n"
)


def dialer_settings() -> DialerSettings:
    # The lab dialplan of the simulator: its fake PSTN takes national numbers.
    return DialerSettings(
        dial_string="Local/{national}@fake-pstn",
        connect_context="dialer-connect",
        clock_start=START.isoformat(),
        clock_speed=SPEED,
        tick_s=0.05,
    )


def fast_agents_config() -> Any:
    mix = OutboundMix(by_last_digit=True)
    config = call_centre_config(4, speed=SPEED, seed=3, start_time=START.timestamp(), outbound_mix=mix)
    # Agents who pick up at once: a progressive campaign then abandons nobody.
    quick = {"ring_s": 0.5, "ring_jitter_s": 0.0, "miss_rate": 0.0, "talk_s": 20.0}
    agents = tuple(dataclasses.replace(a, **quick) for a in config.agents)
    return dataclasses.replace(config, agents=agents)


async def prepare(db: Path, tmp_path: Path) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        await upgrade_async(engine)
        await store.create_campaign(
            engine,
            "relance",
            {
                "ruleset": "fr",
                "dial_mode": "progressive",
                "ring_timeout_s": 15,
                "retry_policy": {
                    "busy": {"delay": "1m", "max": 2},
                    "no_answer": {"delay": "1m", "max": 1},
                    "congestion": {"delay": "1m", "max": 1},
                },
            },
        )
        path = tmp_path / "contacts.csv"
        path.write_text(CSV, encoding="utf-8")
        report = await import_contacts(engine, path, "relance")
        await store.change_state(engine, "relance", "start")
        users = UserStore(engine)
        await users.add("agent1", "password1", "agent", "Agent One", "fr", ["Local/agent1@agents/n"], [])
        await users.add("chef", "password2", "supervisor", "Chef", "fr", [], [])
        return report
    finally:
        await engine.dispose()


async def login(session: aiohttp.ClientSession, base: str, user: str, password: str) -> dict[str, str]:
    async with session.post(f"{base}/api/login", json={"username": user, "password": password}) as reply:
        token = (await reply.json())["token"]
    return {"Authorization": f"Bearer {token}"}


async def rows(db: Path) -> tuple[list[DialerAttempt], dict[int, DialerContact]]:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with session_factory(engine)() as session:
            attempts = list((await session.scalars(select(DialerAttempt).order_by(DialerAttempt.id))).all())
            contacts = {c.id: c for c in (await session.scalars(select(DialerContact))).all()}
        return attempts, contacts
    finally:
        await engine.dispose()


def digit(contact: DialerContact) -> str:
    return contact.phone_e164[-1]


async def test_campaign_from_csv_against_the_simulated_pbx(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    report = await prepare(db, tmp_path)
    assert report.reasons == [
        (8, "duplicate of line 2 (+33612345601)"),
        (9, "'12345' is not a valid number (region FR)"),
        (10, "no phone number"),
    ]
    sent: list[tuple[str, float]] = []
    async with SimulatedPbx(fast_agents_config()) as pbx:

        def originated(request: OriginateRequest, _leg: object, _reason: int) -> None:
            sent.append((request.action_id or "", pbx.engine.now))

        pbx.engine.originator.on_result.append(originated)
        daemon = Daemon(dataclasses.replace(settings(pbx.port, db), dialer=dialer_settings()))
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as http:
                await qualify_while_running(daemon, db, http)
            # Let the clock pass 20:00 by a few simulated minutes.
            left = CLOSE + timedelta(minutes=3) - daemon.dialer.clock()
            await asyncio.sleep(left.total_seconds() / SPEED)
            await pbx.idle(timeout_s=60)
            await asyncio.sleep(0.5)
        finally:
            await daemon.shutdown()

    attempts, contacts = await rows(db)
    # Every Originate the PBX received is one attempt, received once.
    assert Counter(a for a, _ in sent) == Counter({a.action_id: 1 for a in attempts})
    # None left outside the window: every attempt decided before 20:00 Paris, and the PBX got
    # each within a few simulated seconds of it.
    assert all(a.created_at < CLOSE for a in attempts)
    assert all(datetime.fromtimestamp(at, UTC) < CLOSE + timedelta(seconds=20) for _, at in sent)
    by_digit: dict[str, list[str]] = {}
    for attempt in attempts:
        by_digit.setdefault(digit(contacts[attempt.contact_id]), []).append(attempt.outcome or "open")
    assert by_digit["2"] == ["busy", "busy", "busy"]  # retried twice, then given up
    assert by_digit["3"] == ["no_answer", "no_answer"]
    assert by_digit["4"] == ["congestion", "congestion"]
    assert sorted(by_digit["1"]) == ["answered", "answered", "answered"]
    final = Counter((digit(c), c.status, c.result) for c in contacts.values())
    assert final[("2", "done", "max_busy")] == 1 and final[("3", "done", "max_no_answer")] == 1
    assert sorted(str(c.result) for c in contacts.values() if digit(c) == "1") == ["None", "refused", "sale"]
    callback = next(c for c in contacts.values() if c.status == "callback")
    # The callback was asked for 20:30: outside the hours, so the dialer holds it to 10:00 the next day.
    assert callback.next_attempt_at is not None and callback.next_attempt_at >= CLOSE
    stats = await campaign_stats_of(db)
    assert stats["abandon_rate"] is not None and stats["abandon_rate"] <= 0.03
    assert (stats["connected"], stats["handled_by_agent"], stats["converted"]) == (3, 3, 1)


async def qualify_while_running(daemon: Daemon, db: Path, http: aiohttp.ClientSession) -> None:
    """As the answered calls end, the agents qualify them: a sale, a refusal, a callback."""
    base = daemon.web_url
    chef = await login(http, base, "chef", "password2")
    wanted = ["sale", "refused", "callback"]
    done: set[int] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while wanted and loop.time() < deadline:
        attempts, _ = await rows(db)
        for attempt in attempts:
            if attempt.outcome == "answered" and attempt.contact_id not in done and wanted:
                kind = wanted.pop(0)
                body: dict[str, Any] = {"disposition": kind}
                if kind == "callback":
                    body["callback_at"] = "2026-03-02T20:30:00+01:00"
                url = f"{base}/api/dialer/contacts/{attempt.contact_id}/disposition"
                async with http.post(url, json=body, headers=chef) as reply:
                    assert reply.status == 200, await reply.text()
                done.add(attempt.contact_id)
        await asyncio.sleep(0.1)
    assert not wanted, "the answered calls did not all end in time"
    async with http.get(f"{base}/api/dialer/campaigns/relance", headers=chef) as reply:
        assert reply.status == 200
        doc = await reply.json()
    assert doc["state"] == "running" and doc["stats"]["attempts"] >= 6
    agent = await login(http, base, "agent1", "password1")
    async with http.post(f"{base}/api/dialer/campaigns/relance/start", headers=agent) as reply:
        assert reply.status == 403  # agents do not manage campaigns


async def campaign_stats_of(db: Path) -> dict[str, Any]:
    from cti.dialer.dispositions import campaign_stats

    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        spec = store.spec_of(await store.get_campaign(engine, "relance"))
        return await campaign_stats(engine, spec, CLOSE)
    finally:
        await engine.dispose()
