"""The simulator's own log of what it did, call by call and queue by queue.

Written from the simulation's decisions (the dialplan step it ran, the member it connected, the
caller whose patience ran out), never from the events it sent, so it is an independent ground
truth to check the daemon's tracker against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cti.sim.channels import Channel


@dataclass
class SegmentTruth:
    queue: str
    joined_at: float
    outcome: str | None = None  # answered / abandoned / timeout
    agent: str | None = None
    wait_s: float | None = None
    connected_at: float | None = None
    talk_s: float | None = None
    completed_by: str | None = None


@dataclass
class CallTruth:
    linkedid: str
    direction: str  # inbound / outbound
    started_at: float
    caller: str | None = None
    caller_name: str | None = None
    called: str | None = None
    ivr_path: list[str] = field(default_factory=list)
    segments: list[SegmentTruth] = field(default_factory=list)
    originate_reason: int | None = None
    hangup_by: str | None = None
    ended_at: float | None = None
    outcome: str | None = None
    # An attended transfer: the caller talks on with the target outside the queue.
    transferred_at: float | None = None
    talk_after_transfer_s: float = 0.0

    @property
    def queue(self) -> str | None:
        return self.segments[0].queue if self.segments else None

    @property
    def agent(self) -> str | None:
        return next((s.agent for s in self.segments if s.outcome == "answered"), None)

    @property
    def wait_s(self) -> float | None:
        return self.segments[0].wait_s if self.segments else None

    @property
    def talk_s(self) -> float | None:
        talks = [s.talk_s for s in self.segments if s.talk_s is not None]
        return round(sum(talks) + self.talk_after_transfer_s, 3) if talks else None

    def settle(self) -> None:
        if self.direction == "outbound" and self.originate_reason is not None:
            names = {0: "failed", 1: "hangup", 3: "no_answer", 4: "answered", 5: "busy", 8: "congestion"}
            self.outcome = "outbound_" + names.get(self.originate_reason, f"unknown_{self.originate_reason}")
        elif any(s.outcome == "answered" for s in self.segments):
            self.outcome = "answered"
        elif self.segments:
            self.outcome = self.segments[-1].outcome or "unknown"
        else:
            self.outcome = "ivr_only" if self.ivr_path else "no_queue"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(queue=self.queue, agent=self.agent, wait_s=self.wait_s, talk_s=self.talk_s)
        return data


@dataclass
class QueueTruth:
    presented: int = 0
    answered: int = 0
    abandoned: int = 0
    timed_out: int = 0


class Truth:
    def __init__(self) -> None:
        self.calls: dict[str, CallTruth] = {}
        self.queues: dict[str, QueueTruth] = {}
        self._live: dict[str, set[str]] = {}

    # ------------------------------------------------------------------ facts
    def call_started(
        self,
        linkedid: str,
        direction: str,
        at: float,
        caller: tuple[str | None, str | None],
        called: str | None,
    ) -> None:
        if linkedid in self.calls:
            return
        self.calls[linkedid] = CallTruth(linkedid, direction, at, caller[0], caller[1], called)

    def channel_created(self, channel: Channel) -> None:
        self._live.setdefault(channel.linkedid, set()).add(channel.uniqueid)

    def channel_gone(self, channel: Channel, at: float) -> None:
        live = self._live.get(channel.linkedid)
        if live is None:
            return
        live.discard(channel.uniqueid)
        if not live:
            del self._live[channel.linkedid]
            call = self.calls.get(channel.linkedid)
            if call is not None and call.ended_at is None:
                call.ended_at = at
                call.settle()

    def ivr(self, linkedid: str, kind: str, value: str) -> None:
        call = self.calls.get(linkedid)
        if call is not None:
            # The tracker's notation: `Step: enter` is the menu's entry.
            step = "enter" if kind == "Step" and value == "enter" else kind.lower()
            call.ivr_path.append(f"main:{step}={value}")

    def joined(self, linkedid: str, queue: str, at: float) -> None:
        call = self.calls.get(linkedid)
        if call is not None:
            call.segments.append(SegmentTruth(queue, at))
        self.queues.setdefault(queue, QueueTruth()).presented += 1

    def _segment(self, linkedid: str, queue: str) -> SegmentTruth | None:
        call = self.calls.get(linkedid)
        if call is None:
            return None
        return next((s for s in reversed(call.segments) if s.queue == queue), None)

    def connected(self, linkedid: str, queue: str, agent: str, waited: float, at: float) -> None:
        self.queues.setdefault(queue, QueueTruth()).answered += 1
        segment = self._segment(linkedid, queue)
        if segment is not None:
            segment.outcome, segment.agent = "answered", agent
            segment.wait_s, segment.connected_at = round(waited, 3), at

    def completed(self, linkedid: str, queue: str, reason: str, at: float) -> None:
        segment = self._segment(linkedid, queue)
        if segment is not None and segment.connected_at is not None:
            segment.talk_s = round(at - segment.connected_at, 3)
            segment.completed_by = reason

    def left(self, linkedid: str, queue: str, outcome: str, waited: float) -> None:
        counters = self.queues.setdefault(queue, QueueTruth())
        if outcome == "abandoned":
            counters.abandoned += 1
        else:
            counters.timed_out += 1
        segment = self._segment(linkedid, queue)
        if segment is not None:
            segment.outcome, segment.wait_s = outcome, round(waited, 3)

    def transferred(self, linkedid: str, at: float) -> None:
        call = self.calls.get(linkedid)
        if call is not None:
            call.transferred_at = at

    def conversation_over(self, linkedid: str, at: float) -> None:
        call = self.calls.get(linkedid)
        if call is not None and call.transferred_at is not None:
            call.talk_after_transfer_s += at - call.transferred_at
            call.transferred_at = None

    def originated(self, linkedid: str, reason: int) -> None:
        call = self.calls.get(linkedid)
        if call is not None and call.originate_reason is None:
            call.originate_reason = reason

    def hung_up_first(self, linkedid: str, who: str) -> None:
        call = self.calls.get(linkedid)
        if call is not None and call.hangup_by is None:
            call.hangup_by = who

    # ------------------------------------------------------------------ reading
    def finished(self) -> list[CallTruth]:
        return [c for c in self.calls.values() if c.ended_at is not None]

    def open(self) -> list[CallTruth]:
        return [c for c in self.calls.values() if c.ended_at is None]

    def queue_counters(self) -> dict[str, dict[str, int]]:
        return {name: asdict(counters) for name, counters in sorted(self.queues.items())}
