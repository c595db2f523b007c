"""Live tracking of one Asterisk server: AMI link messages → tracker → bus, and the resync
after every (re)connect (CoreShowChannels, QueueStatus, then the queue_log for the gap), then
the recovery of the calls the gap hid (calls/recovery.py, when Asterisk's records are in
PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from cti.ami.message import Message
from cti.calls import events as ev
from cti.calls.queue_log import QueueLogEntry, read_since
from cti.calls.tracker import CallTracker

if TYPE_CHECKING:
    from cti.calls.recovery import GapRecovery

log = structlog.get_logger(__name__)


class ListActions(Protocol):
    async def send_list(self, action: str, /, **headers: Any) -> tuple[Message, list[Message]]: ...


class LiveTracking:
    def __init__(
        self,
        tracker: CallTracker,
        publish: Callable[[ev.Event], None],
        queue_log_path: str | None = None,
        clock: Callable[[], float] = time.time,
        recovery: GapRecovery | None = None,
    ) -> None:
        self.tracker = tracker
        self.recovery = recovery
        self.publish = publish
        self.queue_log_path = queue_log_path
        self.clock = clock
        self.log = log.bind(server=tracker.server)
        self.lost_at: float | None = None
        self.resyncs = 0
        self.errors = 0
        self._evicted_reported = 0

    def _emit(self, events: Sequence[ev.Event]) -> None:
        for event in events:
            self.publish(event)

    def on_message(self, message: Message) -> None:
        try:
            self._emit(self.tracker.feed(message, self.clock()))
        except Exception:
            # One bad or unexpected message must never stop the tracking of every other call.
            self.errors += 1
            self.log.exception(
                "tracker failed on a message",
                ami_event=message.get("Event"),
                uniqueid=message.get("Uniqueid"),
            )

    def on_disconnected(self, reason: str) -> None:
        if self.lost_at is None:
            self.lost_at = self.clock()
        if self.recovery is not None:
            self.recovery.link_lost()
        self.publish(ev.LinkStateChanged(self.tracker.server, self.clock(), False, reason))

    async def on_connected(self, link: ListActions) -> None:
        """Rebuild live state: adopt calls in progress, close those that ended while we were away."""
        snapshot_at = self.tracker.last_event_at
        if self.recovery is not None:
            await self.recovery.begin()
        _, channels = await link.send_list("CoreShowChannels")
        _, status = await link.send_list("QueueStatus")
        entries = await self._missed_queue_log()
        now = self.clock()
        self._emit(self.tracker.resync(channels, status, now, entries, snapshot_at))
        if self.recovery is not None:
            self.recovery.start()  # the calls nobody saw, in the background
        self.resyncs += 1
        self.log.info(
            "resynchronised",
            channels=len(channels),
            open_calls=len(self.tracker.calls),
            queue_log_entries=len(entries),
            gap_s=None if self.lost_at is None else round(now - self.lost_at, 1),
        )
        self.lost_at = None
        self.publish(ev.LinkStateChanged(self.tracker.server, now, True, "resynchronised"))

    async def _missed_queue_log(self) -> list[QueueLogEntry]:
        if self.recovery is not None and not (self.queue_log_path and self.lost_at is not None):
            # No file to read here (cti on another host), or a restart: PostgreSQL's rows.
            open_since = min((r.started_at for r in self.tracker.open_calls()), default=None)
            return await self.recovery.queue_log(open_since)
        if not self.queue_log_path or self.lost_at is None:
            return []
        # Calls that were open when the link dropped may have queue facts from before the drop too.
        since = min((r.started_at for r in self.tracker.open_calls()), default=self.lost_at)
        try:
            return await asyncio.to_thread(read_since, self.queue_log_path, min(since, self.lost_at))
        except OSError as exc:
            self.log.warning(
                "queue_log unreadable, outcomes during the gap stay unknown",
                path=self.queue_log_path,
                error=str(exc),
            )
            return []

    async def reconcile(self, link: ListActions) -> int:
        """Close the calls whose channels Asterisk no longer has (a Hangup lost, a PBX bug): the
        same check as a resync, against CoreShowChannels alone. Returns how many were closed."""
        snapshot_at = self.tracker.last_event_at
        _, channels = await link.send_list("CoreShowChannels")
        alive = [m["Uniqueid"] for m in channels if "Uniqueid" in m]
        gone = self.tracker.calls_gone(alive, snapshot_at)
        if not gone:
            return 0
        entries: list[QueueLogEntry] = []
        if self.recovery is not None and not self.queue_log_path:
            entries = await self.recovery.queue_log(min(r.started_at for r in gone))
        if self.queue_log_path:
            since = min(r.started_at for r in gone)
            try:
                entries = await asyncio.to_thread(read_since, self.queue_log_path, since)
            except OSError as exc:
                self.log.warning("queue_log unreadable for the reconcile", error=str(exc))
        events = self.tracker.resync(channels, [], self.clock(), entries, snapshot_at, closed_by="reconcile")
        self._emit(events)
        self.log.warning(
            "calls closed by the reconcile: their channels were gone without a hangup seen",
            calls=len(gone),
            linkedids=[r.linkedid for r in gone[:10]],
        )
        return len(gone)

    def tick(self) -> None:
        self._emit(self.tracker.tick(self.clock()))
        if self.tracker.evicted != self._evicted_reported:
            self.log.error(
                "live calls over the limit: the oldest were closed unfinished",
                evicted=self.tracker.evicted - self._evicted_reported,
                limit=self.tracker.max_calls,
            )
            self._evicted_reported = self.tracker.evicted
