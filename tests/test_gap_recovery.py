"""The recovery after a gap (calls/recovery.py) and the tracker's side of it, with Asterisk's
records and cti's database replaced by fakes: which calls are recorded from the records, which
from what was seen live, and that none is recorded twice.

- A call adopted at a (re)connect (its beginning unseen) that ends while the recovery is pending
  is settled from Asterisk's records, which saw it whole: the part seen live may not tell an
  abandon from a timeout (seen in tests/test_gap_kill.py). One CallEnded, not two.
- An Originate in progress at a restart: its OriginateResponse, which comes to the new daemon,
  finds the adopted call instead of making a second record of the same attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from cti.ami.message import Message
from cti.ami.parser import AmiParser
from cti.calls import events as ev
from cti.calls.gap import RebuildRules, RecoveredCall
from cti.calls.queue_log import QueueLogEntry, parse_lines
from cti.calls.records import CallRecord, IvrStep
from cti.calls.recovery import GapRecovery
from cti.calls.tracker import CallTracker

CAPTURES = Path(__file__).resolve().parent / "captures" / "lab"
pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")
ADOPTED = "1795389589.4"  # reconnect_part2: in conversation with Agent4 when the daemon starts


def messages(name: str) -> list[Message]:
    return AmiParser().feed((CAPTURES / f"{name}.ami").read_bytes())


def feed(tracker: CallTracker, msgs: Sequence[Message]) -> list[ev.Event]:
    return [e for m in msgs for e in tracker.feed(m)]


def ended(events: Sequence[ev.Event]) -> list[CallRecord]:
    return [e.record for e in events if isinstance(e, ev.CallEnded)]


def reconnect_part2() -> tuple[list[Message], list[Message], list[Message]]:
    """The lists the daemon asks for at connect, and the live events after them."""
    channels: list[Message] = []
    status: list[Message] = []
    live: list[Message] = []
    for m in messages("reconnect_part2"):
        aid = m.get("ActionID", "")
        if aid.startswith("coreshowchannels") and "Event" in m:
            channels.append(m)
        elif aid.startswith("queuestatus") and "Event" in m:
            status.append(m)
        elif "Event" in m:
            live.append(m)
    return channels, status, live


class Records:
    """Asterisk's CEL and queue_log as GapRecovery reads them (calls/cel_source.py)."""

    display_url = "postgresql://reader@pbx/asterisk"

    def __init__(self, calls: Sequence[RecoveredCall] = (), fail: int = 0) -> None:
        self.calls = {c.record.linkedid: c for c in calls}
        self.fail = fail
        self.reads: list[tuple[str, ...]] = []

    def _maybe_fail(self) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionRefusedError("PostgreSQL away")

    async def latest(self) -> float | None:
        self._maybe_fail()
        return max((c.record.ended_at or 0.0 for c in self.calls.values()), default=None)

    async def ended_since(self, since: float) -> list[str]:
        return [lid for lid, c in self.calls.items() if (c.record.ended_at or 0.0) >= since]

    async def queue_log_since(self, since: float) -> list[QueueLogEntry]:
        return []

    async def rebuilt(
        self, linkedids: Sequence[str], not_before: float, rules: RebuildRules, finished: bool = True
    ) -> list[RecoveredCall]:
        self.reads.append(tuple(linkedids))
        found = [self.calls[lid] for lid in linkedids if lid in self.calls]
        return [c for c in found if c.record.ended_at is not None or not finished]


class Store:
    """cti's own database: the mark and the calls already stored."""

    def __init__(self, mark: float | None, stored: Sequence[str] = ()) -> None:
        self._mark = mark
        self.stored = set(stored)
        self.marks: list[float] = []

    async def mark(self, server: str) -> float | None:
        return self._mark

    async def save_mark(self, server: str, seen_until: float) -> None:
        self.marks.append(seen_until)

    async def recorded(self, server: str, linkedids: Sequence[str]) -> set[str]:
        return self.stored & set(linkedids)


class Daemon:
    """What the recovery publishes to and saves with."""

    def __init__(self) -> None:
        self.published: list[ev.Event] = []
        self.saved: list[CallRecord] = []

    def publish(self, event: ev.Event) -> None:
        self.published.append(event)

    async def save(self, records: Sequence[CallRecord]) -> None:
        self.saved.extend(records)


def recovery(
    tracker: CallTracker, records: Records, store: Store, daemon: Daemon, records_lag_s: float = 0.0
) -> GapRecovery:
    return GapRecovery(
        tracker,
        daemon.publish,
        records,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        daemon.save,
        RebuildRules(tracker.server),
        margin_s=0.0,
        records_lag_s=records_lag_s,
    )


def as_asterisk_saw_it(linkedid: str, start: float, end: float) -> RecoveredCall:
    """The adopted call as CEL and queue_log tell it: a queue stay, then an answer by Agent4."""
    record = CallRecord("default", linkedid, "inbound", start, end, caller_raw="0612345678")
    lines = [
        f"{int(start) + 1}|{linkedid}|support|NONE|ENTERQUEUE||0612345678|1",
        f"{int(start) + 4}|{linkedid}|support|Agent4|CONNECT|3|1795389592.5|1",
        f"{int(end)}|{linkedid}|support|Agent4|COMPLETECALLER|3|{int(end) - int(start) - 4}|1",
    ]
    return RecoveredCall(record, parse_lines(lines), hangup=("caller", end))


# -- the tracker alone -----------------------------------------------------------------------------


def test_an_adopted_call_that_ends_while_held_is_not_closed_by_the_tracker() -> None:
    channels, status, live = reconnect_part2()
    tracker = CallTracker()
    tracker.hold_adopted = True
    tracker.resync(channels, status, at=1795389597.0)
    events = feed(tracker, live)
    assert ended(events) == []
    assert tracker.held() == [ADOPTED] and tracker.knows(ADOPTED)
    # The records could not be read: closed as seen, once.
    [record] = ended(tracker.settle_held(ADOPTED))
    assert (record.linkedid, record.outcome, record.agent, record.closed_by) == (
        ADOPTED,
        "answered",
        "Agent4",
        "events",
    )
    assert tracker.held() == [] and tracker.settle_held(ADOPTED) == []


def test_without_a_pending_recovery_an_adopted_call_ends_as_before() -> None:
    channels, status, live = reconnect_part2()
    tracker = CallTracker()
    tracker.resync(channels, status, at=1795389597.0)
    assert [r.linkedid for r in ended(feed(tracker, live))] == [ADOPTED]
    assert tracker.held() == []


@pytest.mark.parametrize(
    ("capture", "outcome", "called"),
    [
        ("outbound_busy", "outbound_busy", "0600000002"),
        ("outbound_noanswer", "outbound_no_answer", "0600000003"),
        ("outbound_answered", "outbound_answered", "0600000001"),
    ],
)
def test_an_originate_in_progress_at_a_restart_is_recorded_once(
    capture: str, outcome: str, called: str
) -> None:
    """The daemon starts while an Originate rings (its DialBegin went to the daemon before):
    the OriginateResponse that follows names the dialled leg, not a channel the new daemon
    knows; it used to make a second record (`originate-<ActionID>`) beside the adopted call."""
    msgs = messages(capture)
    dial = next(i for i, m in enumerate(msgs) if m.get("Event") == "DialBegin")
    created = [m for m in msgs[:dial] if m.get("Event") == "Newchannel"]
    assert created[0]["Channel"].endswith(";1") and created[0]["ChannelState"] != "6"
    snapshot = [Message({**m, "Event": "CoreShowChannel"}) for m in created]
    tracker = CallTracker()
    events = tracker.resync(snapshot, [], at=float(created[-1]["Timestamp"]))
    events += feed(tracker, msgs[dial + 1 :]) + tracker.flush()
    [record] = ended(events)
    assert (record.linkedid, record.outcome, record.direction, record.called) == (
        created[0]["Uniqueid"],
        outcome,
        "outbound",
        called,
    )


def test_an_originate_answered_before_a_restart_waits_for_no_response() -> None:
    """Up when adopted: its OriginateResponse went to the daemon that is gone, none will come,
    so the call must not wait for one when it ends."""
    channels, status, live = reconnect_part2()
    first = next(m for m in channels if m["Uniqueid"] == ADOPTED)
    assert first["Channel"].endswith(";1") and first["ChannelState"] == "6"
    tracker = CallTracker()
    tracker.resync(channels, status, at=1795389597.0)
    assert [r.linkedid for r in ended(feed(tracker, live))] == [ADOPTED]


# -- GapRecovery -----------------------------------------------------------------------------------


async def test_an_adopted_call_ended_during_the_pass_is_recorded_from_asterisks_records() -> None:
    channels, status, live = reconnect_part2()
    tracker, daemon = CallTracker(), Daemon()
    start, end = 1795389589.0, 1795389609.0
    records = Records([as_asterisk_saw_it(ADOPTED, start, end)])
    gap = recovery(tracker, records, Store(mark=1795389500.0), daemon)
    assert await gap.begin() == 1795389500.0
    tracker.resync(channels, status, at=1795389597.0)
    feed(tracker, live)  # it ends before the pass reads the records
    assert tracker.held() == [ADOPTED]

    assert await gap.recover() == 0  # no call of the gap that nobody knew
    [record] = ended(daemon.published)
    assert daemon.saved == [record]
    assert (record.linkedid, record.closed_by, record.started_at, record.caller_raw) == (
        ADOPTED,
        "cel",
        start,
        "0612345678",
    )
    assert (record.outcome, record.agent, record.wait_s) == ("answered", "Agent4", 3.0)
    assert tracker.held() == [] and not tracker.hold_adopted
    assert gap.floor is None  # the gap is stored: the mark may move on


async def test_calls_the_records_do_not_show_over_are_closed_as_seen() -> None:
    channels, status, live = reconnect_part2()
    tracker, daemon = CallTracker(), Daemon()
    gap = recovery(tracker, Records(), Store(mark=1795389500.0), daemon)
    await gap.begin()
    tracker.resync(channels, status, at=1795389597.0)
    feed(tracker, live)
    await gap.recover()
    [record] = ended(daemon.published)
    assert (record.linkedid, record.closed_by, record.outcome) == (ADOPTED, "events", "answered")
    assert daemon.saved == []  # the call writer stores it, as any call closed live


async def test_a_database_away_releases_held_calls_and_the_pass_is_retried() -> None:
    channels, status, live = reconnect_part2()
    tracker, daemon = CallTracker(), Daemon()
    gone = RecoveredCall(CallRecord("default", "1795389550.1", "inbound", 1795389550.0, 1795389560.0), [])
    records = Records([gone], fail=1)
    gap = recovery(tracker, records, Store(mark=1795389500.0), daemon)
    await gap.begin()
    tracker.resync(channels, status, at=1795389597.0)
    feed(tracker, live)
    gap.start()
    task = gap._task
    assert task is not None
    try:
        await asyncio.wait_for(asyncio.shield(task), 10)  # the retry succeeds
    finally:
        await gap.close()
    assert gap.failures == 1
    by_id = {r.linkedid: r for r in ended(daemon.published)}
    assert set(by_id) == {ADOPTED, "1795389550.1"}
    assert by_id[ADOPTED].closed_by == "events"  # not kept waiting on the database
    assert by_id["1795389550.1"].closed_by == "cel"
    assert [r.linkedid for r in daemon.saved] == ["1795389550.1"]


async def test_calls_known_or_stored_are_not_recorded_again() -> None:
    tracker, daemon = CallTracker(), Daemon()
    calls = [
        RecoveredCall(CallRecord("default", f"17953895{n}0.1", "inbound", 1795389500.0 + n, 1795389510.0), [])
        for n in range(3)
    ]
    store = Store(mark=1795389500.0, stored=["1795389500.1"])
    gap = recovery(tracker, Records(calls), store, daemon)
    await gap.begin()
    assert await gap.recover() == 2
    assert sorted(r.linkedid for r in daemon.saved) == ["1795389510.1", "1795389520.1"]
    # A second pass over the same gap (a reconnect soon after): the database has them now.
    store.stored |= {r.linkedid for r in daemon.saved}
    gap.floor = 1795389500.0
    assert await gap.recover() == 0
    assert len(ended(daemon.published)) == 2


async def test_the_mark_waits_for_the_gap_to_be_stored() -> None:
    tracker, daemon = CallTracker(), Daemon()
    store = Store(mark=1795389500.0)
    gap = recovery(tracker, Records(), store, daemon)
    await gap.begin()
    feed(tracker, messages("inbound_answered")[:20])
    assert tracker.last_event_at > 0
    assert await gap.save_mark() is False  # the gap is not stored yet
    await gap.recover()
    assert await gap.save_mark() is True
    assert store.marks == [tracker.last_event_at]


async def test_a_first_run_stores_its_first_mark_without_waiting_the_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A daemon (or the node that just took a stream over) that died before its first mark
    would leave the next one nothing to recover from: the first mark does not wait for the
    regular period."""
    from cti.calls import recovery as module

    monkeypatch.setattr(module, "MARK_EVERY_S", 3600.0)
    tracker, daemon = CallTracker(), Daemon()
    store = Store(mark=None)
    gap = recovery(tracker, Records(), store, daemon)
    await gap.begin()
    feed(tracker, messages("inbound_answered")[:20])
    gap.keep_marks()
    try:
        for _ in range(100):
            if store.marks:
                break
            await asyncio.sleep(0.05)
        assert store.marks == [tracker.last_event_at]
    finally:
        await gap.close()


async def test_a_first_run_has_no_gap_and_holds_nothing() -> None:
    tracker, daemon = CallTracker(), Daemon()
    gap = recovery(tracker, Records(), Store(mark=None), daemon)
    assert await gap.begin() is None
    assert not tracker.hold_adopted
    assert await gap.recover() == 0


# -- calls in progress at a clean stop -------------------------------------------------------------


def stopped_call() -> CallRecord:
    """What the daemon stored at its stop for a campaign call in progress (`closed_by="shutdown"`)."""
    return CallRecord(
        "default",
        "1795389400.7",
        "outbound",
        1795389400.0,
        called="0600000009",
        originate_reason=4,
        originate_action_id="dialer-c1-42",
        campaign="c1",
        closed_by="shutdown",
    )


async def test_a_call_in_progress_at_a_stop_and_over_at_the_start_is_settled_from_the_records() -> None:
    tracker, daemon = CallTracker(), Daemon()
    tracker.restore([stopped_call()])
    end = 1795389431.5
    asterisk = RecoveredCall(
        CallRecord(
            "default", "1795389400.7", "outbound", 1795389400.0, end, called="0600000009", originate_reason=4
        ),
        [],
        originated=True,
        originate_answered_at=1795389405.0,
        hangup=("caller", end),
    )
    gap = recovery(tracker, Records([asterisk]), Store(mark=1795389420.0), daemon)
    await gap.begin()
    assert ended(tracker.resync([], [], at=1795389600.0)) == []  # held, not closed at this instant
    await gap.recover()
    [record] = ended(daemon.published)
    assert (record.closed_by, record.ended_at, record.outcome, record.hangup_by) == (
        "cel",
        end,
        "outbound_answered",
        "caller",
    )
    # What only the daemon knew stays: the dialer matches its attempt by the ActionID.
    assert (record.originate_action_id, record.campaign) == ("dialer-c1-42", "c1")
    assert daemon.saved == [record]


def test_without_a_pending_recovery_a_call_of_the_stop_is_closed_by_the_resync() -> None:
    tracker = CallTracker()
    tracker.restore([stopped_call()])
    [record] = ended(tracker.resync([], [], at=1795389600.0))
    assert (record.linkedid, record.closed_by, record.ended_at) == ("1795389400.7", "resync", 1795389600.0)


# -- an Originate that began while the daemon was away ---------------------------------------------


def busy_after_connect() -> tuple[list[Message], float, float]:
    """outbound_busy from after its DialBegin: what a daemon that connected then receives (its
    channels were made before, and are gone before the snapshot); the call's start and end."""
    msgs = messages("outbound_busy")
    dial = next(i for i, m in enumerate(msgs) if m.get("Event") == "DialBegin")
    stamps = [float(m["Timestamp"]) for m in msgs if "Timestamp" in m]
    return msgs[dial + 1 :], stamps[0], stamps[-1]


async def test_the_response_of_an_originate_recorded_from_the_records_makes_no_second_call() -> None:
    live, start, end = busy_after_connect()
    tracker, daemon = CallTracker(), Daemon()
    asterisk = RecoveredCall(
        CallRecord(
            "default", "1795389846.90", "outbound", start, end, called="0600000002", originate_reason=5
        ),
        [],
        originated=True,
    )
    gap = recovery(tracker, Records([asterisk]), Store(mark=start - 60), daemon)
    await gap.begin()
    tracker.resync([], [], at=start)
    assert ended(feed(tracker, live)) == []  # the response waits for the pass
    await gap.recover()
    assert [(r.linkedid, r.closed_by, r.outcome) for r in ended(daemon.published)] == [
        ("1795389846.90", "cel", "outbound_busy")
    ]


async def test_an_orphan_response_no_recovered_call_explains_is_an_attempt_of_its_own() -> None:
    live, start, _ = busy_after_connect()
    tracker, daemon = CallTracker(), Daemon()
    gap = recovery(tracker, Records(), Store(mark=start - 60), daemon)
    await gap.begin()
    tracker.resync([], [], at=start)
    feed(tracker, live)
    await gap.recover()
    [record] = ended(daemon.published)
    assert (record.linkedid, record.outcome, record.called) == (
        "originate-originate-33",
        "outbound_busy",
        "0600000002",
    )


# -- a call followed live that ended while the link was cut ----------------------------------------


async def test_a_call_that_ended_during_an_ami_cut_is_recorded_from_the_records() -> None:
    msgs = messages("inbound_answered")
    called = next(i for i, m in enumerate(msgs) if m.get("Event") == "AgentCalled")
    tracker, daemon = CallTracker(), Daemon()
    feed(tracker, msgs[: called + 1])
    [linkedid] = list(tracker.calls)
    start = tracker.calls[linkedid].record.started_at
    gap = recovery(tracker, Records([as_asterisk_saw_it(linkedid, start, start + 30)]), Store(None), daemon)
    gap.link_lost()  # the link drops while the agent's phone rings
    assert await gap.begin() == tracker.last_event_at
    assert ended(tracker.resync([], [], at=start + 60)) == []  # not closed at the resync's instant
    await gap.recover()
    [record] = ended(daemon.published)
    assert (record.linkedid, record.closed_by, record.ended_at, record.outcome, record.agent) == (
        linkedid,
        "cel",
        start + 30,
        "answered",
        "Agent4",
    )


async def test_an_originate_whose_response_went_during_a_cut_is_answered_from_the_records() -> None:
    """Followed live from its start; the link drops while it rings, the callee answers: the
    OriginateResponse is lost, the call goes on. Without the records it would end as an inbound
    `answered`, not as the campaign's `outbound_answered`."""
    msgs = messages("outbound_answered")
    response = next(i for i, m in enumerate(msgs) if m.get("Event") == "OriginateResponse")
    tracker, daemon = CallTracker(), Daemon()
    feed(tracker, msgs[:response])
    [linkedid] = list(tracker.calls)
    answered_at = float(msgs[response]["Timestamp"])
    record = CallRecord("default", linkedid, "outbound", tracker.calls[linkedid].record.started_at)
    as_asterisk = RecoveredCall(record, [], originated=True, originate_answered_at=answered_at)
    gap = recovery(tracker, Records([as_asterisk]), Store(None), daemon)
    gap.link_lost()
    await gap.begin()
    snapshot = [
        Message({**m, "Event": "CoreShowChannel"}) for m in msgs[:response] if m.get("Event") == "Newchannel"
    ]
    tracker.resync(snapshot, [], at=answered_at)
    assert linkedid in tracker.incomplete()
    await gap.recover()
    assert linkedid not in tracker.incomplete()
    [ended_live] = ended(feed(tracker, msgs[response + 1 :]) + tracker.flush())
    assert (ended_live.outcome, ended_live.closed_by) == ("outbound_answered", "events")


async def test_an_originate_whose_dial_and_answer_went_during_a_cut_is_answered_from_the_records() -> None:
    """Its Newchannels seen, then the link drops: its DialBegin (what marks an Originate live)
    and its OriginateResponse are both lost."""
    msgs = messages("outbound_answered")
    dial = next(i for i, m in enumerate(msgs) if m.get("Event") == "DialBegin")
    response = next(i for i, m in enumerate(msgs) if m.get("Event") == "OriginateResponse")
    tracker, daemon = CallTracker(), Daemon()
    feed(tracker, msgs[:dial])
    [linkedid] = list(tracker.calls)
    answered_at = float(msgs[response]["Timestamp"])
    record = CallRecord("default", linkedid, "outbound", tracker.calls[linkedid].record.started_at)
    record.called, record.campaign = "0600000001", "c1"
    as_asterisk = RecoveredCall(record, [], originated=True, originate_answered_at=answered_at)
    gap = recovery(tracker, Records([as_asterisk]), Store(None), daemon)
    gap.link_lost()
    await gap.begin()
    created = [m for m in msgs[:dial] if m.get("Event") == "Newchannel"]
    tracker.resync([Message({**m, "Event": "CoreShowChannel"}) for m in created], [], at=answered_at)
    await gap.recover()
    [ended_live] = ended(feed(tracker, msgs[response + 1 :]) + tracker.flush())
    assert (ended_live.outcome, ended_live.direction, ended_live.called, ended_live.campaign) == (
        "outbound_answered",
        "outbound",
        "0600000001",
        "c1",
    )


async def test_such_an_originate_that_ends_before_the_pass_is_recorded_from_the_records() -> None:
    """The same, but it hangs up as the link comes back, before the pass has read its records:
    held, not closed as an inbound `answered`."""
    msgs = messages("outbound_answered")
    dial = next(i for i, m in enumerate(msgs) if m.get("Event") == "DialBegin")
    response = next(i for i, m in enumerate(msgs) if m.get("Event") == "OriginateResponse")
    tracker, daemon = CallTracker(), Daemon()
    feed(tracker, msgs[:dial])
    [linkedid] = list(tracker.calls)
    start, end = tracker.calls[linkedid].record.started_at, float(msgs[-2]["Timestamp"])
    record = CallRecord("default", linkedid, "outbound", start, end, called="0600000001", originate_reason=4)
    as_asterisk = RecoveredCall(record, [], originated=True, originate_answered_at=start + 3)
    gap = recovery(tracker, Records([as_asterisk]), Store(None), daemon)
    gap.link_lost()
    await gap.begin()
    created = [m for m in msgs[:dial] if m.get("Event") == "Newchannel"]
    tracker.resync([Message({**m, "Event": "CoreShowChannel"}) for m in created], [], at=start + 3)
    assert ended(feed(tracker, msgs[response + 1 :])) == []
    assert tracker.held() == [linkedid]
    await gap.recover()
    [settled] = ended(daemon.published)
    assert (settled.linkedid, settled.closed_by, settled.outcome) == (linkedid, "cel", "outbound_answered")


def svi_call() -> tuple[list[Message], int, list[Message], RecoveredCall]:
    """inbound_ivr_only: its messages, the index of its last IVR step, the CoreShowChannels of
    its channels after it, and the call as Asterisk's records show it while it is up (its
    start and IVR step; the SVI's channel ran the dialplan)."""
    msgs = messages("inbound_ivr_only")
    last_step = max(i for i, m in enumerate(msgs) if m.get("Event") == "UserEvent")
    created = [m for m in msgs if m.get("Event") == "Newchannel"]
    linkedid, ivr_side = created[0]["Uniqueid"], created[1]["Uniqueid"]
    step = IvrStep(float(msgs[last_step]["Timestamp"]), "main", "choice", "9")
    record = CallRecord("default", linkedid, "inbound", float(created[0]["Timestamp"]), ivr_path=[step])
    as_asterisk = RecoveredCall(record, [], originated=True, dialplan_uids=frozenset({ivr_side}))
    snapshot = [Message({**m, "Event": "CoreShowChannel", "ChannelState": "6"}) for m in created]
    return msgs, last_step, snapshot, as_asterisk


async def test_an_adopted_call_that_ran_the_ivr_before_the_cut_is_hung_up_by_the_system() -> None:
    """A customer in the SVI when the daemon came back; the SVI hangs up after the last menu.
    Which channel ran the dialplan comes from the records: from the live part alone, the SVI's
    own hangup looked like the caller's."""
    msgs, last_step, snapshot, as_asterisk = svi_call()
    start, tracker, daemon = as_asterisk.record.started_at, CallTracker(), Daemon()
    gap = recovery(tracker, Records([as_asterisk]), Store(mark=start - 60), daemon)
    await gap.begin()
    tracker.resync(snapshot, [], at=float(msgs[last_step]["Timestamp"]))
    await gap.recover()
    [record] = ended(feed(tracker, msgs[last_step + 1 :]) + tracker.flush())
    assert (record.outcome, record.hangup_by, record.started_at) == ("ivr_only", "system", start)


async def svi_call_held_at_the_pass(
    records: Records,
) -> tuple[CallTracker, GapRecovery, Daemon, RecoveredCall]:
    """The SVI call of the test above, over as the link comes back, before the pass reads its
    records: held. `records` gets what Asterisk's records say of it (its end not written yet)."""
    msgs, last_step, snapshot, as_asterisk = svi_call()  # no end yet
    linkedid, tracker, daemon = as_asterisk.record.linkedid, CallTracker(), Daemon()
    records.calls[linkedid] = as_asterisk
    gap = recovery(
        tracker, records, Store(mark=as_asterisk.record.started_at - 60), daemon, records_lag_s=1.0
    )
    await gap.begin()
    tracker.resync(snapshot, [], at=float(msgs[last_step]["Timestamp"]))
    assert ended(feed(tracker, msgs[last_step + 1 :]) + tracker.flush()) == []
    assert tracker.held() == [linkedid]
    return tracker, gap, daemon, as_asterisk


class LaggingRecords(Records):
    """Asterisk's records a moment behind the AMI events: a call's end shows from the
    `behind`-th read of it on."""

    def __init__(self, end: float, behind: int) -> None:
        super().__init__()
        self.end, self.behind = end, behind

    async def rebuilt(
        self, linkedids: Sequence[str], not_before: float, rules: RebuildRules, finished: bool = True
    ) -> list[RecoveredCall]:
        if finished and len(self.reads) + 1 >= self.behind:
            for lid in linkedids:
                self.calls[lid].record.ended_at = self.end
                self.calls[lid].hangup = ("system", self.end)
        return await super().rebuilt(linkedids, not_before, rules, finished)


async def test_an_adopted_call_over_before_its_records_show_its_end_is_read_again() -> None:
    """Its end shows in the records on the third read: recorded from them, whole."""
    records = LaggingRecords(end=0.0, behind=3)
    tracker, gap, daemon, as_asterisk = await svi_call_held_at_the_pass(records)
    records.end = as_asterisk.record.started_at + 30
    await gap.recover()
    [settled] = ended(daemon.published)
    assert daemon.saved == [settled]
    assert (settled.linkedid, settled.closed_by, settled.ended_at) == (
        as_asterisk.record.linkedid,
        "cel",
        records.end,
    )
    assert (settled.outcome, settled.direction, settled.hangup_by) == ("ivr_only", "inbound", "system")
    assert tracker.held() == [] and not tracker.hold_adopted


async def test_an_adopted_call_whose_records_never_show_it_over_keeps_their_beginning() -> None:
    """Its end never shows (CEL stopped): closed as seen, but with the beginning the records
    hold: its IVR steps, start and direction (seen in tests/test_gap_kill.py and
    tests/test_ha_takeover.py: stored as `no_queue`, or as an answered Originate, its first
    channel being a Local;1)."""
    records = Records()
    tracker, gap, daemon, as_asterisk = await svi_call_held_at_the_pass(records)
    await gap.recover()
    [settled] = ended(daemon.published)
    assert daemon.saved == []  # the call writer stores it, as any call closed live
    assert (settled.linkedid, settled.closed_by) == (as_asterisk.record.linkedid, "events")
    assert (settled.outcome, settled.direction) == ("ivr_only", "inbound")
    beginning = (as_asterisk.record.started_at, as_asterisk.record.ivr_path)
    assert (settled.started_at, settled.ivr_path) == beginning
    assert len([r for r in records.reads if r == (as_asterisk.record.linkedid,)]) >= 3  # read again meanwhile
    assert tracker.held() == [] and not tracker.hold_adopted


class LateRecords(Records):
    """Asterisk's records of a call that began just before the link came back: no row of it
    until the `behind`-th read."""

    def __init__(self, calls: Sequence[RecoveredCall], behind: int) -> None:
        super().__init__(calls)
        self.behind = behind

    async def rebuilt(
        self, linkedids: Sequence[str], not_before: float, rules: RebuildRules, finished: bool = True
    ) -> list[RecoveredCall]:
        if len(self.reads) + 1 < self.behind:
            self.reads.append(tuple(linkedids))
            return []
        return await super().rebuilt(linkedids, not_before, rules, finished)


async def test_an_adopted_call_not_in_the_records_yet_is_completed_once_it_is() -> None:
    """An SVI call that began while no daemon followed the server (a handover between nodes)
    and ran its IVR steps before the link came back: adopted, its CEL rows not written yet when
    the pass first reads them. Read again, it gets its beginning and ends as the SVI call it is,
    not as the Originate its first channel (a Local ;1) looks like (tests/test_ha_takeover.py)."""
    msgs, last_step, snapshot, as_asterisk = svi_call()
    start, step = as_asterisk.record.started_at, as_asterisk.record.ivr_path[0]
    tracker, daemon = CallTracker(), Daemon()
    records = LateRecords([as_asterisk], behind=3)
    gap = recovery(tracker, records, Store(mark=start - 60), daemon, records_lag_s=1.0)
    await gap.begin()
    tracker.resync(snapshot, [], at=float(msgs[last_step]["Timestamp"]))
    await gap.recover()
    assert len(records.reads) >= 3
    [settled] = ended(feed(tracker, msgs[last_step + 1 :]) + tracker.flush())
    assert (settled.outcome, settled.direction, settled.hangup_by) == ("ivr_only", "inbound", "system")
    assert (settled.started_at, settled.ivr_path) == (start, [step])


def abandoned_as_asterisk_saw_it() -> tuple[list[Message], RecoveredCall]:
    """The last events of inbound_abandoned (the caller hangs up in the queue), and the call as
    CEL and queue_log tell it whole."""
    msgs = messages("inbound_abandoned")
    linkedid = "1795389636.16"
    hangup = next(
        i
        for i, m in enumerate(msgs)
        if m.get("Event") == "SoftHangupRequest" and m.get("Uniqueid") == linkedid
    )
    stamps = [float(m["Timestamp"]) for m in msgs if "Timestamp" in m]
    start, end = stamps[0], stamps[-1]
    record = CallRecord("default", linkedid, "inbound", start, end, caller_raw="0612345678")
    lines = [
        f"{int(start) + 5}|1795389636.17|support|NONE|ENTERQUEUE||0612345678|1",
        f"{int(end)}|1795389636.17|support|NONE|ABANDON|1|1|{int(end) - int(start) - 5}",
    ]
    return msgs[hangup - 1 :], RecoveredCall(record, parse_lines(lines), hangup=("caller", end))


async def test_a_call_met_at_its_end_right_after_the_login_is_recorded_from_the_records() -> None:
    """A restart: the caller hangs up in the queue just as the daemon logs in, and its last
    events arrive before the stored mark is read (events flow from the login on). The call, met
    only by its hangup, is held from the start, then recorded from Asterisk's records, which saw
    it whole: before, it was closed from that instant (started at its hangup, an abandon taken
    for a queue timeout: tests/test_gap_kill.py) and, known to the tracker, never recovered."""
    tail, as_asterisk = abandoned_as_asterisk_saw_it()
    tracker, daemon = CallTracker(), Daemon()
    gap = recovery(tracker, Records([as_asterisk]), Store(mark=as_asterisk.record.started_at - 60), daemon)
    assert ended(feed(tracker, tail)) == []  # before the resync, before the mark is read
    assert tracker.held() == [as_asterisk.record.linkedid]
    await gap.begin()
    tracker.resync([], [], at=as_asterisk.record.ended_at or 0.0)
    await gap.recover()
    [record] = ended(daemon.published)
    assert daemon.saved == [record]
    assert (record.closed_by, record.started_at, record.outcome) == (
        "cel",
        as_asterisk.record.started_at,
        "abandoned",
    )


async def test_a_first_run_closes_what_it_held_before_the_mark_as_seen() -> None:
    """The same on a first run (no mark: nothing before it is the daemon's): closed as seen once
    the mark is read, not held for a pass that never comes."""
    tail, as_asterisk = abandoned_as_asterisk_saw_it()
    tracker, daemon = CallTracker(), Daemon()
    gap = recovery(tracker, Records([as_asterisk]), Store(mark=None), daemon)
    assert ended(feed(tracker, tail)) == []
    assert await gap.begin() is None
    [record] = ended(daemon.published)
    assert (record.linkedid, record.closed_by) == (as_asterisk.record.linkedid, "events")
    assert tracker.held() == [] and not tracker.hold_adopted


class BehindRecords(Records):
    """Asterisk's records a moment behind the AMI stream: its calls show (in `latest` and
    `ended_since`) from the `behind`-th read of `latest` on."""

    def __init__(self, calls: Sequence[RecoveredCall], behind: int) -> None:
        super().__init__(calls)
        self.behind, self.latest_reads = behind, 0
        self.hidden = dict(self.calls)
        self.calls = {}

    async def latest(self) -> float | None:
        self.latest_reads += 1
        if self.latest_reads >= self.behind:
            self.calls = self.hidden
        return max((c.record.ended_at or 0.0 for c in self.calls.values()), default=None)


async def test_a_failed_originate_over_as_the_link_came_back_is_one_attempt() -> None:
    """An Originate refused (busy) just as the daemon came back: its channels' events went
    before the login, its response (naming no channel) came after, and Asterisk's records of
    the call were not written yet when the pass began. The pass waits for the records to catch
    up with what was seen live, records the call from them, and the response is that call's:
    one attempt, not a second `originate-<ActionID>` record (seen in tests/test_ha_takeover.py)."""
    msgs = messages("outbound_busy")
    response = next(m for m in msgs if m.get("Event") == "OriginateResponse")
    stamps = [float(m["Timestamp"]) for m in msgs if "Timestamp" in m]
    linkedid = "1795389846.90"
    record = CallRecord("default", linkedid, "outbound", stamps[0], stamps[-1], called="0600000002")
    record.originate_reason = 5
    busy = RecoveredCall(record, [], originated=True, hangup=("caller", stamps[-1]))
    tracker, daemon = CallTracker(), Daemon()
    records = BehindRecords([busy], behind=3)
    gap = recovery(tracker, records, Store(mark=stamps[0] - 60), daemon, records_lag_s=1.0)
    assert ended(feed(tracker, [response])) == []  # held: an orphan while the gap is pending
    await gap.begin()
    tracker.resync([], [], at=stamps[-1])
    await gap.recover()
    assert [r.linkedid for r in ended(daemon.published)] == [linkedid]
    assert [r.linkedid for r in daemon.saved] == [linkedid]


def test_an_originate_restored_from_a_clean_stop_takes_its_late_response() -> None:
    """Node b stores a ringing Originate as in progress at its clean stop; node a restores it at
    its takeover, the resync finds its channels alive, then the callee is busy. The response
    (naming no channel) is that call's: one attempt, busy, not a second `originate-<ActionID>`
    record beside it (seen in tests/test_ha_takeover.py after the hand-over from b to a)."""
    msgs = messages("outbound_busy")
    created = [m for m in msgs if m.get("Event") == "Newchannel"]
    response = next(i for i, m in enumerate(msgs) if m.get("Event") == "OriginateResponse")
    linkedid, start = created[0]["Uniqueid"], float(created[0]["Timestamp"])
    stored = CallRecord("default", linkedid, "outbound", start, called="0600000002", closed_by="shutdown")
    tracker = CallTracker()
    tracker.restore([stored])
    snapshot = [Message({**m, "Event": "CoreShowChannel"}) for m in created]
    assert ended(tracker.resync(snapshot, [], at=start + 2)) == []
    [record] = ended(feed(tracker, msgs[response:]) + tracker.flush())
    assert (record.linkedid, record.originate_reason, record.called) == (linkedid, 5, "0600000002")


def test_a_wrong_key_pressed_twice_during_a_gap_is_two_steps_one_seen_live_is_one() -> None:
    """A call restored after a stop with one step seen live (a wrong key); the records hold that
    step (stamped a moment apart) and, within a second of it, the same wrong key again, then the
    choice: each seen step stands for one recorded step only."""
    start = 1795389400.0
    seen = IvrStep(start + 5.0, "main", "invalid", "9")
    stored = CallRecord("default", "1795389400.8", "inbound", start, ivr_path=[seen], closed_by="shutdown")
    tracker = CallTracker()
    tracker.restore([stored])
    assert "1795389400.8" in tracker.incomplete()
    recorded = CallRecord("default", "1795389400.8", "inbound", start)
    recorded.ivr_path = [
        IvrStep(start + 5.0002, "main", "invalid", "9"),
        IvrStep(start + 5.7, "main", "invalid", "9"),
        IvrStep(start + 7.0, "main", "choice", "1"),
    ]
    assert tracker.complete_adopted(recorded, originated=False, originate_answered_at=None)
    path = tracker.calls["1795389400.8"].record.ivr_path
    assert [(round(s.at - start, 4), s.kind, s.value) for s in path] == [
        (5.0, "invalid", "9"),
        (5.7, "invalid", "9"),
        (7.0, "choice", "1"),
    ]
    assert "1795389400.8" not in tracker.incomplete()
