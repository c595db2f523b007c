"""Live statistics for today (local day), from domain events as they arrive.

Each call in progress has a provisional record (the same `CallRecord` shape the tracker closes):
events fill in its segments and IVR steps, and after each change its *contribution* to the day's
counters is retracted and added again. When the call ends, the tracker's final record replaces
the provisional one the same way, so today's live counters equal what the historical report
computes from the stored calls. Contributions use the metric dictionary's own functions.
"""

from __future__ import annotations

import functools
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
CallKey = tuple[str, str]  # (server, linkedid)


@dataclass
class _OpenCall:
    record: CallRecord
    ended: bool = False
    contribution: dict[Key, Tally] = field(default_factory=dict)
    restored: bool = False  # from the database (in progress at a stop), not from its events


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
        self._calls: OrderedDict[CallKey, _OpenCall] = OrderedDict()
        # Everything below is indexed the way a push reads it, so that one push costs the same
        # whether 10 or 1,000 agents are logged in: (table, day) -> key -> tally; queue -> waiting
        # calls -> joined at (and call -> its queues, to forget them); queue -> recent arrivals.
        self._tables: dict[tuple[str, date], dict[str | None, Tally]] = {}
        self._waiting: dict[str, dict[CallKey, float]] = {}
        self._waiting_in: dict[CallKey, set[str]] = {}
        self._arrivals: dict[str, deque[float]] = {}
        self._today: date | None = None
        # Interfaces whose figures changed since `take_dirty` was last called.
        self._dirty: set[str] = set()
        # Queue joins of restored calls, until `finish_restore` sorts them into `_arrivals`.
        self._restored_arrivals: list[tuple[str, float]] = []

    # ------------------------------------------------------------------ input
    def on_event(self, event: ev.Event) -> None:
        spans = self.board.feed(event)
        spans.extend(self.board.tick(event.at))
        self._add_spans(spans)
        if isinstance(event, ev.CallEvent):
            self._on_call_event(event)
        interface = getattr(event, "interface", None)
        if isinstance(interface, str):
            self._dirty.add(interface)
        self.version += 1

    @property
    def dirty(self) -> frozenset[str]:
        return frozenset(self._dirty)

    def take_dirty(self) -> set[str]:
        """The interfaces whose row may have changed since the last call (state, counters)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def tick(self, now: float | None = None) -> None:
        """Let time-driven changes (wrap-up ending, the day rolling over) happen."""
        now = self.clock() if now is None else now
        spans = self.board.tick(now)
        if spans:
            self._add_spans(spans)
            self.version += 1
        self._roll_day(now)
        for arrivals in self._arrivals.values():
            while arrivals and arrivals[0] <= now - ARRIVAL_WINDOW_S:
                arrivals.popleft()

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
            self._dirty.add(span.interface)
            for piece in span.cut(not_before=horizon):
                self._add(("agent", piece.interface, self._day(piece.started_at)), self._span_tally(piece))
        if self.on_spans is not None:
            self.on_spans(spans)

    @staticmethod
    def _span_tally(span: Span) -> Tally:
        return span_contribution(span.state, span.reason, span.queue, span.duration_s)

    # ------------------------------------------------------------------ calls
    def _on_call_event(self, e: ev.CallEvent) -> None:
        key = (e.server, e.linkedid)
        if isinstance(e, ev.CallEnded):
            ended = self._calls.pop(key, None) or _OpenCall(e.record)
            self._update(ended, e.record, ended=True)
            self._forget_call_waiting(key)
            return
        call = self._calls.get(key)
        if call is not None and call.restored and isinstance(e, ev.CallStarted):
            # The call from its beginning (another node's snapshot of the floor replays its
            # events, bus_catchup.py): those events replace the stored copy, rather than add
            # its queue stays and IVR steps to it a second time.
            self._retract(call)
            self._forget_call_waiting(key)
            del self._calls[key]
            call = None
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
            self._start_waiting((e.server, e.linkedid), e.queue, e.at)
            self._arrivals.setdefault(e.queue, deque()).append(e.at)
        elif isinstance(e, ev.QueueLeft):
            self._stop_waiting((e.server, e.linkedid), e.queue)
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
        self._stop_waiting((e.server, e.linkedid), seg.queue)
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
        for (table, key, day), tally in call.contribution.items():
            cell = self._tables.get((table, day), {}).get(key)
            if cell is not None:
                add_tally(cell, tally, -1.0)
                if table == "agent" and key:
                    self._dirty.add(key)

    def _add(self, key: Key, tally: Tally) -> None:
        table, name, day = key
        add_tally(self._tables.setdefault((table, day), {}).setdefault(name, {}), tally)
        if table == "agent" and name:
            self._dirty.add(name)

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
    def _start_waiting(self, call: CallKey, queue: str, at: float) -> None:
        self._waiting.setdefault(queue, {})[call] = at
        self._waiting_in.setdefault(call, set()).add(queue)

    def _stop_waiting(self, call: CallKey, queue: str) -> None:
        self._unwait(queue, call)
        queues = self._waiting_in.get(call)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._waiting_in[call]

    def _forget_call_waiting(self, call: CallKey) -> None:
        for queue in self._waiting_in.pop(call, ()):
            self._unwait(queue, call)

    def _unwait(self, queue: str, call: CallKey) -> None:
        calls = self._waiting.get(queue)
        if calls is not None:
            calls.pop(call, None)
            if not calls:
                del self._waiting[queue]

    # ------------------------------------------------------------------ after a restart
    # Today's figures rebuilt from the database (`stats/restore.py` reads it): each stored call
    # and span adds what the live path would have added for it, through the same functions.
    def restore_call(self, record: CallRecord, today: date, still_open: bool, now: float) -> None:
        """A stored call. One still in progress at the stop (`closed_by="shutdown"`) is open
        again, counted provisionally as before the stop: its events and its final record will
        replace it. A finished one adds its contribution to `today`'s tables. Its queue joins
        of the last quarter hour are arrivals for the staffing aid."""
        key = (record.server, record.linkedid)
        if still_open:
            if key not in self._calls:
                call = self._open(key, record)
                call.restored = True
                self._update(call, record, ended=False)
        else:
            for cell, tally in self._contribution(record, ended=True).items():
                if cell[2] == today:
                    self._add(cell, tally)
        for seg in record.segments:
            if seg.joined_at > now - ARRIVAL_WINDOW_S and seg.outcome not in REFUSED:
                self._restored_arrivals.append((seg.queue, seg.joined_at))
            if seg.interface and seg.outcome == "answered" and self._day(seg.joined_at) == today:
                self.board.know(record.server, seg.interface, seg.agent)

    def restore_span(
        self,
        server: str,
        interface: str,
        agent: str | None,
        state: str,
        reason: str | None,
        queue: str | None,
        seconds: float,
        day: date,
        last_ended_at: float = 0.0,
    ) -> None:
        """Stored agent-state spans (any number of them summed: every counter of a span is
        proportional to its duration) of one agent in one state on `day`."""
        self._add(("agent", interface, day), span_contribution(state, reason, queue, seconds))
        self.board.know(server, interface, agent, last_ended_at)

    def finish_restore(self, now: float) -> None:
        """After the stored calls and spans: the staffing aid's recent arrivals, and every row
        to be recomputed."""
        for queue, at in self._restored_arrivals:
            self._arrivals.setdefault(queue, deque()).append(at)
        self._restored_arrivals = []
        for queue, arrivals in self._arrivals.items():
            self._arrivals[queue] = deque(sorted(arrivals))  # `tick` drops them from the left
        self._dirty.update(self.board.by_interface)
        self.version += 1

    # ------------------------------------------------------------------ days
    def _day(self, epoch: float) -> date:
        try:
            return datetime.fromtimestamp(epoch, self.tz).date()
        except (OverflowError, ValueError, OSError):
            # No such instant (infinite, NaN, past year 9999): today, not a crash.
            return datetime.fromtimestamp(self.clock(), self.tz).date()

    def day_of(self, epoch: float) -> date:
        """The local day (the service's zone) an instant belongs to."""
        return self._day(epoch)

    def day_start(self, day: date) -> float:
        """The first instant of a local day (midnight, or the end of a gap at midnight)."""
        return datetime(day.year, day.month, day.day, tzinfo=self.tz).timestamp()

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
        self._tables = {k: v for k, v in self._tables.items() if (today - k[1]).days <= 1}
        self._dirty.update(a.interface for a in self.board.agents.values())
        self.version += 1

    # ------------------------------------------------------------------ output
    def _cells(self, table: str, day: date) -> Mapping[str | None, Tally]:
        return self._tables.get((table, day), {})

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Everything the wallboard shows (WebSocket `stats` message, REST `/api/stats/live`)."""
        now = self.clock() if now is None else now
        floor = self.floor(now)  # first: it lets time-driven changes happen
        agents = self.agent_rows(None, now)
        return {**floor, "agents": agents, "agent_states": count_states(agents)}

    def floor(self, now: float | None = None) -> dict[str, Any]:
        """The snapshot without its agents' rows: its cost does not grow with the floor's size
        (the push builds the agents' part from rows it refreshes a few at a time)."""
        now = self.clock() if now is None else now
        self.tick(now)
        today = self._day(now)
        return {
            "v": 1,
            "type": "stats",
            "scope": "all",
            "metrics_version": METRICS_VERSION,
            "now": now,
            "day": today.isoformat(),
            "tz": self.tz.key,
            "queues": self._queues(today, now),
            "totals": self._totals(today, now),
            "ivr": self._ivr(today),
            "outbound": [
                {"campaign": k, **outbound_figures(t, campaign=k is not None)}
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
        """`agent_view` for many agents at once: the queues' figures are computed once."""
        now = self.clock() if now is None else now
        waiting = self.waiting_figures(now)
        wanted = {i for interfaces in interfaces_by_user.values() for i in interfaces}
        by_interface = {a["interface"]: a for a in self.agent_rows(wanted, now)}
        return {
            user: self.agent_message(
                now, [by_interface[i] for i in sorted(set(ifs)) if i in by_interface], waiting
            )
            for user, ifs in interfaces_by_user.items()
        }

    def agent_message(
        self, now: float, me: list[dict[str, Any]], waiting: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """An agent's `stats` message from their rows and the queues' waiting figures."""
        queues = sorted({q for a in me for q in a["queues"]})
        return {
            "v": 1,
            "type": "stats",
            "scope": "agent",
            "now": now,
            "day": self._day(now).isoformat(),
            "me": me,
            "queues": [waiting[q] for q in queues if q in waiting],
        }

    def waiting_figures(self, now: float) -> dict[str, dict[str, Any]]:
        """Per queue: calls waiting, the longest wait and when the oldest joined (the desktop
        counts the longest wait on from it)."""
        cached = self._waiting_cache
        if cached is not None and cached[0] == now and cached[1] == self.version:
            return cached[2]
        self.tick(now)
        out = {}
        for queue, joined in self._waiting.items():
            oldest = min(joined.values()) if joined else None
            out[queue] = {
                "queue": queue,
                "waiting": len(joined),
                "longest_wait_s": round(now - oldest, 1) if oldest is not None else 0.0,
                "oldest_joined_at": oldest,
            }
        for queue in self._known_queues(self._day(now)):
            out.setdefault(
                queue, {"queue": queue, "waiting": 0, "longest_wait_s": 0.0, "oldest_joined_at": None}
            )
        self._waiting_cache = (now, self.version, out)
        return out

    def _known_queues(self, today: date) -> set[str]:
        return {q for q in self._cells("queue", today) if q} | set(self._waiting) | set(self.board.members)

    def _queues(self, today: date, now: float) -> list[dict[str, Any]]:
        cells = self._cells("queue", today)
        waiting = self.waiting_figures(now)
        wrapups = self._queue_wrapups(today)
        out = []
        for name in sorted(self._known_queues(today)):
            tally = dict(cells.get(name) or empty_tally())
            tally["wrapup_s"] = wrapups.get(name, 0.0)
            w = waiting[name]
            row = {"queue": name, **queue_figures(tally)}
            row.update(
                waiting=w["waiting"],
                oldest_joined_at=w["oldest_joined_at"],
                longest_wait_s=w["longest_wait_s"],
                **self._staffing(name, tally, list(self.board.members.get(name, {}).values())),
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

    def _staffing(self, queue: str, tally: Tally, members: list[AgentStatus]) -> dict[str, Any]:
        t = self.thresholds.for_queue(queue)
        staffed = sum(1 for a in members if not a.memberships[queue][0])
        arrivals = len(self._arrivals.get(queue, ()))  # `tick` keeps only the window's
        handled = tally.get("talked", 0.0)
        aht = (tally.get("talk_s", 0.0) + tally.get("wrapup_s", 0.0)) / handled if handled else DEFAULT_AHT_S
        advice = advise_cached(
            arrivals, ARRIVAL_WINDOW_S, round(aht, 1), t.service_level_s, t.target_sl, staffed
        )
        return {
            "agents_logged_in": len(members),
            "agents_available": sum(1 for a in members if a.state == "available"),
            "staffing": dict(advice),
        }

    def _totals(self, today: date, now: float) -> dict[str, Any]:
        total: Tally = empty_tally()
        for name, tally in self._cells("queue", today).items():
            if name:
                add_tally(total, tally)
        total["wrapup_s"] = sum(self._queue_wrapups(today).values())
        figures = queue_figures(total)
        waiting = self.waiting_figures(now).values()
        oldest = min(
            (w["oldest_joined_at"] for w in waiting if w["oldest_joined_at"] is not None), default=None
        )
        figures.update(
            waiting=sum(w["waiting"] for w in waiting),
            oldest_joined_at=oldest,
            longest_wait_s=round(now - oldest, 1) if oldest is not None else 0.0,
        )
        return figures

    def agent_interfaces(self) -> list[str]:
        """Every interface the board knows, in the wallboard's order."""
        return sorted(self.board.by_interface)

    def agent_rows(self, interfaces: Iterable[str] | None, now: float | None = None) -> list[dict[str, Any]]:
        """The rows of these interfaces (every agent's when None), sorted by interface; the cost
        is that of the rows asked for, not of the whole floor."""
        now = self.clock() if now is None else now
        today = self._day(now)
        only = None if interfaces is None else set(interfaces)
        statuses = (
            sorted(self.board.agents.values(), key=lambda a: a.interface)
            if only is None
            else [a for i in sorted(only) for a in self.board.by_interface.get(i, ())]
        )
        cells = self._cells("agent", today)
        tallies = {a.interface: dict(cells.get(a.interface, {})) for a in statuses}
        horizon = self._horizon(now)
        for span in self.board.open_spans(now, only):
            for piece in span.cut(not_before=horizon):
                if self._day(piece.started_at) == today:
                    add_tally(
                        tallies.setdefault(piece.interface, {}),
                        span_tally(piece.state, piece.reason, piece.duration_s),
                    )
        out = []
        for agent in statuses:
            tally = {k: v for k, v in tallies[agent.interface].items() if not k.startswith("queue_wrapup:")}
            row = agent_figures(tally, agent.agent)
            row.update(
                interface=agent.interface,
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


def span_contribution(state: str, reason: str | None, queue: str | None, seconds: float) -> Tally:
    """What time in one state adds to its agent's cell: the dictionary's span counters
    (`span_tally`), and a queue's wrap-up time (its DMT) for a wrap-up after that queue's call."""
    tally = span_tally(state, reason, seconds)
    if state == "wrapup" and queue:
        tally["queue_wrapup:" + queue] = seconds
    return tally


@functools.lru_cache(maxsize=1024)
def advise_cached(
    arrivals: int, window_s: float, aht_s: float, answer_within_s: float, target: float, staffed: int
) -> dict[str, Any]:
    """Erlang C is a few hundred microseconds a queue: between two pushes its inputs rarely
    change, so the advice is computed once per distinct set of them."""
    return advise(arrivals, window_s, aht_s, answer_within_s, target, staffed).to_json()


def count_states(agents: Iterable[Mapping[str, Any]]) -> dict[str, int]:
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
