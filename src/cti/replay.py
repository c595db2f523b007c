"""`cti replay`: recorded raw AMI traffic through the same parser and tracker the live link uses.

Each file is one AMI connection, exactly as received on the socket (banner included). A second
file is a reconnect: the lists the daemon asks for right after login (CoreShowChannels, then
QueueStatus) are handed to `CallTracker.resync`, exactly as the live daemon does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cti.ami.message import Message
from cti.ami.parser import AmiParser
from cti.calls.events import CallEnded, Event
from cti.calls.queue_log import QueueLogEntry
from cti.calls.records import CallRecord
from cti.calls.tracker import CallTracker
from cti.stats.queue_counters import queue_counters
from cti.values import counter

CHUNK = 1 << 16


@dataclass
class ReplayResult:
    records: list[CallRecord] = field(default_factory=list)
    open_calls: list[CallRecord] = field(default_factory=list)
    messages: int = 0
    domain_events: int = 0
    parse_problems: int = 0
    # Events no part of cti reads (VarSet, Newexten...), skipped unparsed.
    skipped: int = 0
    times_absolute: bool = True
    # QueueParams seen in each QueueStatus answer: queue -> (Completed, Abandoned), in order.
    asterisk_snapshots: list[dict[str, dict[str, int]]] = field(default_factory=list)

    def to_json(self, service_level_s: float = 20.0, short_abandon_s: float = 5.0) -> dict[str, Any]:
        counters = queue_counters(self.records, service_level_s, short_abandon_s)
        calls = [r.to_json() for r in self.records] + [dict(r.to_json(), open=True) for r in self.open_calls]
        if not self.times_absolute:
            calls = [_without_instants(call) for call in calls]
        return {
            "calls": calls,
            "stats": {
                "queues": {q: c.to_json() for q, c in sorted(counters.items())},
                "calls": _call_totals(self.records),
                "ivr": _ivr_totals(self.records),
                "asterisk_queue_status": self.asterisk_snapshots,
                "service_level_s": service_level_s,
                "short_abandon_s": short_abandon_s,
                "ami_messages": self.messages + self.skipped,
                "parse_problems": self.parse_problems,
                # False when the traffic carried no Timestamp (manager.conf timestampevents =
                # no): instants are unknown (null) and durations are Asterisk's own figures.
                "times_absolute": self.times_absolute,
            },
        }


_INSTANTS = ("started_at", "ended_at", "answered_at", "joined_at", "left_at", "at")


def _without_instants(value: Any) -> Any:
    """A call's JSON with every instant (epoch seconds) replaced by null, durations kept."""
    if isinstance(value, dict):
        return {k: None if k in _INSTANTS else _without_instants(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_instants(v) for v in value]
    return value


def _call_totals(records: Iterable[CallRecord]) -> dict[str, Any]:
    by_outcome: dict[str, int] = {}
    by_direction: dict[str, int] = {}
    total = 0
    for r in records:
        total += 1
        by_outcome[r.outcome] = by_outcome.get(r.outcome, 0) + 1
        by_direction[r.direction] = by_direction.get(r.direction, 0) + 1
    return {"total": total, "by_outcome": dict(sorted(by_outcome.items())), "by_direction": by_direction}


def _ivr_totals(records: Iterable[CallRecord]) -> dict[str, Any]:
    menus: dict[str, dict[str, Any]] = {}
    entries = contained = 0
    for r in records:
        if not r.ivr_path:
            continue
        entries += 1
        contained += not r.segments
        for step in r.ivr_path:
            m = menus.setdefault(step.menu, {"enter": 0, "choices": {}, "invalid": 0, "timeout": 0})
            if step.kind == "enter":
                m["enter"] += 1
            elif step.kind == "choice":
                m["choices"][step.value] = m["choices"].get(step.value, 0) + 1
            elif step.kind in ("invalid", "timeout"):
                m[step.kind] += 1
    return {
        "entries": entries,
        "contained": contained,
        "containment": round(contained / entries, 4) if entries else None,
        "menus": menus,
    }


class Replayer:
    """Feeds one or more recorded connections through a tracker."""

    def __init__(
        self,
        tracker: CallTracker,
        on_event: Callable[[Event], None] | None = None,
        queue_log: Iterable[QueueLogEntry] = (),
    ) -> None:
        self.tracker = tracker
        self.on_event = on_event
        self.queue_log = list(queue_log)
        self.result = ReplayResult()
        self._connections = 0
        self._lists: dict[str, list[Message]] = {}
        self._resync_pending = False
        self._channels: list[Message] | None = None

    def _emit(self, events: list[Event]) -> None:
        if not events:
            return
        self.result.domain_events += len(events)
        for event in events:
            if isinstance(event, CallEnded):
                self.result.records.append(event.record)
            if self.on_event is not None:
                self.on_event(event)

    def connection(self, chunks: Iterable[bytes]) -> None:
        """One AMI connection's bytes, from banner to logoff (or to an abrupt end)."""
        # Every connection's first CoreShowChannels + QueueStatus is a resync, the first one's
        # too: a recording that starts mid-traffic adopts the calls already up, as the daemon does.
        self._resync_pending = True
        self._channels = None
        self._connections += 1
        parser = AmiParser(events=self.tracker.handled_events)
        # The hot loop of a replay: everything it touches is bound to a local once.
        feed, track, emit, lists = parser.feed, self.tracker.feed, self._emit, self._lists
        for chunk in chunks:
            messages = feed(chunk)
            self.result.messages += len(messages)
            for message in messages:
                action_id = message.get("ActionID")
                if action_id is not None and ("Event" not in message or action_id in lists):
                    self._list_part(action_id, message)
                    continue
                events = track(message)
                if events:
                    emit(events)
        self.result.parse_problems += len(parser.take_problems())
        self.result.skipped += parser.skipped

    def _list_part(self, action_id: str, message: Message) -> None:
        if "Response" in message:
            if message.get("EventList") == "start":
                self._lists[action_id] = []
            return
        items = self._lists.get(action_id)
        if items is None:
            return
        if message.get("EventList", "").lower() == "complete":
            del self._lists[action_id]
            self._list_done(message.get("Event", ""), items)
        else:
            items.append(message)

    def _list_done(self, complete_event: str, items: list[Message]) -> None:
        if complete_event == "CoreShowChannelsComplete":
            self._channels = items
            return
        if complete_event != "QueueStatusComplete":
            return
        params = {
            m["Queue"]: {
                "completed": counter(m.get("Completed")) or 0,
                "abandoned": counter(m.get("Abandoned")) or 0,
            }
            for m in items
            if m.get("Event") == "QueueParams" and "Queue" in m
        }
        if params:
            self.result.asterisk_snapshots.append(params)
        at = self.tracker._last_at
        if self._resync_pending and self._channels is not None:
            self._resync_pending = False
            since = min((r.started_at for r in self.tracker.open_calls()), default=at)
            entries = [e for e in self.queue_log if e.at >= since - 1]
            self._emit(self.tracker.resync(self._channels, items, at, entries))
        else:
            for m in items:
                self._emit(self.tracker.feed(m, at))

    def finish(self) -> ReplayResult:
        self._emit(self.tracker.flush())
        self.result.times_absolute = not self.tracker.untimed
        self.result.open_calls = self.tracker.open_calls()
        return self.result


def read_chunks(handle: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := handle.read(size):
        yield chunk


def replay_files(
    paths: Iterable[str | Path],
    server: str = "default",
    region: str = "FR",
    queue_log: Iterable[QueueLogEntry] = (),
    on_event: Callable[[Event], None] | None = None,
) -> ReplayResult:
    replayer = Replayer(CallTracker(server=server, region=region), on_event, queue_log)
    for path in paths:
        with open(path, "rb") as handle:
            replayer.connection(read_chunks(handle))
    return replayer.finish()
