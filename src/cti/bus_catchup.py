"""What a node starting up learns from a running one: the calls in progress and the agents'
states of every PBX (docs/scale-out.md, "Desktops on any node", "A node that starts").

Every node keeps a **journal** of the floor as its pops and statistics heard it: each call in
progress with its events since it began (dropped at its `CallEnded`), each queue member's last
`AgentStateChanged`. It is fed by the events this node publishes itself (when not from a stale
owner) and by those its catch-up consumer handled from the stream, so it is a function of where
that consumer stands in the stream: "every other node's event up to stream sequence P, and my
own up to my publishing number S".

A node that starts asks, once subscribed, any node already caught up (one NATS request to a
queue group) for a **snapshot**: that node's journal with its P, S and the fencing tokens it
saw, in parts small enough to decode within one slice of the loop. The starting node holds its
catch-up consumer meanwhile, replays the snapshot's events through the same handlers (pops,
statistics), and then handles the stream from where it is, skipping each event the snapshot
already covered (`Coverage`): the snapshot and the stream then add up to each event once.

Pure: the bytes and the bookkeeping. `bus_jetstream.py` does the I/O.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from cti.calls import events as ev
from cti.event_codec import EventDecodeError, encode, from_document

SNAPSHOT_VERSION = 1
# Calls in progress kept at most (a leak guard: every call normally ends with CallEnded).
MAX_CALLS = 20_000
# Events kept per call; past it a call's IVR steps are no longer kept (a caller looping in a
# menu), then nothing but its end.
MAX_CALL_EVENTS = 200
MAX_CALL_EVENTS_HARD = 1_000
# A part of a snapshot: small enough to be decoded within a slice of the loop (cti.slices).
PART_BYTES = 32_000

Origin = str  # "<node>/<boot>": who published an event, in which run of it
Entry = tuple[Origin, ev.Event]
CallKey = tuple[str, str]  # (server, linkedid)
MemberKey = tuple[str, str, str]  # (server, queue, interface)


def journaled(event: ev.Event) -> bool:
    """Whether the journal keeps (or ends) what this event says: a snapshot covers it."""
    return isinstance(event, ev.CallEvent | ev.AgentStateChanged) and not isinstance(
        event, ev.OriginateResult
    )


class Journal:
    """The floor as heard: calls in progress with their events, members with their state."""

    def __init__(self, max_calls: int = MAX_CALLS) -> None:
        self.max_calls = max_calls
        self._calls: OrderedDict[CallKey, list[Entry]] = OrderedDict()
        self._members: dict[MemberKey, Entry] = {}
        self.evicted = 0  # calls dropped unended (the bound)
        self.trimmed = 0  # events not kept (a call's bound)

    @property
    def calls(self) -> int:
        return len(self._calls)

    @property
    def members(self) -> int:
        return len(self._members)

    def record(self, event: ev.Event, origin: Origin) -> None:
        if isinstance(event, ev.AgentStateChanged):
            key = (event.server, event.queue, event.interface)
            if event.logged_in:
                self._members[key] = (origin, event)
            else:  # out of the queue: a starting node need not hear of it
                self._members.pop(key, None)
            return
        if not isinstance(event, ev.CallEvent) or isinstance(event, ev.OriginateResult):
            return  # an Originate's result may belong to no call at all
        call = (event.server, event.linkedid)
        if isinstance(event, ev.CallEnded):
            self._calls.pop(call, None)
            return
        entries = self._calls.get(call)
        if entries is None:
            entries = self._calls[call] = []
            if len(self._calls) > self.max_calls:
                self._calls.popitem(last=False)
                self.evicted += 1
        if len(entries) >= MAX_CALL_EVENTS and (
            isinstance(event, ev.IvrStepped) or len(entries) >= MAX_CALL_EVENTS_HARD
        ):
            self.trimmed += 1
            return
        entries.append((origin, event))

    def capture(self) -> list[Entry]:
        """Everything, in the order to replay it: the members' states, then each call's events
        (calls in the order they began). A copy of references (events are immutable): cheap
        enough to take in one step, so that it matches one instant of the node."""
        out = list(self._members.values())
        for entries in self._calls.values():
            out.extend(entries)
        return out


@dataclass(frozen=True)
class Coverage:
    """What a snapshot already holds: the answering node's own events up to its publishing
    number `seq` (in the run `boot`), and every other event up to stream sequence `position`."""

    node: str
    boot: str
    seq: int
    position: int

    def covers(self, node: str | None, boot: str | None, number: int | None, stream_seq: int) -> bool:
        if node == self.node and boot == self.boot:
            # In its journal when published, whenever JetStream stored it.
            return number is not None and number <= self.seq
        return stream_seq <= self.position


class SnapshotError(ValueError):
    """A request or a part that cannot be read; the message says why."""


@dataclass(frozen=True)
class SnapshotRequest:
    node: str
    boot: str
    need: int  # the stream's last sequence once the requester's consumer was subscribed

    def to_bytes(self) -> bytes:
        return json.dumps({"v": SNAPSHOT_VERSION, **asdict(self)}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SnapshotRequest:
        raw = _object(data)
        return cls(_str(raw, "node"), _str(raw, "boot"), _int(raw, "need"))


@dataclass(frozen=True)
class SnapshotHead:
    node: str
    boot: str
    seq: int
    position: int
    tokens: dict[str, int]  # server -> the newest fencing token the answering node saw
    parts: int
    events: int

    @property
    def coverage(self) -> Coverage:
        return Coverage(self.node, self.boot, self.seq, self.position)

    @classmethod
    def from_json(cls, raw: Any) -> SnapshotHead:
        if not isinstance(raw, dict):
            raise SnapshotError("head: not an object")
        tokens = raw.get("tokens")
        if not isinstance(tokens, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in tokens.items()
        ):
            raise SnapshotError("head.tokens: not an object of integers")
        head = cls(
            _str(raw, "node"),
            _str(raw, "boot"),
            _int(raw, "seq"),
            _int(raw, "position"),
            dict(tokens),
            _int(raw, "parts"),
            _int(raw, "events"),
        )
        if head.parts < 1:
            raise SnapshotError("head.parts: less than 1")
        return head


def encode_parts(head_fields: dict[str, Any], entries: list[Entry]) -> Iterator[bytes | None]:
    """The snapshot's parts, each `PART_BYTES` or so (part 0 carries the head). Yields None
    between events (the caller gives the loop a turn when its slice is over) and, at the end,
    the parts, in order. Events that cannot be encoded are left out (never expected)."""
    items: list[list[str]] = [[]]
    size = 0
    for origin, event in entries:
        try:
            text = "[" + json.dumps(origin) + "," + encode(event).decode() + "]"
        except (TypeError, ValueError):
            yield None
            continue
        if size + len(text) > PART_BYTES and items[-1]:
            items.append([])
            size = 0
        items[-1].append(text)
        size += len(text) + 1
        yield None
    parts = len(items)
    head = {**head_fields, "parts": parts, "events": sum(len(i) for i in items)}
    for number, texts in enumerate(items):
        front: dict[str, Any] = {"v": SNAPSHOT_VERSION, "part": number}
        if number == 0:
            front["head"] = head
        yield (json.dumps(front)[:-1] + ',"events":[' + ",".join(texts) + "]}").encode()


@dataclass
class Part:
    number: int
    head: SnapshotHead | None
    items: list[Any]  # its events, still to be read one at a time (`read_entry`)


def decode_part(data: bytes) -> Part:
    """A part's head and its events as JSON (reading them all in one step would hold the
    loop for milliseconds: the caller reads them one by one between slices)."""
    raw = _object(data)
    number = _int(raw, "part")
    head = SnapshotHead.from_json(raw.get("head")) if number == 0 else None
    items = raw.get("events")
    if not isinstance(items, list):
        raise SnapshotError("events: not a list")
    return Part(number, head, items)


def read_entry(item: Any) -> Entry | None:
    """One event of a part, with who published it; None when it cannot be read."""
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        return None
    try:
        return (item[0], from_document(item[1]))
    except EventDecodeError:
        return None


def _object(data: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SnapshotError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SnapshotError("not a JSON object")
    if raw.get("v") != SNAPSHOT_VERSION:
        raise SnapshotError(f"version {raw.get('v')!r} unknown (this node reads {SNAPSHOT_VERSION})")
    return raw


def _str(raw: dict[str, Any], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise SnapshotError(f"{name}: expected a string")
    return value


def _int(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SnapshotError(f"{name}: expected an integer")
    return value
