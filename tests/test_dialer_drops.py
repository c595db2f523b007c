"""Abandons and late connects kept apart (an agent who picks up 3 s after the callee is not an
abandon, but the drop rate counts it), the campaign's mark on its Originate, the contact a
campaign call's pop presents, and the outbound report: attempts under their campaign, calls of
no campaign apart and never drops. The engine against a real SQLite file and a fake link."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cti.calls import events as ev
from cti.calls.records import CallRecord, QueueSegment
from cti.db.calls_store import CallStore
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.dialer import store
from cti.dialer.dispositions import campaign_stats
from cti.dialer.engine import DialerEngine
from cti.screenpop.router import PopRouter
from cti.stats.history import build_query, outbound_report
from cti.stats.live import LiveStats
from test_dialer_engine import MONDAY_10, Clock, FakeLink, attempts, contact, db, dialer, epoch, member, tick

__all__ = ["db"]  # the fixture


async def _connect(engine: DialerEngine, sent: dict[str, Any], linkedid: str, t: float) -> str:
    """The callee answers and is put through to the queue."""
    contact_id = str(sent["Variable"]["CTI_CONTACT"])
    await engine.on_event(ev.OriginateResult("pbx", t, linkedid, sent["ActionID"], 4, "answered", None))
    await engine.on_event(ev.DialerConnected("pbx", t, linkedid, "promo", contact_id))
    return contact_id


async def test_agent_3s_after_the_callee_is_a_late_connect_not_an_abandon(db: AsyncEngine) -> None:
    link, clock = FakeLink(), Clock(MONDAY_10)
    engine = await dialer(db, clock, link)
    await engine.on_event(member("PJSIP/1001"))
    await engine.on_event(member("PJSIP/1002"))
    await tick(engine)
    late, silent = link.sent[:2]
    t = epoch(MONDAY_10) + 5
    late_contact = await _connect(engine, late, "L1", t)
    silent_contact = await _connect(engine, silent, "L2", t)
    # The live 2 s watch flags both at once for the pacing, before anyone knows how they end.
    clock.now = MONDAY_10 + timedelta(seconds=8)
    await engine.tick()
    assert {a.action_id: a.late for a in engine.open.values()} == {
        late["ActionID"]: True,
        silent["ActionID"]: True,
    }
    _, _, rate = await engine._sample(store.spec_of(await store.get_campaign(db, "promo")), clock.now)
    assert rate == 1.0
    # The agent picks up 3 s after the callee (no auto-answer); nobody ever takes the other.
    await engine.on_event(
        ev.CallAnswered("pbx", t + 3, "L1", "outbound", "Agent 1001", "PJSIP/1001", None, 3, 3)
    )
    for linkedid, action_id, end in (("L1", late["ActionID"], t + 60), ("L2", silent["ActionID"], t + 9)):
        record = CallRecord(
            "pbx", linkedid, "outbound", t, end, originate_action_id=action_id, hangup_cause=16
        )
        await engine.on_event(ev.CallEnded("pbx", end, linkedid, record))

    rows = {a.action_id: a for a in await attempts(db)}
    assert (rows[late["ActionID"]].outcome, rows[late["ActionID"]].abandoned) == ("answered", False)
    assert (rows[silent["ActionID"]].outcome, rows[silent["ActionID"]].abandoned) == ("abandoned", True)
    assert (await contact(db, int(late_contact))).why_code == "contacted"
    assert (await contact(db, int(silent_contact))).why_code == "retry:abandoned"
    spec = store.spec_of(await store.get_campaign(db, "promo"))
    stats = await campaign_stats(db, spec, clock.now)
    assert (stats["connected"], stats["abandoned"], stats["late_connects"], stats["dropped"]) == (2, 1, 1, 2)
    assert (stats["abandon_rate"], stats["drop_rate"]) == (0.5, 1.0)
    # Finished attempts are read back from the database (each counted once).
    assert (await engine._sample(spec, clock.now))[2] == 1.0
    # Only the real abandon takes the 72 h redial lock.
    async with db.connect() as conn:
        history = await store.histories(conn, [rows[a].phone_e164 for a in rows], spec, MONDAY_10)
    assert history[rows[late["ActionID"]].phone_e164].abandoned_at is None
    assert history[rows[silent["ActionID"]].phone_e164].abandoned_at is not None


async def test_agent_within_2s_is_no_drop(db: AsyncEngine) -> None:
    link, clock = FakeLink(), Clock(MONDAY_10)
    engine = await dialer(db, clock, link)
    await engine.on_event(member("PJSIP/1001"))
    await tick(engine)
    [sent] = link.sent
    t = epoch(MONDAY_10) + 5
    await _connect(engine, sent, "L1", t)
    await engine.on_event(
        ev.CallAnswered("pbx", t + 0.4, "L1", "outbound", "Agent 1001", "PJSIP/1001", None, 0, 0)
    )
    record = CallRecord("pbx", "L1", "outbound", t, t + 30, originate_action_id=sent["ActionID"])
    await engine.on_event(ev.CallEnded("pbx", t + 30, "L1", record))
    stats = await campaign_stats(db, store.spec_of(await store.get_campaign(db, "promo")), clock.now)
    assert (stats["late_connects"], stats["dropped"], stats["drop_rate"]) == (0, 0, 0.0)


async def test_the_originate_carries_the_campaign_mark_and_the_callee(db: AsyncEngine) -> None:
    link, clock = FakeLink(), Clock(MONDAY_10)
    engine = await dialer(db, clock, link)
    await engine.on_event(member("PJSIP/1001"))
    await tick(engine)
    [sent] = link.sent
    assert sent["Account"] == "cti-campaign:promo"  # echoed by Asterisk as (Dest)AccountCode
    assert sent["Variable"]["CTI_CALLEE"] == "+33612345600"  # shown on the agent's phone


async def test_campaign_pop_presents_the_contact_not_the_centres_caller_id(db: AsyncEngine) -> None:
    link, clock = FakeLink(), Clock(MONDAY_10)
    engine = await dialer(db, clock, link)
    await engine.on_event(member("PJSIP/1001"))
    await tick(engine)
    [sent] = link.sent
    contact_id = sent["Variable"]["CTI_CONTACT"]
    router = PopRouter({"PJSIP/1001": "agent1"}.get, campaign_contact=engine.contact_for_pop)
    t = epoch(MONDAY_10)
    router.feed(ev.CallStarted("pbx", t, "L1", "inbound", "+33187654321", None))
    # The directory answers about the centre's number first: not shown once the callee is known.
    router.set_customer("pbx", "L1", {"status": "found", "customers": [{"id": 7, "name": "Le centre"}]})
    router.feed(ev.DialerConnected("pbx", t + 2, "L1", "promo", contact_id))
    router.feed(ev.CallerIdentified("pbx", t + 2, "L1", "+33187654321", "+33187654321", "CENTRE"))
    assert router.set_customer("pbx", "L1", {"status": "found", "customers": [{"id": 7}]}) == []
    [(user, pop)] = router.feed(
        ev.AgentRinging(
            "pbx", t + 2, "L1", "outbound", "Agent 1001", "PJSIP/1001", "PJSIP/1001-1", None, None
        )
    )
    assert user == "agent1" and pop["type"] == "pop"
    body = pop["pop"]
    assert body["caller"] == {"raw": "0612345600", "e164": "+33612345600", "name": None, "withheld": False}
    assert body["customer"] == {
        "status": "contact",
        "contact": {"id": int(contact_id), "campaign": "promo", "phone": "+33612345600",
                    "phone_raw": "0612345600", "fields": {"nom": "C0"}},
    }  # fmt: skip
    assert (body["campaign"], body["contact"], body["direction"]) == ("promo", contact_id, "outbound")
    assert router.identified_customer("pbx", "L1") is None  # no directory customer is assumed


async def test_campaign_pop_after_a_restart_still_hides_the_centres_number() -> None:
    router = PopRouter({"PJSIP/1001": "agent1"}.get, campaign_contact=lambda _c, _k: None)
    router.feed(ev.CallStarted("pbx", 1.0, "L1", "inbound", "+33187654321", None))
    router.feed(ev.DialerConnected("pbx", 2.0, "L1", "promo", "12"))
    [(_, pop)] = router.feed(
        ev.AgentRinging("pbx", 2.0, "L1", "outbound", "Agent 1001", "PJSIP/1001", "PJSIP/1001-1", None, None)
    )
    assert pop["pop"]["caller"]["e164"] is None
    assert pop["pop"]["customer"] == {"status": "contact", "contact": {"id": 12, "campaign": "promo"}}


# ---------------------------------------------------------------- cti stats --report outbound
def _outbound_records(t: float) -> list[CallRecord]:
    seg = QueueSegment("outbound", t + 5, left_at=t + 8, outcome="answered", wait_s=3.0, agent="Agent 1001")
    return [
        # a campaign attempt nobody answered: filed under its campaign (accountcode), no contact
        CallRecord("pbx1", "L1", "outbound", t, t + 20, campaign="relance", outcome="outbound_busy"),
        # put through, an agent 3 s later: a late connect
        CallRecord("pbx1", "L2", "outbound", t, t + 60, campaign="relance", contact="2", segments=[seg],
                   outcome="outbound_answered", answered_at=t + 8, wait_s=3.0),
        # put through, nobody: an abandon
        CallRecord("pbx1", "L3", "outbound", t, t + 20, campaign="relance", contact="3",
                   segments=[QueueSegment("outbound", t + 5, outcome="timeout", wait_s=15.0)],
                   outcome="outbound_answered"),
        # click-to-call the customer answered, and one the agent did not pick up: no campaign
        CallRecord("pbx1", "L4", "outbound", t, t + 40, outcome="outbound_answered", answered_at=t + 4,
                   called="+33612345678", agent_interface="PJSIP/1001"),
        CallRecord("pbx1", "L5", "outbound", t, t + 30, outcome="outbound_no_answer"),
    ]  # fmt: skip


EXPECTED_CAMPAIGN = {"attempts": 3, "connects": 2, "abandoned": 1, "late_connects": 1, "dropped": 2}


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in (*EXPECTED_CAMPAIGN, "drop_rate", "kind")}


async def test_outbound_report_files_attempts_under_their_campaign_and_manual_calls_apart(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}")
    try:
        await upgrade_async(engine)
        t = epoch(MONDAY_10)
        await CallStore(engine).save(_outbound_records(t))
        q = build_query("2026-03-02", None, "day", "UTC", now=t)
        report = (await outbound_report(engine, q)).to_json()
    finally:
        await engine.dispose()
    totals = {row["campaign"]: row for row in report["totals"]}
    assert _figures(totals["relance"]) == {**EXPECTED_CAMPAIGN, "drop_rate": 1.0, "kind": "campaign"}
    manual = {"attempts": 2, "connects": 1, "abandoned": 0, "late_connects": 0, "dropped": 0}
    assert _figures(totals[None]) == {**manual, "drop_rate": None, "kind": "manual"}
    assert _figures(report["overall"]) == _figures(totals["relance"])  # the campaigns only
    assert _figures(report["manual"]) == _figures(totals[None])

    live = LiveStats(clock=lambda: t)
    for record in _outbound_records(t):
        live.on_event(ev.CallEnded("pbx1", record.ended_at or t, record.linkedid, record))
    rows = {row["campaign"]: row for row in live.snapshot(t + 60)["outbound"]}
    assert {k: _figures(v) for k, v in rows.items()} == {k: _figures(v) for k, v in totals.items()}
