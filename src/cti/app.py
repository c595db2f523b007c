"""Composition root: the only module that knows every domain.

links (one per Asterisk server) → trackers → bus → consumers (call writer, …).
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import suppress
from dataclasses import dataclass, field

import structlog

from cti.ami.link import AmiLink
from cti.bus import EventBus
from cti.calls import events as ev
from cti.calls.live import LiveTracking
from cti.calls.tracker import CallTracker
from cti.config import Settings, redact_url
from cti.db.calls_store import CallStore, CallWriter, load_open_calls
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.logs import configure_logging

log = structlog.get_logger(__name__)

TICK_S = 1.0
SHUTDOWN_GRACE_S = 10.0


@dataclass
class Daemon:
    settings: Settings
    bus: EventBus = field(default_factory=EventBus)
    links: list[AmiLink] = field(default_factory=list)
    trackings: list[LiveTracking] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def _spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        db = self.settings.database
        self.engine = create_engine(db.url)
        await upgrade_async(self.engine)
        self.store = CallStore(self.engine)
        self.writer = CallWriter.from_settings(self.store, db)
        self.writer.start()
        self.bus.consume("call-writer", self._write_ended, kinds=frozenset({ev.CallEnded}))
        for server in self.settings.asterisk:
            tracker = CallTracker(
                server.name, self.settings.tracker.default_region, self.settings.tracker.originate_grace_s
            )
            # Calls in progress when we last stopped: the first resync adopts or closes them.
            tracker.restore(await load_open_calls(self.engine, server.name))
            tracking = LiveTracking(tracker, self.bus.publish, server.queue_log)
            link = AmiLink(
                server,
                tracking.on_message,
                tracking.on_connected,
                tracking.on_disconnected,
                events=tracker.handled_events,
            )
            self.trackings.append(tracking)
            self.links.append(link)
            self._spawn(link.run(), f"ami:{server.name}")
        self._spawn(self._tick(), "tracker-tick")
        log.info("cti started", servers=[s.name for s in self.settings.asterisk], database=redact_url(db.url))

    def _write_ended(self, event: ev.Event) -> None:
        if isinstance(event, ev.CallEnded):
            self.writer.submit(event.record)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for tracking in self.trackings:
                tracking.tick()

    def stop(self) -> None:
        self._stopping.set()

    async def wait(self) -> None:
        await self._stopping.wait()

    async def shutdown(self) -> None:
        """Log off, let consumers take what was published, flush the writer, cancel the rest."""
        log.info("cti stopping")
        for link in self.links:
            with suppress(Exception):
                await asyncio.wait_for(link.close(), SHUTDOWN_GRACE_S / 2)
        await self.bus.drain(SHUTDOWN_GRACE_S / 2)
        for tracking in self.trackings:
            # Still going on in Asterisk: kept as "shutdown" so the next start takes them back.
            for record in tracking.tracker.open_calls():
                record.closed_by = "shutdown"
                self.writer.submit(record)
        await self.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.close()
        await self.engine.dispose()
        log.info("cti stopped")


async def serve(settings: Settings) -> None:
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.stop)
    await daemon.start()
    try:
        await daemon.wait()
    finally:
        await daemon.shutdown()


def run_daemon(settings: Settings) -> int:
    configure_logging(settings.log.level, settings.log.format, settings.secrets())
    asyncio.run(serve(settings))
    return 0
