"""A starting node's catch-up (cti/bus_catchup.py, cti/bus_jetstream.py) and a campaign call's
contact for other nodes' pops (cti/screenpop/campaign.py).

Pure parts: the journal keeps the calls in progress and the members' last states; the coverage
rule; a snapshot's parts round-trip and bad bytes are refused, not raised into the node; the
pop router presents another node's contact; live statistics replace a restored call by its
replayed events. Against the real NATS (127.0.0.1:4222, a stream of the test's own): a node
started after calls began and agents changed state replays them once, then the rest of those
calls from the stream, nothing twice; a first node does not wait; a garbage request is ignored.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cti.bus_catchup import (
    MAX_CALL_EVENTS,
    PART_BYTES,
    Coverage,
    Entry,
    Journal,
    SnapshotError,
    SnapshotRequest,
    decode_part,
    encode_parts,
    journaled,
    read_entry,
)
from cti.calls import events as ev
from cti.calls.records import CallRecord, QueueSegment
from cti.config import BusSettings
from cti.screenpop.campaign import CampaignContact, contact_companion
from cti.screenpop.router import PopRouter
from cti.stats.live import LiveStats
from test_bus_jetstream import _nats_up, bus, bus_settings  # noqa: F401 - the fixture
from test_daemon import until

SERVER = "pbx-a"


def started(linkedid: str, at: float = 1.0) -> ev.CallStarted:
    return ev.CallStarted(SERVER, at, linkedid, "inbound", "+33612345678", "Jean")


def joined(linkedid: str, at: float = 2.0) -> ev.QueueJoined:
    return ev.QueueJoined(SERVER, at, linkedid, "support", 1, 1)


def ringing(linkedid: str, at: float = 3.0, interface: str = "PJSIP/101") -> ev.AgentRinging:
    return ev.AgentRinging(SERVER, at, linkedid, "support", "Agent", interface, "PJSIP/101-1", None, None)


def member(interface: str, status: int = 1, logged_in: bool = True, at: float = 0.5) -> ev.AgentStateChanged:
    return ev.AgentStateChanged(
        SERVER, at, "support", interface, "Agent", status, False, None, logged_in, False, 0
    )


def ended(linkedid: str, at: float = 9.0) -> ev.CallEnded:
    return ev.CallEnded(SERVER, at, linkedid, CallRecord(SERVER, linkedid, "inbound", 1.0, ended_at=at))


# ----------------------------------------------------------------------------- the journal
def test_the_journal_keeps_calls_in_progress_and_members_last_states() -> None:
    journal = Journal()
    for e in (member("PJSIP/101"), member("PJSIP/102"), started("c1"), joined("c1"), started("c2")):
        journal.record(e, "a/1")
    journal.record(member("PJSIP/101", status=2, at=4.0), "a/1")  # replaces its older state
    journal.record(member("PJSIP/102", logged_in=False), "a/1")  # out of the queue: forgotten
    journal.record(ringing("c1"), "b/7")
    journal.record(ended("c2"), "a/1")  # over: forgotten with its events
    journal.record(ev.OriginateResult(SERVER, 5.0, "c9", "x", 4, "answered", None), "a/1")  # no call
    captured = journal.capture()
    assert [(o, type(e).__name__) for o, e in captured] == [
        ("a/1", "AgentStateChanged"),
        ("a/1", "CallStarted"),
        ("a/1", "QueueJoined"),
        ("b/7", "AgentRinging"),
    ]
    state = captured[0][1]
    assert isinstance(state, ev.AgentStateChanged) and state.status == 2
    assert journal.calls == 1 and journal.members == 1


def test_the_journal_is_bounded() -> None:
    journal = Journal(max_calls=3)
    for i in range(5):
        journal.record(started(f"c{i}"), "a/1")
    assert journal.calls == 3 and journal.evicted == 2
    assert {e.linkedid for _, e in journal.capture() if isinstance(e, ev.CallEvent)} == {"c2", "c3", "c4"}
    for i in range(MAX_CALL_EVENTS + 10):  # a caller looping in a menu
        journal.record(ev.IvrStepped(SERVER, float(i), "c4", "main", "invalid", "9"), "a/1")
    journal.record(ringing("c4"), "a/1")  # still kept: what the pop needs
    kept = [e for _, e in journal.capture() if isinstance(e, ev.CallEvent) and e.linkedid == "c4"]
    assert len(kept) == MAX_CALL_EVENTS + 1 and isinstance(kept[-1], ev.AgentRinging)


def test_what_a_snapshot_covers() -> None:
    coverage = Coverage("node-a", "boot1", seq=10, position=100)
    # The answering node's own events: by its publishing number, wherever they were stored.
    assert coverage.covers("node-a", "boot1", 10, 150)
    assert not coverage.covers("node-a", "boot1", 11, 90)
    # Everybody else's (and its own of another run): by stream sequence.
    assert coverage.covers("node-c", "x", 500, 100)
    assert not coverage.covers("node-c", "x", 1, 101)
    assert coverage.covers("node-a", "boot0", 999, 100)
    assert not coverage.covers(None, None, None, 101)
    assert journaled(started("c1")) and journaled(member("i"))
    assert not journaled(ev.OriginateResult(SERVER, 1.0, "c", None, 0, "failed", None))
    assert not journaled(ev.LinkStateChanged(SERVER, 1.0, True, ""))


# ----------------------------------------------------------------------------- the wire
def test_a_snapshot_round_trips_in_parts_each_small_enough_for_a_slice() -> None:
    entries: list[Entry] = [("a/1", member(f"PJSIP/{i}")) for i in range(400)]
    entries += [("b/2", started(f"c{i}")) for i in range(400)]
    head = {"node": "a", "boot": "1", "seq": 5, "position": 42, "tokens": {SERVER: 3}}
    parts = [p for p in encode_parts(head, entries) if p is not None]
    assert len(parts) > 1 and all(len(p) < PART_BYTES + 1_000 for p in parts)
    decoded = [decode_part(p) for p in parts]
    first = decoded[0].head
    assert first is not None and first.parts == len(parts) and first.events == len(entries)
    assert first.coverage == Coverage("a", "1", 5, 42) and first.tokens == {SERVER: 3}
    assert [read_entry(item) for part in decoded for item in part.items] == entries
    assert all(part.head is None for part in decoded[1:])


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe",
        b"[]",
        b'{"v": 2, "part": 0}',
        b'{"v": 1, "part": "0", "events": []}',
        b'{"v": 1, "part": 0, "head": {"node": "a"}, "events": []}',
        b'{"v": 1, "part": 1, "events": {}}',
    ],
)
def test_a_part_that_cannot_be_read_is_refused(data: bytes) -> None:
    with pytest.raises(SnapshotError):
        decode_part(data)


def test_events_of_a_part_that_cannot_be_read_are_skipped_and_counted() -> None:
    good = json.loads(next(p for p in encode_parts({}, [("a/1", started("c1"))]) if p is not None))
    good["events"] += [["a/1", {"v": 1, "kind": "no_such_event", "event": {}}], 42, ["a/1"]]
    part = decode_part(json.dumps({**good, "part": 3}).encode())
    assert [read_entry(item) for item in part.items] == [("a/1", started("c1")), None, None, None]
    with pytest.raises(SnapshotError):
        SnapshotRequest.from_bytes(b'{"v": 1, "node": "b", "boot": "x", "need": "all"}')


# ----------------------------------------------------------------------------- campaign contact
CONTACT: dict[str, Any] = {
    "id": 7,
    "campaign": "promo",
    "phone": "+33612345601",
    "phone_raw": "06 12 34 56 01",
}


def contact_event() -> CampaignContact:
    fields = {"nom": "Dupont", "offre": "fibre"}
    return CampaignContact(SERVER, 2.0, "c1", "promo", "7", CONTACT["phone"], CONTACT["phone_raw"], fields)


def test_the_dialling_node_adds_the_contact_after_its_dialer_connected() -> None:
    known = {**CONTACT, "fields": {"nom": "Dupont", "offre": "fibre"}}
    companions = contact_companion(lambda campaign, contact: dict(known) if contact == "7" else None)
    connected = ev.DialerConnected(SERVER, 2.0, "c1", "promo", "7")
    assert companions(connected) == [contact_event()]
    assert companions(ev.DialerConnected(SERVER, 2.0, "c2", "promo", "8")) == []  # not one of ours
    assert companions(started("c1")) == []


def test_another_nodes_contact_is_on_the_pop() -> None:
    router = PopRouter(lambda interface: "agent1" if interface == "PJSIP/101" else None)
    router.feed(started("c1"))
    router.feed(ev.DialerConnected(SERVER, 2.0, "c1", "promo", "7"))  # no dialer memory here
    assert router.feed(contact_event()) == []  # nobody has the pop yet
    [(user, pop)] = router.feed(ringing("c1"))
    assert user == "agent1" and pop["pop"]["customer"]["contact"]["fields"] == {
        "nom": "Dupont",
        "offre": "fibre",
    }
    assert pop["pop"]["caller"]["e164"] == "+33612345601" and pop["pop"]["campaign"] == "promo"
    # Heard after the ring (a publish retried): the pop is updated.
    late = PopRouter(lambda interface: "agent1")
    late.feed(ev.DialerConnected(SERVER, 2.0, "c1", "promo", "7"))
    late.feed(ringing("c1"))
    [(_, update)] = late.feed(contact_event())
    assert (
        update["type"] == "pop.update" and update["pop"]["customer"]["contact"]["fields"]["nom"] == "Dupont"
    )
    # Heard before the DialerConnected: kept by it.
    early = PopRouter(lambda interface: "agent1")
    early.feed(contact_event())
    early.feed(ev.DialerConnected(SERVER, 2.0, "c1", "promo", "7"))
    [(_, first)] = early.feed(ringing("c1"))
    assert first["pop"]["customer"]["contact"]["fields"]["nom"] == "Dupont"


# ----------------------------------------------------------------------------- statistics
def test_a_restored_call_is_replaced_by_its_replayed_events() -> None:
    """A call stored in progress at a clean stop is restored; a snapshot then replays it from
    its start: counted once, not its queue stay twice."""
    tz = ZoneInfo("UTC")
    live = LiveStats(tz=tz, clock=lambda: 10.0)
    record = CallRecord(SERVER, "c1", "inbound", 1.0, segments=[QueueSegment("support", 2.0, position=1)])
    live.restore_call(record, date(1970, 1, 1), still_open=True, now=10.0)
    for e in (started("c1"), joined("c1")):
        live.on_event(e)
    support = next(q for q in live.snapshot(10.0)["queues"] if q["queue"] == "support")
    assert support["waiting"] == 1
    assert live._calls[(SERVER, "c1")].record.segments == [QueueSegment("support", 2.0, position=1)]


# ----------------------------------------------------------------------------- over NATS
async def test_a_node_started_later_replays_the_floor_once_then_follows_the_stream(
    bus_settings: BusSettings,  # noqa: F811
) -> None:
    first = bus(bus_settings, "node-a")
    first.consume("desk", lambda e: None, catch_up=True)
    first.start()
    await until(lambda: first.connected and first.caught_up, 10)  # nobody to ask: at once
    for e in (member("PJSIP/101"), member("PJSIP/102"), started("c1"), joined("c1"), ringing("c1")):
        first.export(e)
    first.export(started("c2"))
    first.export(ended("c2"))  # over before node B starts: not replayed
    assert await first.flush(10)

    # A request B's node cannot make sense of is ignored; A answers the next one.
    import nats

    nc = await nats.connect(bus_settings.nats_url)
    await nc.publish(first.catch_up_subject, b"garbage", reply=nc.new_inbox())
    await nc.flush()

    seen: list[ev.Event] = []
    second = bus(bus_settings, "node-b")
    desk = second.consume("desk", seen.append, catch_up=True)
    second.start()
    await until(lambda: second.caught_up, 10)
    assert [type(e).__name__ for e in seen] == [
        "AgentStateChanged",
        "AgentStateChanged",
        "CallStarted",
        "QueueJoined",
        "AgentRinging",
    ]
    assert desk.replayed == 5 and first.snapshots_sent == 1
    first.export(ev.AgentRingStopped(SERVER, 4.0, "c1", "support", "Agent", "PJSIP/101", "no_answer", 1.0))
    first.export(ended("c1"))
    await until(lambda: len(seen) == 7, 10)
    await asyncio.sleep(0.3)  # anything more would be a duplicate
    assert [type(e).__name__ for e in seen[5:]] == ["AgentRingStopped", "CallEnded"]
    # B's own journal now answers for the floor: c1 is over, the members are there.
    assert second.journal.calls == 0 and second.journal.members == 2
    await nc.close()
    await second.close()
    await first.close()


async def test_nothing_a_starting_node_heard_from_the_stream_is_replayed_again(
    bus_settings: BusSettings,  # noqa: F811
) -> None:
    """Events stored after B's consumer was made but before A took its snapshot reach B both
    ways: the coverage keeps one."""
    first = bus(bus_settings, "node-a")
    first.consume("desk", lambda e: None, catch_up=True)
    original = first._answer

    async def slow_answer(msg: object) -> None:
        # B's consumer exists now: these reach it from the stream, and A's snapshot too.
        for i in range(20):
            first.export(started(f"c{i}"))
        assert await first.flush(10)
        await original(msg)

    first._answer = slow_answer  # type: ignore[method-assign]
    first.start()
    await until(lambda: first.connected and first._responder is not None, 10)
    seen: list[ev.Event] = []
    second = bus(bus_settings, "node-b")
    second.consume("desk", seen.append, catch_up=True)
    second.start()
    await until(lambda: second.caught_up and len(seen) >= 20, 15)
    await asyncio.sleep(0.5)
    assert [e.linkedid for e in seen if isinstance(e, ev.CallEvent)] == [f"c{i}" for i in range(20)]
    await second.close()
    await first.close()


async def test_an_unreadable_event_still_moves_the_position_a_snapshot_answers_for(
    bus_settings: BusSettings,  # noqa: F811
) -> None:
    """Else a starting node's request would wait (timeout_s / 2) for a position the answering
    node never reaches when the stream's last message is bytes it cannot read."""
    import nats

    node = bus(bus_settings, "node-a")
    desk = node.consume("desk", lambda e: None, catch_up=True)
    node.start()
    await until(lambda: node.connected and node.caught_up, 10)
    nc = await nats.connect(bus_settings.nats_url)
    js = nc.jetstream()
    ack = await js.publish(f"{bus_settings.subject_prefix}.{SERVER}.call_started", b"not an event")
    await until(lambda: desk.undecodable == 1, 10)
    assert node._position() == ack.seq
    await nc.close()
    await node.close()


@pytest.mark.parametrize("reply", [b"not json", b'{"v": 1, "part": 3, "events": []}'])
async def test_a_snapshot_that_cannot_be_read_leaves_the_node_going_on_without_it(
    bus_settings: BusSettings,  # noqa: F811
    reply: bytes,
) -> None:
    """Whatever answers the request (another version, a bug): logged, the node follows the
    stream as it would have without a snapshot."""
    import nats

    from cti.bus_jetstream import CATCH_UP_QUEUE

    nc = await nats.connect(bus_settings.nats_url)

    async def answer(msg: Any) -> None:
        await nc.publish(msg.reply, reply)

    await nc.subscribe(f"{bus_settings.subject_prefix}_catchup", queue=CATCH_UP_QUEUE, cb=answer)
    await nc.flush()
    seen: list[ev.Event] = []
    node = bus(bus_settings, "node-b")
    desk = node.consume("desk", seen.append, catch_up=True)
    node.start()
    await until(lambda: node.caught_up, 10)
    assert desk.replayed == 0
    other = bus(bus_settings, "node-a")
    other.start()
    await until(lambda: other.connected, 10)
    other.export(started("c1"))
    await until(lambda: seen == [started("c1")], 10)
    await other.close()
    await node.close()
    await nc.close()
