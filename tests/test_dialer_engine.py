"""The dialer engine against a real SQLite file, a recording fake AMI link and a clock the test
moves: pacing, hours, outcomes and retries, abandons, dispositions, recovery after a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.ami.message import Message
from cti.calls import events as ev
from cti.calls.records import CallRecord
from cti.db.engine import create_engine, session_factory
from cti.db.migrate import upgrade_async
from cti.db.models import DialerAttempt, DialerContact
from cti.dialer import store
from cti.dialer.dispositions import apply_disposition, campaign_stats
from cti.dialer.engine import DialerEngine
from cti.dialer.importer import import_contacts
from cti.dialer.pacing import Agents, PacingInput, pace
from cti.dialer.settings import DialerSettings
from cti.dialer.why import why_not_dialed

MONDAY_10 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 10:00 in Paris


@dataclass
class FakeLink:
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, action: str, headers: Mapping[str, object] | None = None, /, **more: Any) -> Message:
        self.sent.append({"Action": action, **(headers or {}), **more})
        return Message({"Response": "Success", "Message": "Originate successfully queued"})


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
    await upgrade_async(engine)
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("nom;telephone\n" + "".join(f"C{i};06123456{i:02d}\n" for i in range(10)), "utf-8")
    await store.create_campaign(engine, "promo", {"ruleset": "fr", "dial_mode": "progressive"})
    await import_contacts(engine, csv_file, "promo")
    await store.change_state(engine, "promo", "start")
    yield engine
    await engine.dispose()


def member(
    interface: str, *, paused: bool = False, logged_in: bool = True, status: int = 1
) -> ev.AgentStateChanged:
    return ev.AgentStateChanged(
        "pbx", 0.0, "outbound", interface, interface, status, paused, None, logged_in, False, 0
    )


async def dialer(db: AsyncEngine, clock: Clock, link: FakeLink) -> DialerEngine:
    engine = DialerEngine(db, link, DialerSettings(), clock, "pbx")
    await engine.recover()
    return engine


async def tick(engine: DialerEngine) -> None:
    await engine.tick()
    await engine.wait_sent()


async def attempts(db: AsyncEngine) -> list[DialerAttempt]:
    async with session_factory(db)() as session:
        return list((await session.scalars(select(DialerAttempt).order_by(DialerAttempt.id))).all())


async def contact(db: AsyncEngine, contact_id: int) -> DialerContact:
    async with session_factory(db)() as session:
        found = await session.get(DialerContact, contact_id)
        assert found is not None
        return found


def epoch(at: datetime) -> float:
    return at.timestamp()


async def test_no_call_without_agents_then_one_per_free_agent(db: AsyncEngine) -> None:
    link, clock = FakeLink(), Clock(MONDAY_10)
    engine = await dialer(db, clock, link)
    await tick(engine)
    assert link.sent == [] and engine.status["promo"].reason == "no agent is logged in"
    await engine.on_event(member("PJSIP/1001", paused=True))
    await tick(engine)
    assert link.sent == [] and engine.status["promo"].reason == "every agent is paused"
    await engine.on_event(member("PJSIP/1001"))
    await engine.on_event(member("PJSIP/1002"))
    await tick(engine)
    assert len(link.sent) == 2
    first = link.sent[0]
    assert first["Channel"] == "Local/+33612345600@cti-dialer-out"
    assert first["Context"] == "cti-dialer-connect" and first["Async"] == "true"
    assert first["Timeout"] >= 15_000
    assert first["Variable"]["CTI_CAMPAIGN"] == "promo"
    rows = await attempts(db)
    assert [(a.action_id, a.state) for a in rows] == [(s["ActionID"], "sent") for s in link.sent]
    # Calls in flight occupy the free agents: nothing more until one ends.
    await tick(engine)
    assert len(link.sent) == 2


async def test_outcomes_retries_abandon_and_disposition(db: AsyncEngine) -> None:
    link, clock = FakeLink(), Clock(MONDAY_10)
    engine = await dialer(db, clock, link)
    for agent in ("PJSIP/1001", "PJSIP/1002", "PJSIP/1003"):
        await engine.on_event(member(agent))
    await tick(engine)
    busy, answered, dropped = link.sent[:3]
    t = epoch(MONDAY_10) + 5
    await engine.on_event(ev.OriginateResult("pbx", t, "L1", busy["ActionID"], 5, "busy", None))
    # answered, connected, an agent within 1 s: a contact
    await engine.on_event(
        ev.OriginateResult("pbx", t, "L2", answered["ActionID"], 4, "answered", "Local/x;1")
    )
    contact_id = int(answered["Variable"]["CTI_CONTACT"])
    await engine.on_event(ev.DialerConnected("pbx", t, "L2", "promo", str(contact_id)))
    await engine.on_event(ev.CallAnswered("pbx", t + 1, "L2", "outbound", "Agent1", "PJSIP/1001", None, 1, 1))
    record = CallRecord(
        "pbx", "L2", "outbound", t, t + 60, originate_action_id=answered["ActionID"], hangup_cause=16
    )
    await engine.on_event(ev.CallEnded("pbx", t + 60, "L2", record))
    # answered, connected, nobody within 2 s: abandoned
    dropped_id = int(dropped["Variable"]["CTI_CONTACT"])
    await engine.on_event(ev.OriginateResult("pbx", t, "L3", dropped["ActionID"], 4, "answered", "Local/y;1"))
    await engine.on_event(ev.DialerConnected("pbx", t, "L3", "promo", str(dropped_id)))
    ended = CallRecord(
        "pbx", "L3", "outbound", t, t + 9, originate_action_id=dropped["ActionID"], hangup_cause=16
    )
    await engine.on_event(ev.CallEnded("pbx", t + 9, "L3", ended))

    rows = {a.action_id: a for a in await attempts(db)}
    assert (rows[busy["ActionID"]].outcome, rows[busy["ActionID"]].originate_reason) == ("busy", 5)
    assert rows[answered["ActionID"]].outcome == "answered" and not rows[answered["ActionID"]].abandoned
    assert rows[dropped["ActionID"]].outcome == "abandoned" and rows[dropped["ActionID"]].abandoned
    busy_contact = await contact(db, int(busy["Variable"]["CTI_CONTACT"]))
    assert (busy_contact.status, busy_contact.why_code) == ("retry", "retry:busy")
    assert busy_contact.next_attempt_at == MONDAY_10 + timedelta(minutes=15)
    assert (await contact(db, contact_id)).result == "contacted"

    result = await apply_disposition(db, contact_id, "sale", agent="agent1", now=clock.now)
    assert result.plan.result == "sale"
    stats = await campaign_stats(db, store.spec_of(await store.get_campaign(db, "promo")), clock.now)
    assert (stats["attempts"], stats["connected"], stats["abandoned"], stats["converted"]) == (3, 2, 1, 1)
    assert stats["abandon_rate"] == 0.5

    # The abandoned number is locked for 72 h: dialled again neither 15 min later nor the next day.
    clock.now = MONDAY_10 + timedelta(days=1)
    await tick(engine)
    assert all(s["Variable"]["CTI_CONTACT"] != str(dropped_id) for s in link.sent[3:])


async def test_never_outside_the_window(db: AsyncEngine) -> None:
    link, clock = FakeLink(), Clock(datetime(2026, 3, 2, 12, 30, tzinfo=UTC))  # 13:30 Paris: lunch
    engine = await dialer(db, clock, link)
    await engine.on_event(member("PJSIP/1001"))
    await tick(engine)
    assert link.sent == []
    spec = store.spec_of(await store.get_campaign(db, "promo"))
    held = await why_not_dialed(db, spec, clock.now)
    assert {h["why_code"] for h in held} == {"fr:window"}
    assert {h["next_attempt_at"] for h in held} == {"2026-03-02T13:00:00Z"}
    clock.now = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    await tick(engine)
    assert len(link.sent) == 1


async def test_restart_reconciles_without_dialling_twice(db: AsyncEngine) -> None:
    link, clock = FakeLink(), Clock(MONDAY_10)
    engine = await dialer(db, clock, link)
    await engine.on_event(member("PJSIP/1001"))
    await tick(engine)
    assert len(link.sent) == 1
    # "kill -9": a new engine on the same database, the response never came.
    again = await dialer(db, clock, link)
    await again.on_event(member("PJSIP/1001"))
    await tick(again)
    assert len(link.sent) == 1  # the open attempt's contact is not dialled again, nor another call
    late = link.sent[0]["ActionID"]
    await again.on_event(ev.OriginateResult("pbx", epoch(MONDAY_10) + 20, "L9", late, 3, "no_answer", None))
    assert [(a.action_id, a.outcome) for a in await attempts(db)] == [(late, "no_answer")]
    # An attempt whose fate never becomes known is closed as lost after the ring time.
    await tick(again)
    assert len(link.sent) == 2
    third = await dialer(db, clock, link)
    clock.now = MONDAY_10 + timedelta(minutes=10)
    await third.tick()
    assert [a.outcome for a in await attempts(db)] == ["no_answer", "lost"]


def test_pacing() -> None:
    agents = Agents(logged_in=4, available=4, free=2)
    assert pace(PacingInput("progressive", agents, 0, 0, 0, None)).calls == 2
    assert pace(PacingInput("progressive", agents, 1, 0, 0, None)).calls == 1
    assert pace(PacingInput("predictive", agents, 0, 100, 40, 0.0)).calls == 5  # 1/0.4 = 2.5 per agent
    assert pace(PacingInput("predictive", agents, 0, 100, 40, 0.03)).calls == 2  # at the limit: held at 1
    assert pace(PacingInput("predictive", agents, 0, 100, 40, 0.0225)).calls == 3  # sliding down: ratio 1.75
    assert pace(PacingInput("predictive", agents, 0, 10, 4, 0.0)).calls == 2  # too few results yet
    assert pace(PacingInput("preview", agents, 0, 0, 0, None)).calls == 0
