"""The statistics service the daemon wires in: live figures fed from the bus, agent-state spans
written to the database, pushes to the WebSocket hub, and the historical reports.

Pushes are throttled: after a change, supervisors get the next snapshot within `push_interval_s`
(at most 1 / `push_interval_s` per second, whatever the traffic), and an unchanged snapshot is
still resent every `heartbeat_s` so that "time in state" and Erlang C stay fresh.

The push shares the event loop with the screen pops (p99 ≤ 5 ms), so its cost must not grow in
one piece with the floor: every agent's row is kept with its JSON, rows are recomputed only when
an event touched the agent or, a slice per push, when older than `heartbeat_s`, a few rows
between two yields to the loop; the wallboard's snapshot is spliced from the kept JSON.

After a restart, `start` first rebuilds today's figures from the database (`stats/restore.py`).
Meanwhile the events are held, in order, and applied once the stored day is in: the daemon
subscribes the service before its AMI links start, so none is missed. A call this daemon ends
while the rebuild runs may be stored by the call writer before the rebuild reads that far: the
service notes every call ended meanwhile (`on_published`, a bus tap, sees it when it is
published, hence before it is stored) and leaves those rows to their events.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.calls import events as ev
from cti.db.calls_store import Fence
from cti.slices import Slice, next_turn
from cti.stats.history import REPORTS, Report, ReportQuery, build_query, zone
from cti.stats.live import CallKey, LiveStats, count_states
from cti.stats.metrics import ThresholdSet
from cti.stats.restore import Restored, restore_today
from cti.stats.store import SpanWriter

log = structlog.get_logger(__name__)

SUPERVISOR_ROLES = ("supervisor", "admin")


# The least number of rows the heartbeat refreshes per push.
HEARTBEAT_ROWS = 10
# A rebuild of today's figures that takes longer is given up (logged): live figures then count
# from the restart, rather than holding events without bound.
RESTORE_TIMEOUT_S = 120.0
# How long `GET /api/stats/live` waits for the rebuild before answering with what it has.
RESTORE_WAIT_S = 10.0


class PrincipalLike(Protocol):
    @property
    def username(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def interfaces(self) -> Iterable[str]: ...


class ClientLike(Protocol):
    @property
    def principal(self) -> PrincipalLike: ...


class HubLike(Protocol):
    """What the service needs from `web.hub.Hub`."""

    @property
    def clients(self) -> Mapping[str, Iterable[Any]]: ...
    @property
    def version(self) -> int: ...
    def broadcast_text(self, text: str, roles: Iterable[str] = ...) -> None: ...
    def send_text(self, username: str, text: str) -> None: ...


# Every event the statistics read (the bus skips the others for this consumer).
EVENT_KINDS: frozenset[type[ev.Event]] = frozenset(
    {
        ev.CallStarted,
        ev.IvrStepped,
        ev.QueueJoined,
        ev.QueueLeft,
        ev.AgentRinging,
        ev.AgentRingStopped,
        ev.CallAnswered,
        ev.AgentCompleted,
        ev.CallAbandoned,
        ev.QueueTimedOut,
        ev.DialerConnected,
        ev.CallEnded,
        ev.AgentStateChanged,
    }
)


@dataclass(slots=True)
class _Rows:
    """An interface's rows (one per server it is known on) as last computed, and their JSON."""

    at: float
    rows: list[dict[str, Any]]
    texts: list[str]


@dataclass(slots=True)
class _Audience:
    supervisors: bool  # at least one connected
    agents: dict[str, tuple[str, ...]]  # username -> interfaces
    users_of: dict[str, list[str]]  # interface -> usernames
    wanted: set[str] | None = None  # the interfaces whose rows are kept
    floor: int = -1  # how many interfaces the board knew when `wanted` was made


async def _sliced(steps: Iterable[None]) -> object:
    """Run a generator that yields between small pieces of work, in slices of the loop; its
    return value."""
    work = Slice()
    iterator = iter(steps)
    try:
        while True:
            next(iterator)
            if work.over():
                await next_turn()
                work.restart()
    except StopIteration as done:
        return done.value


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class StatsService:
    def __init__(
        self,
        engine: AsyncEngine,
        hub: HubLike | None = None,
        thresholds: ThresholdSet | None = None,
        tz: str | None = None,
        clock: Callable[[], float] = time.time,
        push_interval_s: float = 0.5,
        heartbeat_s: float = 5.0,
        fence: Fence | None = None,
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.thresholds = thresholds or ThresholdSet()
        self.tz: ZoneInfo = zone(tz)
        self.clock = clock
        self.push_interval_s = push_interval_s
        self.heartbeat_s = heartbeat_s
        self.spans = SpanWriter(engine, fence=fence)  # each server's under its lease (db/leases.py)
        self.live = LiveStats(self.thresholds, self.tz, clock, on_spans=self.spans.submit)
        # Least recently computed first: the heartbeat's slice is taken from the front.
        self._rows: OrderedDict[str, _Rows] = OrderedDict()
        self._agent_sent: dict[str, str] = {}  # username -> their last view, without its `now`
        self._audience_cache: tuple[int, _Audience] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pushed_version = -1
        self._pushed_at = 0.0
        self.pushes = 0
        self.rows_computed = 0
        # While today's figures are rebuilt: the events held (None once applied), and the calls
        # this daemon ended meanwhile (their stored rows are left to the events).
        self._held: deque[ev.Event] | None = None
        self._ended_meanwhile: set[CallKey] | None = None
        self._restoring: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._ready.set()
        self.restored: Restored | None = None

    kinds = EVENT_KINDS

    def on_event(self, event: ev.Event) -> None:
        if self._held is not None:
            self._held.append(event)
            self.on_published(event)
            return
        self.live.on_event(event)

    def on_published(self, event: ev.Event) -> None:
        """A bus tap (inline in `publish`, so before the call writer can store the call): while
        the rebuild runs, note the calls this daemon ends."""
        ended = self._ended_meanwhile
        if ended is not None and isinstance(event, ev.CallEnded):
            ended.add((event.server, event.linkedid))

    @property
    def ready(self) -> bool:
        """Today's stored figures are in (or there was nothing to rebuild)."""
        return self._ready.is_set()

    def start(self, restore: bool = True) -> None:
        """Write spans, push (with a hub), and first rebuild today's figures from the database
        (`restore`); call it before any event can be published."""
        loop = asyncio.get_running_loop()
        self.spans.start()
        if restore and self._restoring is None:
            self._held = deque()
            self._ended_meanwhile = set()
            self._ready.clear()
            self._restoring = loop.create_task(self._restore(), name="cti-stats-restore")
        if self.hub is not None and self._task is None:
            self._task = loop.create_task(self._push_loop(), name="cti-stats-push")

    async def close(self) -> None:
        for task in (self._task, self._restoring):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._task = self._restoring = None
        if self._held is not None:
            # Stopped during the rebuild: this daemon's own events still count (their spans
            # are stored below).
            for event in self._held:
                self.live.on_event(event)
            self._held = self._ended_meanwhile = None
        # Open spans end now, so today's last state is stored too.
        self.live.close()
        await self.spans.close()

    async def wait_ready(self, timeout_s: float = RESTORE_WAIT_S) -> bool:
        """Wait (at most `timeout_s`) for today's stored figures; whether they are in."""
        if self.ready:
            return True
        with suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self.ready

    # ------------------------------------------------------------------ restart
    async def _restore(self) -> None:
        """Today's figures from the database, then the events held meanwhile, in order."""
        try:
            async with asyncio.timeout(RESTORE_TIMEOUT_S):
                self.restored = await restore_today(
                    self.engine, self.live, self.clock(), self._left_to_events
                )
            log.info("live statistics restored from the database", **self.restored.to_log())
        except Exception as exc:
            log.error(
                "live statistics not (fully) restored from the database: today's figures miss "
                "some of what was stored before the restart",
                error=f"{type(exc).__name__}: {str(exc)[:300]}",
            )
        await self._apply_held()

    def _left_to_events(self, call: CallKey) -> bool:
        return self._ended_meanwhile is not None and call in self._ended_meanwhile

    async def _apply_held(self) -> None:
        held = self._held
        work = Slice()
        while held:
            # Taken off before it is applied: a cancelled rebuild leaves `close` the rest.
            self.live.on_event(held.popleft())
            if work.over():
                await next_turn()
                work.restart()
        # No await between the last check and here: an event published now is applied directly.
        self._held = self._ended_meanwhile = None
        self._ready.set()

    # ------------------------------------------------------------------ reading
    async def live_view(self, principal: PrincipalLike) -> str:
        """What `GET /api/stats/live` returns, as JSON: supervisors see the floor, an agent their own
        figures and their queues. Built like a push (kept rows, a few recomputed between yields) so
        that a wallboard loading does not stall the screen pops of a large floor."""
        await self.wait_ready()
        if principal.role not in SUPERVISOR_ROLES:
            return _dumps(self.live.agent_view(principal.interfaces))
        now = self.clock()
        self.live.tick(now)
        wanted = set(self.live.board.by_interface)
        todo = [i for i in wanted if i not in self._rows or i in self.live.dirty]
        await _sliced(self._refresh(todo, now))
        return self._floor_text(now)

    def query(self, **filters: Any) -> ReportQuery:
        filters.setdefault("tz", self.tz.key)
        return build_query(now=self.clock(), thresholds=self.thresholds, **filters)

    async def report(self, kind: str, query: ReportQuery) -> Report:
        return await REPORTS[kind](self.engine, query)

    # ------------------------------------------------------------------ pushing
    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(self.push_interval_s)
            try:
                await self.push_async()
            except Exception:
                log.exception("stats push failed")

    def push(self, force: bool = False) -> bool:
        """Send what changed (everything when the heartbeat is due), in one go."""
        steps = self._push(force)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            return bool(done.value)

    async def push_async(self, force: bool = False) -> bool:
        """`push`, in slices that take turns with the other background work (`cti.slices`)."""
        return bool(await _sliced(self._push(force)))

    def _audience(self) -> _Audience:
        """Who is connected, rebuilt only when a desktop connects or leaves (walking a thousand
        desktops on every push would itself hold the loop); with a supervisor watching, the rows
        kept follow the floor as the board learns agents."""
        assert self.hub is not None
        cached = self._audience_cache
        if cached is None or cached[0] != self.hub.version:
            cached = (self.hub.version, self._connected())
            self._audience_cache = cached
            for gone in self._agent_sent.keys() - cached[1].agents.keys():
                del self._agent_sent[gone]
        audience = cached[1]
        floor = len(self.live.board.by_interface)
        if audience.floor != floor or audience.wanted is None:
            # Rows are kept for whoever watches them: the whole floor with a supervisor
            # connected, otherwise only the connected agents' own.
            audience.wanted = (
                set(self.live.board.by_interface) if audience.supervisors else set(audience.users_of)
            )
            audience.floor = floor
            for gone in self._rows.keys() - audience.wanted:
                del self._rows[gone]
        return audience

    def _connected(self) -> _Audience:
        assert self.hub is not None
        agents: dict[str, tuple[str, ...]] = {}
        supervisors = False
        for username, clients in list(self.hub.clients.items()):
            principal = next((c.principal for c in clients), None)
            if principal is None:
                continue
            if principal.role in SUPERVISOR_ROLES:
                supervisors = True
            else:
                agents[username] = tuple(principal.interfaces)
        users_of: dict[str, list[str]] = {}
        for username, interfaces in agents.items():
            for interface in interfaces:
                users_of.setdefault(interface, []).append(username)
        return _Audience(supervisors, agents, users_of)

    def _push(self, force: bool) -> Generator[None, None, bool]:
        assert self.hub is not None
        if not self.ready:
            return False  # no wallboard sees a day being rebuilt
        now = self.clock()
        self.live.tick(now)
        audience = self._audience()
        wanted = audience.wanted or set()
        dirty = self.live.take_dirty()
        for unwatched in dirty - wanted:
            # Changed, and not recomputed here: a kept row would be served stale by `live_view`.
            self._rows.pop(unwatched, None)
        todo = (dirty & wanted) | (wanted - self._rows.keys())
        # The heartbeat, spread: each push recomputes the rows that are oldest, enough of them
        # for every row to be at most `heartbeat_s` old.
        quota = max(HEARTBEAT_ROWS, math.ceil(len(self._rows) * self.push_interval_s / self.heartbeat_s))
        for interface, kept in self._rows.items():
            if quota <= 0 or kept.at > now - self.heartbeat_s:
                break
            if interface not in todo:
                todo.add(interface)
                quota -= 1
        yield
        changed: set[str] = set()
        for _ in self._refresh(sorted(todo), now, changed):
            yield
        heartbeat = now - self._pushed_at >= self.heartbeat_s
        floor_due = force or heartbeat or bool(changed) or self.live.version != self._pushed_version
        unsent = audience.agents.keys() - self._agent_sent.keys()
        if not floor_due and not unsent:
            return False
        self.pushes += 1
        if floor_due:
            self._pushed_version, self._pushed_at = self.live.version, now
            if audience.supervisors:  # the floor's snapshot is only built for someone watching
                self.hub.broadcast_text(self._floor_text(now), roles=SUPERVISOR_ROLES)
                yield
        recipients = sorted(unsent.union(*(audience.users_of.get(i, ()) for i in todo)))
        waiting = self.live.waiting_figures(now)
        for username in recipients:
            self._send_view(username, audience.agents[username], now, waiting)
            yield
        return True

    def _refresh(self, interfaces: list[str], now: float, changed: set[str] | None = None) -> Iterable[None]:
        """Recompute these interfaces' rows, yielding after each (the caller slices)."""
        for interface in interfaces:
            rows = self.live.agent_rows([interface], now)
            texts = [_dumps(r) for r in rows]
            kept = self._rows.pop(interface, None)
            if changed is not None and (kept is None or kept.texts != texts):
                changed.add(interface)
            self._rows[interface] = _Rows(now, rows, texts)  # to the back: the freshest
            self.rows_computed += 1
            yield

    def _floor_text(self, now: float) -> str:
        """The supervisors' snapshot, its agents' part spliced from the rows' kept JSON."""
        kept = [self._rows[i] for i in sorted(self._rows)]
        floor = self.live.floor(now)
        floor["agent_states"] = count_states(r for k in kept for r in k.rows)
        agents = ",".join(t for k in kept for t in k.texts)
        return _dumps(floor)[:-1] + ',"agents":[' + agents + "]}"

    def _send_view(
        self, username: str, interfaces: Iterable[str], now: float, waiting: Mapping[str, dict[str, Any]]
    ) -> None:
        assert self.hub is not None
        me = [r for i in sorted(set(interfaces)) if i in self._rows for r in self._rows[i].rows]
        view = self.live.agent_message(now, me, waiting)
        figures = _dumps({"me": view["me"], "queues": view["queues"]})
        if self._agent_sent.get(username) == figures:
            return
        self._agent_sent[username] = figures
        self.hub.send_text(username, _dumps(view))
