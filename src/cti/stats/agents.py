"""Agent states from domain events: one state at a time per queue-member interface, and the spans
(periods in one state) that the live view sums and the span writer stores.

Asterisk reports membership, pause and device status per queue (`AgentStateChanged`) and calls
per agent (`AgentRinging`, `CallAnswered`, `AgentCompleted`); neither alone says "Conv ACD" or
"wrap-up". Precedence when several hold: a conversation › ringing › busy outside the queues ›
wrap-up › paused › available (docs/metrics.md).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from cti.calls import events as ev
from cti.stats.metrics import ThresholdSet

# Pause reasons agents use for after-call work: time spent so is wrap-up, not a break.
WRAPUP_REASONS = frozenset({"wrapup", "wrap-up", "acw", "post-appel", "postappel", "after-call", "aftercall"})
# AST_DEVICE_* codes meaning the phone is on a call: in use, busy, ring-in-use, on hold.
BUSY_STATUSES = frozenset({2, 3, 7, 8})
# AST_DEVICE_INVALID (4: no such device, e.g. a static member whose phone was never set up) and
# AST_DEVICE_UNAVAILABLE (5: not registered, or failing its qualify): queues skip such members.
UNREACHABLE_STATUSES = frozenset({4, 5})
QUARTER_S = 900
# A span is cut into at most this much of its end: a span reaching back further (a clock gone
# wrong) must not become hundreds of thousands of pieces.
MAX_CUT_S = 100 * 86_400
# Calls marked outbound (DialerConnected) remembered at most this many at once.
MAX_OUTBOUND_CALLS = 100_000


@dataclass(frozen=True, slots=True)
class Span:
    server: str
    interface: str
    agent: str | None
    state: str
    reason: str | None
    queue: str | None
    started_at: float
    ended_at: float

    @property
    def duration_s(self) -> float:
        return self.ended_at - self.started_at

    def cut(self, every_s: int = QUARTER_S, not_before: float = 0.0) -> list[Span]:
        """This span cut at every multiple of `every_s` (UTC epoch), so any interval built from
        quarter hours sums whole pieces; the part before `not_before` is left out, and so is
        any part more than MAX_CUT_S before its end. A span with an instant that is no number
        (infinite, NaN) has no pieces: a year-2100 end once built one per quarter hour up to
        2100, and an infinite one never ended."""
        pieces: list[Span] = []
        start = max(self.started_at, not_before, self.ended_at - MAX_CUT_S)
        if not (math.isfinite(start) and math.isfinite(self.ended_at)):
            return pieces
        while start < self.ended_at:
            boundary = (int(start // every_s) + 1) * every_s
            end = min(boundary, self.ended_at)
            pieces.append(
                Span(self.server, self.interface, self.agent, self.state, self.reason, self.queue, start, end)
            )
            start = end
        return pieces


State = tuple[str, str | None, str | None]  # state, reason, queue


@dataclass
class AgentStatus:
    server: str
    interface: str
    agent: str | None = None
    # queue -> (paused, reason)
    memberships: dict[str, tuple[bool, str | None]] = field(default_factory=dict)
    device_busy: bool = False
    device_unreachable: bool = False
    ringing: dict[str, str | None] = field(default_factory=dict)  # linkedid -> queue
    # (linkedid, queue, outbound); linkedid "" when only a resync told us the member is in call.
    talking: tuple[str, str | None, bool] | None = None
    wrapup_until: float | None = None
    wrapup_queue: str | None = None
    # The reason of the latest pause: queues paused at different times may carry different ones.
    last_reason: str | None = None
    state: str = "logged_out"
    reason: str | None = None
    queue: str | None = None
    since: float = 0.0

    def derive(self, now: float) -> State:
        if not self.memberships:
            return ("logged_out", None, None)
        if self.talking is not None:
            _, queue, outbound = self.talking
            return ("outbound" if outbound else "acd", None, queue)
        if self.ringing:
            return ("ringing", None, next(iter(self.ringing.values())))
        paused, reason = self._pause()
        if paused and (reason or "").lower() in WRAPUP_REASONS:
            return ("wrapup", reason, self.wrapup_queue)
        if self.device_busy:
            return ("outbound", None, None)
        if self.wrapup_until is not None and now < self.wrapup_until:
            return ("wrapup", None, self.wrapup_queue)
        if paused:
            return ("paused", reason, None)
        if self.device_unreachable:
            # In the queue but out of reach: no call can be offered, so never "available".
            return ("unavailable", None, None)
        return ("available", None, None)

    def _pause(self) -> tuple[bool, str | None]:
        """Paused only when paused in every queue: otherwise the other queues still send calls."""
        states = list(self.memberships.values())
        if not states or not all(p for p, _ in states):
            return (False, None)
        reasons = {r for _, r in states if r}
        return (True, self.last_reason if self.last_reason in reasons else next(iter(sorted(reasons)), None))

    @property
    def paused_queues(self) -> list[str]:
        return sorted(q for q, (p, _) in self.memberships.items() if p)


class AgentBoard:
    """Every agent's current state; `feed` returns the spans that closed."""

    def __init__(self, thresholds: ThresholdSet | None = None) -> None:
        self.thresholds = thresholds or ThresholdSet()
        self.agents: dict[tuple[str, str], AgentStatus] = {}
        # Indexes kept beside `agents` so a push reads one agent or one queue without scanning
        # the floor: interface -> its statuses (one per server), queue -> its members.
        self.by_interface: dict[str, list[AgentStatus]] = {}
        self.members: dict[str, dict[tuple[str, str], AgentStatus]] = {}
        self._outbound_calls: dict[tuple[str, str], None] = {}
        self._by_call: dict[tuple[str, str], set[str]] = {}
        self._undated: list[AgentStatus] = []
        # Wrap-ups by end time, so `tick` (on every event) costs the wrap-ups that ended rather
        # than a scan of the floor. Entries are not removed when a wrap-up is cut short: `tick`
        # skips those whose end no longer matches the agent's.
        self._wrapups: list[tuple[float, int, AgentStatus]] = []
        self._wrapup_order = itertools.count()

    def feed(self, event: ev.Event) -> list[Span]:
        if event.at > 0 and self._undated:
            # States learnt before any dated event (a replayed login snapshot): they start now.
            for agent in self._undated:
                agent.since = max(agent.since, event.at)
            self._undated.clear()
        if isinstance(event, ev.AgentStateChanged):
            return self._on_member(event)
        if isinstance(event, ev.DialerConnected):
            self._mark_outbound(event.server, event.linkedid)
            return []
        if isinstance(event, ev.CallEnded):
            return self._on_call_ended(event)
        if isinstance(event, ev.AgentRinging | ev.AgentRingStopped | ev.CallAnswered | ev.AgentCompleted):
            return self._on_call_event(event)
        return []

    def tick(self, now: float) -> list[Span]:
        """Wrap-up ends with time, not with an event."""
        out: list[Span] = []
        while self._wrapups and self._wrapups[0][0] <= now:
            until, _, agent = heapq.heappop(self._wrapups)
            if agent.wrapup_until == until:
                out.extend(self._settle(agent, until))
                agent.wrapup_until = None
        return out

    def close_all(self, now: float) -> list[Span]:
        """The spans still open, ended at `now` (daemon shutdown, end of a replay)."""
        out = self.tick(now)
        for agent in self.agents.values():
            if agent.state != "logged_out" and now > agent.since:
                out.append(self._span(agent, now))
                agent.since = now
        return out

    def open_spans(self, now: float, only: set[str] | None = None) -> list[Span]:
        """The current state of every logged-in agent (or of the `only` interfaces) as a span
        ending `now` (nothing changes)."""
        out = []
        candidates = (
            self.agents.values()
            if only is None
            else [a for interface in only for a in self.by_interface.get(interface, ())]
        )
        for a in candidates:
            if a.state == "logged_out" or now <= a.since:
                continue
            if a.state == "wrapup" and a.wrapup_until is not None and now > a.wrapup_until:
                # Wrap-up expired since the last tick: report it as ending when it did.
                out.append(self._span(a, a.wrapup_until))
                continue
            out.append(self._span(a, now))
        return out

    def know(self, server: str, interface: str, agent: str | None, last_seen: float = 0.0) -> None:
        """An agent seen before a restart (stored spans, answered calls): their row is shown,
        logged out since `last_seen` until an event (the first resync) says otherwise."""
        status = self.agents.get((server, interface)) or self._agent(server, interface, agent)
        status.agent = status.agent or agent
        if status.state == "logged_out" and last_seen > status.since:
            status.since = last_seen

    # ------------------------------------------------------------------ events
    def _agent(self, server: str, interface: str, agent: str | None) -> AgentStatus:
        status = self.agents.get((server, interface))
        if status is None:
            status = self.agents[(server, interface)] = AgentStatus(server, interface, agent)
            self.by_interface.setdefault(interface, []).append(status)
        if agent:
            status.agent = agent
        return status

    def _join(self, agent: AgentStatus, queue: str, paused: bool, reason: str | None) -> None:
        agent.memberships[queue] = (paused, reason)
        self.members.setdefault(queue, {})[(agent.server, agent.interface)] = agent

    def _on_member(self, e: ev.AgentStateChanged) -> list[Span]:
        agent = self._agent(e.server, e.interface, e.agent)
        if e.logged_in:
            self._join(agent, e.queue, e.paused, e.paused_reason)
            if e.paused and e.paused_reason:
                agent.last_reason = e.paused_reason
        else:
            agent.memberships.pop(e.queue, None)
            self.members.get(e.queue, {}).pop((agent.server, agent.interface), None)
        if e.status is not None:
            agent.device_busy = e.status in BUSY_STATUSES
            agent.device_unreachable = e.status in UNREACHABLE_STATUSES
        if e.in_call and agent.talking is None:
            # A resync found the member on a queue call we never saw being answered.
            agent.talking = ("", e.queue, False)
            agent.ringing.clear()
        elif e.in_call is False and agent.talking is not None and agent.talking[0] == "":
            agent.talking = None
        return self._settle(agent, e.at)

    def _on_call_event(
        self, e: ev.AgentRinging | ev.AgentRingStopped | ev.CallAnswered | ev.AgentCompleted
    ) -> list[Span]:
        agent = self._agent(e.server, e.interface, e.agent)
        if e.queue and e.queue not in agent.memberships:
            # Asterisk only rings members: a static member we never saw listed is logged in.
            self._join(agent, e.queue, False, None)
        key = (e.server, e.linkedid)
        self._by_call.setdefault(key, set()).add(e.interface)
        if isinstance(e, ev.AgentRinging):
            agent.ringing[e.linkedid] = e.queue
        elif isinstance(e, ev.AgentRingStopped):
            agent.ringing.pop(e.linkedid, None)
        elif isinstance(e, ev.CallAnswered):
            agent.ringing.pop(e.linkedid, None)
            agent.talking = (e.linkedid, e.queue, key in self._outbound_calls)
            agent.wrapup_until = None
        else:
            self._completed(agent, e)
        return self._settle(agent, e.at)

    def _completed(self, agent: AgentStatus, e: ev.AgentCompleted) -> None:
        agent.ringing.pop(e.linkedid, None)
        agent.talking = None
        # The device is being freed: its "not in use" often arrives a moment later.
        agent.device_busy = False
        agent.wrapup_queue = e.queue
        wrapup = self.thresholds.for_queue(e.queue).wrapup_s
        agent.wrapup_until = e.at + wrapup if wrapup > 0 else None
        if agent.wrapup_until is not None:
            heapq.heappush(self._wrapups, (agent.wrapup_until, next(self._wrapup_order), agent))

    def _on_call_ended(self, e: ev.CallEnded) -> list[Span]:
        key = (e.server, e.linkedid)
        self._outbound_calls.pop(key, None)
        out: list[Span] = []
        for interface in self._by_call.pop(key, set()):
            agent = self.agents.get((e.server, interface))
            if agent is None:
                continue
            agent.ringing.pop(e.linkedid, None)
            if agent.talking is not None and agent.talking[0] == e.linkedid:
                agent.talking = None  # e.g. the agent's leg ended with an attended transfer
            out.extend(self._settle(agent, e.at))
        return out

    def _mark_outbound(self, server: str, linkedid: str) -> None:
        self._outbound_calls[(server, linkedid)] = None
        if len(self._outbound_calls) > MAX_OUTBOUND_CALLS:
            self._outbound_calls.pop(next(iter(self._outbound_calls)))

    # ------------------------------------------------------------------ spans
    def _settle(self, agent: AgentStatus, at: float) -> list[Span]:
        new = agent.derive(at)
        if new == (agent.state, agent.reason, agent.queue):
            return []
        out = [self._span(agent, at)] if agent.state != "logged_out" and at > agent.since else []
        agent.state, agent.reason, agent.queue = new
        agent.since = at
        if at <= 0:
            self._undated.append(agent)
        return out

    @staticmethod
    def _span(agent: AgentStatus, end: float) -> Span:
        return Span(
            agent.server,
            agent.interface,
            agent.agent,
            agent.state,
            agent.reason,
            agent.queue,
            agent.since,
            end,
        )


def cut_all(spans: Iterable[Span]) -> list[Span]:
    return [piece for span in spans for piece in span.cut()]
