"""The statistics service the daemon wires in: live figures fed from the bus, agent-state spans
written to the database, pushes to the WebSocket hub, and the historical reports.

Pushes are throttled: after a change, supervisors get the next snapshot within `push_interval_s`
(at most 1 / `push_interval_s` per second, whatever the traffic), and an unchanged snapshot is
still resent every `heartbeat_s` so that "time in state" and Erlang C stay fresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.calls import events as ev
from cti.stats.history import REPORTS, Report, ReportQuery, build_query, zone
from cti.stats.live import LiveStats
from cti.stats.metrics import ThresholdSet
from cti.stats.store import SpanWriter

log = structlog.get_logger(__name__)

SUPERVISOR_ROLES = ("supervisor", "admin")


AGENT_CHUNK = 50  # agents' views computed between two yields to the event loop


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
    def broadcast(self, payload: dict[str, Any], roles: Iterable[str] = ...) -> None: ...
    def send(self, username: str, payload: dict[str, Any]) -> None: ...


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
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.thresholds = thresholds or ThresholdSet()
        self.tz: ZoneInfo = zone(tz)
        self.clock = clock
        self.push_interval_s = push_interval_s
        self._agent_sent: dict[str, tuple[Any, Any]] = {}
        self._push_state: tuple[float, bool] = (0.0, False)
        self._dirty: set[str] = set()
        self.heartbeat_s = heartbeat_s
        self.spans = SpanWriter(engine)
        self.live = LiveStats(self.thresholds, self.tz, clock, on_spans=self.spans.submit)
        self._task: asyncio.Task[None] | None = None
        self._pushed_version = -1
        self._pushed_at = 0.0
        self.pushes = 0

    kinds = EVENT_KINDS

    def on_event(self, event: ev.Event) -> None:
        self.live.on_event(event)
        # Agents whose figures this event may change: only their views are recomputed next push
        # (every agent's on the heartbeat, for the time spent in the current state).
        interface = getattr(event, "interface", None)
        if isinstance(interface, str):
            self._dirty.add(interface)
        if isinstance(event, ev.CallEnded):
            self._dirty.update(s.interface for s in event.record.segments if s.interface)

    def start(self) -> None:
        self.spans.start()
        if self.hub is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._push_loop(), name="cti-stats-push")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Open spans end now, so today's last state is stored too.
        self.live.close()
        await self.spans.close()

    # ------------------------------------------------------------------ reading
    def view_for(self, principal: PrincipalLike) -> dict[str, Any]:
        """Supervisors see everything; an agent sees their own figures and their queues."""
        if principal.role in SUPERVISOR_ROLES:
            return self.live.snapshot()
        return self.live.agent_view(principal.interfaces)

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
        """Send the current figures if they changed (or the heartbeat is due)."""
        due = self._push_supervisors(force)
        if due is None:
            return False
        for chunk in due:
            self._push_agents(chunk, *self._push_state)
        return True

    async def push_async(self, force: bool = False) -> bool:
        """`push`, yielding to the event loop between chunks of agents: with a thousand desktops
        one push is tens of milliseconds of work, and screen pops must not wait behind it."""
        due = self._push_supervisors(force)
        if due is None:
            return False
        for chunk in due:
            self._push_agents(chunk, *self._push_state)
            await asyncio.sleep(0)
        return True

    def _push_supervisors(self, force: bool) -> list[dict[str, Iterable[str]]] | None:
        assert self.hub is not None
        now = self.clock()
        self.live.tick(now)
        if (
            not force
            and self.live.version == self._pushed_version
            and now - self._pushed_at < self.heartbeat_s
        ):
            return None
        heartbeat_due = now - self._pushed_at >= self.heartbeat_s
        self._pushed_version, self._pushed_at = self.live.version, now
        self._push_state = (now, heartbeat_due)
        self.pushes += 1
        agents: dict[str, Iterable[str]] = {}
        supervisors = False
        for username, clients in list(self.hub.clients.items()):
            principal = next((c.principal for c in clients), None)
            if principal is None:
                continue
            if principal.role in SUPERVISOR_ROLES:
                supervisors = True
            else:
                agents[username] = principal.interfaces
        if supervisors:  # the whole-floor snapshot is the costly part: only for someone watching
            self.hub.broadcast(self.live.snapshot(now), roles=SUPERVISOR_ROLES)
        for gone in set(self._agent_sent) - set(agents):
            del self._agent_sent[gone]
        if not heartbeat_due:
            agents = {
                u: i for u, i in agents.items() if u not in self._agent_sent or not self._dirty.isdisjoint(i)
            }
        self._dirty = set()
        names = sorted(agents)
        return [{n: agents[n] for n in names[i : i + AGENT_CHUNK]} for i in range(0, len(names), AGENT_CHUNK)]

    def _push_agents(self, agents: dict[str, Iterable[str]], now: float, heartbeat_due: bool) -> None:
        assert self.hub is not None
        for username, view in self.live.agent_views(agents, now).items():
            # Only what changed: re-sending every unchanged view on each push would hold the
            # event loop long enough to delay screen pops.
            figures = (view["me"], view["queues"])
            if self._agent_sent.get(username) == figures and not heartbeat_due:
                continue
            self._agent_sent[username] = figures
            self.hub.send(username, view)
