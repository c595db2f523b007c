"""`BreachWatcher`: the task that stores SLA breaches as they fall due.

It sweeps at least every `interval_s` and sleeps less when the next breach is due sooner, so a
breach is published within moments of the instant it happens. A failing sweep (the database went
away) is logged once at WARNING, then at DEBUG until a sweep succeeds again; the task goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import structlog

from cti.tickets.service import BreachSweep, TicketService

log = structlog.get_logger(__name__)


def sleep_before_next_sweep(sweep: BreachSweep, now: float, interval_s: float) -> float:
    """Seconds to sleep: until the next breach if it comes before the regular pass."""
    if sweep.next_due_at is None:
        return interval_s
    return min(max(sweep.next_due_at - now, 0.0), interval_s)


class BreachWatcher:
    def __init__(
        self,
        service: TicketService,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.sweeps = 0
        self.failed_sweeps = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="tickets:breach-watcher")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # Re-raise only if it is our own caller being cancelled, not the task we stopped.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            delay = await self._sweep_once()
            await asyncio.sleep(delay)

    async def _sweep_once(self) -> float:
        try:
            sweep = await self._service.breach_sweep(self._clock())
        except Exception:
            (log.debug if self._failing else log.warning)("SLA breach sweep failed", exc_info=True)
            self._failing = True
            self.failed_sweeps += 1
            return self._interval_s
        if self._failing:
            log.info("SLA breach sweep working again")
            self._failing = False
        self.sweeps += 1
        return sleep_before_next_sweep(sweep, self._clock(), self._interval_s)
