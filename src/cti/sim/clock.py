"""Simulated time: a discrete-event scheduler and the clock that maps it to the wall.

Everything the simulated PBX does happens in simulated seconds. Timers fire in time order (ties in
the order they were set), so a scenario gives the same transcript at any speed: speed only decides
how fast simulated time follows the wall clock, and a manual clock (speed None) moves only when a
test says so.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

# Successive events are stamped at least this far apart, as Asterisk's own events are (a burst of
# events from one dialplan step spans a few microseconds, never zero).
STAMP_STEP_S = 0.000005


@dataclass(eq=False, slots=True)
class Timer:
    at: float
    seq: int
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Timers on simulated time. `run_until(t)` fires every timer due by `t`, in order."""

    def __init__(self, start: float) -> None:
        self.now = start
        # (at, seq, timer): tuples compare fast, and seq keeps ties in the order they were set.
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._last_stamp = start
        self.on_schedule: Callable[[], None] | None = None

    def call_at(self, at: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(max(at, self.now), next(self._seq), callback)
        heapq.heappush(self._heap, (timer.at, timer.seq, timer))
        if self.on_schedule is not None:
            self.on_schedule()
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.now + max(0.0, delay), callback)

    def next_time(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_until(self, until: float, limit: int | None = None) -> int:
        """Fire the timers due by `until` (at most `limit` of them); returns how many fired."""
        fired = 0
        heap = self._heap
        while heap and (limit is None or fired < limit):
            timer = heap[0][2]
            if timer.cancelled:
                heapq.heappop(heap)
                continue
            if timer.at > until:
                break
            heapq.heappop(heap)
            if timer.at > self.now:
                self.now = timer.at
            timer.callback()
            fired += 1
        if (limit is None or fired < limit) and until > self.now:
            self.now = until
        return fired

    def stamp(self) -> float:
        """The `Timestamp` of the next event: simulated now, strictly after the previous stamp."""
        stamp = max(self.now, self._last_stamp + STAMP_STEP_S)
        self._last_stamp = stamp
        return stamp

    @property
    def pending(self) -> int:
        return sum(not entry[2].cancelled for entry in self._heap)


class WallClock:
    """Maps wall time to simulated time at `speed` simulated seconds per wall second."""

    def __init__(self, sim_start: float, speed: float, wall: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._wall = wall
        self._wall_start = wall()
        self._sim_start = sim_start

    def sim_now(self) -> float:
        return self._sim_start + (self._wall() - self._wall_start) * self.speed

    def wall_delay(self, sim_at: float) -> float:
        """Wall seconds until simulated time `sim_at`."""
        return max(0.0, (sim_at - self.sim_now()) / self.speed)
