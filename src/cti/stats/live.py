"""Live statistics for today (local day), from domain events as they arrive.

Each call in progress has a provisional record (the same `CallRecord` shape the tracker closes):
events fill in its segments and IVR steps, and after each change its *contribution* to the day's
counters is retracted and added again. When the call ends, the tracker's final record replaces
the provisional one the same way, so today's live counters equal what the historical report
computes from the stored calls. Contributions use the metric dictionary's own functions.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cti.calls import events as ev
from cti.calls.records import CallRecord, Direction, IvrStep, QueueSegment
from cti.stats.agents import AgentBoard, AgentStatus, Span
from cti.stats.erlang import advise
from cti.stats.history import agent_figures, ivr_figures, outbound_figures, span_tally
from cti.stats.metrics import (
    METRICS_VERSION,
    REFUSED,
    Tally,
    ThresholdSet,
    add_tally,
    empty_tally,
    ivr_call_flags,
    ivr_step_tally,
    outbound_call_tally,
    queue_figures,
    segment_tally,
)

# Calls in progress kept at most (a leak guard: every call normally ends with CallEnded).
MAX_OPEN_CALLS = 50_000
# The staffing aid's "current interval": arrivals over the last quarter hour.
ARRIVAL_WINDOW_S = 900.0
# AHT for Erlang C before today has any handled call.
DEFAULT_AHT_S = 180.0
AGENT_SEGMENT_COUNTERS = ("answered", "talk_s", "talked", "transferred_out", "wait_answered_s")

Key = tuple[str, str | None, date]  # (table, key, local day)


@dataclass
class _OpenCall:
    record: CallRecord
    ended: bool = False
    contribution: dict[Key, Tally] = field(default_factory=dict)


class LiveStats:
    """Today's figures per queue, agent, IVR menu and campaign; `version` moves on every change."""

    def __init__(
        self,
        thresholds: ThresholdSet | None = None,
        tz: ZoneInfo | None = None,
        clock: Callable[[], float] = time.time,
        on_spans: Callable[[list[Span]], None] | None = None,
    ) -> None:
        self.thresholds = thresholds or ThresholdSet()
        self.tz = tz or ZoneInfo("UTC")
        self.clock = clock
        self.on_spans = on_spans
        self.board = AgentBoard(self.thresholds)
        self.version = 0
        # (now, version, per-queue waiting figures) of the last agent views, shared by the chunks
        # of one push.
        self._waiting_cache: tuple[float, int, dict[str, dict[str, Any]]] | None = None
        self._calls: OrderedDict[tuple[str, str], _OpenCall] = OrderedDict()
        self._waiting: dict[tuple[str, str, str], float] = {}
        self._tallies: dict[Key, Tally] = {}
        self._arrivals: deque[tuple[float, str]] = deque()
        self._today: date | None = None

    # ------------------------------------------------------------------ input
    def on_event(self, event: ev.Event) -> None:
        spans = self.board.feed(event)
        spans.extend(self.board.tick(event.at))
        self._add_spans(spans)
        if isinstance(event, ev.CallEvent):
            self._on_call_event(event)
        self.version += 1

    def tick(self, now: float | None = None) -> None:
        """Let time-driven changes (wrap-up ending, the day rolling over) happen."""
        now = self.clock() if now is None else now
        spans = self.board.tick(now)
        if spans:
            self._add_spans(spans)
            self.version += 1
        self._roll_day(now)
        while self._arrivals and self._arrivals[0][0] <= now - ARRIVAL_WINDOW_S:
            self._arrivals.popleft()

    def close(self, now: float | None = None) -> list[Span]:
        """End every open span (daemon shutdown); returns them after counting them."""
        spans = self.board.close_all(self.clock() if now is None else now)
        self._add_spans(spans)
        return spans

    def _add_spans(self, spans: list[Span]) -> None:
        if not spans:
            return
        horizon = self._horizon(spans[-1].ended_at)
        for span in spans:
            for piece in span.cut(not_before=horizon):
                self._add(("agent", piece.interface, self._day(piece.started_at)), self._span_tally(piece))
        if self.on_spans is not None:
            self.on_spans(spans)

    @staticmethod
    def _span_tally(span: Span) -> Tally:
        tally = span_tally(span.state, span.reason, span.duration_s)
        if span.state == "wrapup" and span.queue:
            tally["queue_wrapup:" + span.queue] = span.duration_s
        return tally

    # ------------------------------------------------------------------ calls
    def _on_call_event(self, e: ev.CallEvent) -> None:
        key = (e.server, e.linkedid)
        if isinstance(e, ev.CallEnded):
            ended = self._calls.pop(key, None) or _OpenCall(e.record)
            self._update(ended, e.record, ended=True)
            self._forget_call_waiting(e.server, e.linkedid)
            return
        call = self._calls.get(key)
        if call is None:
            direction: Direction = (
                "outbound" if isinstance(e, ev.CallStarted) and e.direction == "outbound" else "inbound"
            )
            call = self._open(key, CallRecord(e.server, e.linkedid, direction, e.at))
        self._apply(call.record, e)
        self._update(call, call.record, ended=False)

    def _open(self, key: tuple[str, str], record: CallRecord) -> _OpenCall:
        call = self._calls[key] = _OpenCall(record)
        if len(self._calls) > MAX_OPEN_CALLS:
            _, oldest = self._calls.popitem(last=False)
            self._retract(oldest)
        return call

    def _apply(self, r: CallRecord, e: ev.CallEvent) -> None:
        if isinstance(e, ev.IvrStepped):
            r.ivr_path.append(IvrStep(e.at, e.menu, e.step, e.value))
        elif isinstance(e, ev.DialerConnected):
            r.direction, r.campaign = "outbound", e.campaign
        elif isinstance(e, ev.QueueJoined):
            r.segments.append(QueueSegment(e.queue, e.at, position=e.position))
            self._waiting[(e.server, e.linkedid, e.queue)] = e.at
            self._arrivals.append((e.at, e.queue))
        elif isinstance(e, ev.QueueLeft):
            self._waiting.pop((e.server, e.linkedid, e.queue), None)
        elif isinstance(e, ev.CallAnswered | ev.CallAbandoned | ev.QueueTimedOut | ev.AgentCompleted):
            self._segment_event(r, e)

    def _segment_event(
        self, r: CallRecord, e: ev.CallAnswered | ev.CallAbandoned | ev.QueueTimedOut | ev.AgentCompleted
    ) -> None:
        seg = next((s for s in reversed(r.segments) if s.queue == e.queue), None)
        if seg is None:
            return
        if isinstance(e, ev.AgentCompleted):
            seg.talk_s, seg.completed_by = e.talk_s, e.reason
            return
        self._waiting.pop((e.server, e.linkedid, seg.queue), None)
        seg.left_at, seg.wait_s = e.at, e.wait_s
        if isinstance(e, ev.CallAnswered):
            seg.outcome, seg.agent, seg.interface, seg.ring_s = "answered", e.agent, e.interface, e.ring_s
        elif isinstance(e, ev.CallAbandoned):
            seg.outcome = "abandoned"
        else:
            seg.outcome = e.status

    def _update(self, call: _OpenCall, record: CallRecord, ended: bool) -> None:
        self._retract(call)
        call.record, call.ended = record, ended
        call.contribution = self._contribution(record, ended)
        for key, tally in call.contribution.items():
            self._add(key, tally)

    def _retract(self, call: _OpenCall) -> None:
        for key, tally in call.contribution.items():
            cell = self._tallies.get(key)
            if cell is not None:
                add_tally(cell, tally, -1.0)

    def _add(self, key: Key, tally: Tally) -> None:
        add_tally(self._tallies.setdefault(key, {}), tally)

    def _contribution(self, r: CallRecord, ended: bool) -> dict[Key, Tally]:
        out: dict[Key, Tally] = {}

        def add(table: str, key: str | None, day: date, tally: Tally) -> None:
            add_tally(out.setdefault((table, key, day), {}), tally)

        for seg in r.segments:
            if seg.outcome in REFUSED:
                continue
            day = self._day(seg.joined_at)
            tally = segment_tally(seg, self.thresholds.for_queue(seg.queue))
            add("queue", seg.queue, day, tally)
            add("quarter", str(int(seg.joined_at // 900 * 900)), day, tally)
            if seg.interface and seg.outcome == "answered":
                add("agent", seg.interface, day, {k: tally[k] for k in AGENT_SEGMENT_COUNTERS})
        if r.ivr_path:
            self._ivr_contribution(r, ended, add)
        if ended and r.direction == "outbound":
            add(
                "outbound",
                r.campaign,
                self._day(r.started_at),
                outbound_call_tally(r, self.thresholds.default),
            )
        return out

    def _ivr_contribution(self, r: CallRecord, ended: bool, add: Callable[..., None]) -> None:
        day = self._day(r.started_at)
        for step in r.ivr_path:
            add("ivr", step.menu, day, ivr_step_tally(step.kind, step.value))
        # Contained and hung up are only known once the call is over.
        flags = ivr_call_flags(r) if ended else {"entries": 1.0}
        add("ivr", r.ivr_path[0].menu, day, {k: v for k, v in flags.items() if k != "hangups"})
        if "hangups" in flags:
            add("ivr", r.ivr_path[-1].menu, day, {"hangups": flags["hangups"]})

    # ------------------------------------------------------------------ waiting callers
    def _forget_call_waiting(self, server: str, linkedid: str) -> None:
        for key in [k for k in self._waiting if k[0] == server and k[1] == linkedid]:
            del self._waiting[key]

    # ------------------------------------------------------------------ days
    def _day(self, epoch: float) -> date:
        return datetime.fromtimestamp(epoch, self.tz).date()

    def _horizon(self, now: float) -> float:
        """Start of yesterday: older figures are never shown, so spans are not cut before it."""
        today = self._day(now)
        return datetime(today.year, today.month, today.day, tzinfo=self.tz).timestamp() - 86400

    def _roll_day(self, now: float) -> None:
        today = self._day(now)
        if today == self._today:
            return
        self._today = today
        # Yesterday's figures stay until calls that began before midnight have ended.
        self._tallies = {k: v for k, v in self._tallies.items() if (today - k[2]).days <= 1}
        self.version += 1

    # ------------------------------------------------------------------ output
    def _cells(self, table: str, day: date) -> dict[str | None, Tally]:
        return {k[1]: v for k, v in self._tallies.items() if k[0] == table and k[2] == day}

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Everything the wallboard shows (WebSocket `stats` message, REST `/api/stats/live`)."""
        now = self.clock() if now is None else now
        self.tick(now)
        today = self._day(now)
        agents = self._agents(today, now)
        queues = self._queues(today, now)
        return {
            "v": 1,
            "type": "stats",
            "scope": "all",
            "metrics_version": METRICS_VERSION,
            "now": now,
            "day": today.isoformat(),
            "tz": self.tz.key,
            "queues": queues,
            "totals": self._totals(today, now),
            "agents": agents,
            "agent_states": _count_states(agents),
            "ivr": self._ivr(today),
            "outbound": [
                {"campaign": k, **outbound_figures(t)}
                for k, t in sorted(self._cells("outbound", today).items(), key=lambda i: i[0] or "")
            ],
            "series": self._series(today),
        }

    def agent_view(self, interfaces: Iterable[str], now: float | None = None) -> dict[str, Any]:
        """What an agent sees: their own figures and the waiting calls of their queues."""
        return self.agent_views({"": interfaces}, now)[""]

    def agent_views(
        self, interfaces_by_user: Mapping[str, Iterable[str]], now: float | None = None
    ) -> dict[str, dict[str, Any]]:
        """`agent_view` for many agents at once: the rows are computed once per push, not once
        per connected desktop."""
        now = self.clock() if now is None else now
        today = self._day(now)
        cached = self._waiting_cache
        if cached is not None and cached[0] == now and cached[1] == self.version:
            waiting = cached[2]  # the same push, another chunk of agents: queues are unchanged
        else:
            self.tick(now)
            waiting = {
                q["queue"]: {k: q[k] for k in ("queue", "waiting", "longest_wait_s", "oldest_joined_at")}
                for q in self._queues(today, now)
            }
            self._waiting_cache = (now, self.version, waiting)
        wanted = {i for interfaces in interfaces_by_user.values() for i in interfaces}
        by_interface = {a["interface"]: a for a in self._agents(today, now, wanted)}
        out = {}
        for user, interfaces in interfaces_by_user.items():
            me = [by_interface[i] for i in sorted(set(interfaces)) if i in by_interface]
            queues = sorted({q for a in me for q in a["queues"]})
            out[user] = {
                "v": 1,
                "type": "stats",
                "scope": "agent",
                "now": now,
                "day": today.isoformat(),
                "me": me,
                "queues": [waiting[q] for q in queues if q in waiting],
            }
        return out

    def _queue_waiting(self, now: float) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for (_, _, queue), joined in self._waiting.items():
            out.setdefault(queue, []).append(joined)
        return out

    def _queues(self, today: date, now: float) -> list[dict[str, Any]]:
        cells = self._cells("queue", today)
        waiting = self._queue_waiting(now)
        members = self._members_by_queue()
        wrapups = self._queue_wrapups(today)
        names = sorted({q for q in cells if q} | set(waiting) | set(members))
        out = []
        for name in names:
            tally = dict(cells.get(name) or empty_tally())
            tally["wrapup_s"] = wrapups.get(name, 0.0)
            joined = waiting.get(name, [])
            row = {"queue": name, **queue_figures(tally)}
            row.update(
                waiting=len(joined),
                oldest_joined_at=min(joined) if joined else None,
                longest_wait_s=round(now - min(joined), 1) if joined else 0.0,
                **self._staffing(name, tally, members.get(name, []), now),
            )
            out.append(row)
        return out

    def _queue_wrapups(self, today: date) -> dict[str, float]:
        out: dict[str, float] = {}
        for tally in self._cells("agent", today).values():
            for key, value in tally.items():
                if key.startswith("queue_wrapup:"):
                    out[key[13:]] = out.get(key[13:], 0.0) + value
        return out

    def _members_by_queue(self) -> dict[str, list[AgentStatus]]:
        out: dict[str, list[AgentStatus]] = {}
        for agent in self.board.agents.values():
            for queue in agent.memberships:
                out.setdefault(queue, []).append(agent)
        return out

    def _staffing(self, queue: str, tally: Tally, members: list[AgentStatus], now: float) -> dict[str, Any]:
        t = self.thresholds.for_queue(queue)
        staffed = sum(1 for a in members if not a.memberships[queue][0])
        arrivals = sum(1 for at, q in self._arrivals if q == queue and at > now - ARRIVAL_WINDOW_S)
        handled = tally.get("talked", 0.0)
        aht = (tally.get("talk_s", 0.0) + tally.get("wrapup_s", 0.0)) / handled if handled else DEFAULT_AHT_S
        advice = advise(arrivals, ARRIVAL_WINDOW_S, aht, t.service_level_s, t.target_sl, staffed)
        return {
            "agents_logged_in": len(members),
            "agents_available": sum(1 for a in members if a.state == "available"),
            "staffing": advice.to_json(),
        }

    def _totals(self, today: date, now: float) -> dict[str, Any]:
        total: Tally = empty_tally()
        for name, tally in self._cells("queue", today).items():
            if name:
                add_tally(total, tally)
        total["wrapup_s"] = sum(self._queue_wrapups(today).values())
        figures = queue_figures(total)
        joined = [j for joins in self._queue_waiting(now).values() for j in joins]
        figures.update(
            waiting=len(joined),
            oldest_joined_at=min(joined) if joined else None,
            longest_wait_s=round(now - min(joined), 1) if joined else 0.0,
        )
        return figures

    def _agents(self, today: date, now: float, only: set[str] | None = None) -> list[dict[str, Any]]:
        """Every agent's row, or only those of the `only` interfaces (an agent's own view)."""
        cells = {k: dict(v) for k, v in self._cells("agent", today).items() if only is None or k in only}
        for span in self.board.open_spans(now, only):
            for piece in span.cut(not_before=self._horizon(now)):
                if only is not None and piece.interface not in only:
                    continue
                if self._day(piece.started_at) == today:
                    add_tally(
                        cells.setdefault(piece.interface, {}),
                        span_tally(piece.state, piece.reason, piece.duration_s),
                    )
        out = []
        for (_, interface), agent in sorted(self.board.agents.items(), key=lambda i: i[0][1]):
            if only is not None and interface not in only:
                continue
            tally = {k: v for k, v in cells.get(interface, {}).items() if not k.startswith("queue_wrapup:")}
            row = agent_figures(tally, agent.agent)
            row.update(
                interface=interface,
                server=agent.server,
                state=agent.state,
                reason=agent.reason,
                queue=agent.queue,
                since=agent.since,
                queues=sorted(agent.memberships),
                paused_queues=agent.paused_queues,
            )
            out.append(row)
        return out

    def _ivr(self, today: date) -> dict[str, Any]:
        menus = self._cells("ivr", today)
        total: Tally = {}
        for tally in menus.values():
            add_tally(total, {k: v for k, v in tally.items() if k in ("entries", "contained", "hangups")})
        return {
            "totals": ivr_figures(total),
            "menus": [
                {"menu": m, **ivr_figures(t)} for m, t in sorted(menus.items(), key=lambda i: i[0] or "")
            ],
        }

    def _series(self, today: date) -> list[dict[str, Any]]:
        """Per quarter hour of today (all queues): for the calls-per-interval and SL charts."""
        out = []
        running: Tally = empty_tally()
        for start, tally in sorted(self._cells("quarter", today).items(), key=lambda i: int(i[0] or 0)):
            add_tally(running, tally)
            figures = queue_figures(tally)
            out.append(
                {
                    "interval_start": datetime.fromtimestamp(int(start or 0), self.tz).isoformat(),
                    "presented": figures["presented"],
                    "answered": figures["answered"],
                    "abandoned": figures["abandoned"],
                    "timed_out": figures["timed_out"],
                    "service_level": figures["service_level"],
                    "service_level_day": queue_figures(running)["service_level"],
                }
            )
        return out


def _count_states(agents: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in agents:
        out[a["state"]] = out.get(a["state"], 0) + 1
    return out


def replay_live(
    paths: Iterable[str | Path],
    thresholds: ThresholdSet | None = None,
    tz: ZoneInfo | None = None,
    server: str = "default",
    on_spans: Callable[[list[Span]], None] | None = None,
) -> tuple[LiveStats, float]:
    """Recorded AMI traffic through the tracker into a `LiveStats`, as the daemon would see it;
    returns it with the time of the last event (to take a snapshot "then")."""
    from cti.replay import replay_files

    last = 0.0
    stats: LiveStats

    def feed(event: ev.Event) -> None:
        nonlocal last
        last = max(last, event.at)
        stats.on_event(event)

    stats = LiveStats(thresholds, tz, clock=lambda: last, on_spans=on_spans)
    replay_files(paths, server=server, on_event=feed)
    return stats, last
