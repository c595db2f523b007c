"""Background work in short slices, one slice per turn of the event loop.

The screen pops run on the AMI socket's read callback and must not wait more than a millisecond
or so. asyncio runs every ready callback, in order, before it looks at the sockets again, so
what matters is how much work sits in the ready queue when the AMI bytes arrive. Everything else
(statistics, tickets, the dialer, pushes) therefore works in slices of at most `SLICE_S` and
between two slices asks `next_turn()`, which hands out one turn per loop iteration across all
background work: however many consumers have work, the loop polls its sockets after at most one
slice of it.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque

SLICE_S = 0.0005


class Slice:
    """Measures one slice of work: `over()` says when to call `next_turn()`."""

    __slots__ = ("seconds", "started")

    def __init__(self, seconds: float = SLICE_S) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def over(self) -> bool:
        return time.perf_counter() - self.started > self.seconds

    def restart(self) -> None:
        self.started = time.perf_counter()


class _Turns:
    """One loop's queue of background work waiting for a turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.granting = False

    def wait(self) -> asyncio.Future[None]:
        turn = self.loop.create_future()
        self.waiting.append(turn)
        if not self.granting:
            self.granting = True
            self.loop.call_soon(self._grant)
        return turn

    def _grant(self) -> None:
        # The granted work runs on the next iteration, and so does the next grant: one slice per
        # iteration, with the sockets polled in between.
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():  # a cancelled waiter gave its turn up
                turn.set_result(None)
                break
        if self.waiting:
            self.loop.call_soon(self._grant)
        else:
            self.granting = False


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = weakref.WeakKeyDictionary()


async def next_turn() -> None:
    """Give the loop back (its sockets are polled first) and resume at this work's next turn."""
    loop = asyncio.get_running_loop()
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = _Turns(loop)
    await turns.wait()
