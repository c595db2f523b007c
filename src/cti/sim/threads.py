"""Channel threads: each channel running dialplan is a generator stepped by the scheduler.

A dialplan program yields a number (sleep that many simulated seconds) or a `Gate` (wait until
something fires it: a DTMF digit, an agent answering). A hangup request throws `HungUp` into the
program at the point where it waits, as Asterisk's channel thread notices a soft hangup between
frames; the program may clean up (the Queue application does) and then its thread ends.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from cti.sim.clock import Scheduler, Timer


class HungUp(Exception):
    """Thrown into a program whose channel was asked to hang up."""


class Gate:
    """Something a program waits for; `fire(value)` resumes every waiter with `value`."""

    __slots__ = ("_waiters", "fired", "value")

    def __init__(self) -> None:
        self._waiters: list[Thread] = []
        self.fired = False
        self.value: Any = None

    def fire(self, value: Any = None) -> None:
        if self.fired:
            return
        self.fired = True
        self.value = value
        waiters, self._waiters = self._waiters, []
        for thread in waiters:
            thread.resume(value)

    def _wait(self, thread: Thread) -> None:
        if self.fired:
            thread.resume(self.value)
        else:
            self._waiters.append(thread)

    def _forget(self, thread: Thread) -> None:
        if thread in self._waiters:
            self._waiters.remove(thread)


# What a dialplan program yields: seconds to sleep, or a gate to wait on.
Step = float | Gate
Program = Generator[Step, Any, None]


class Thread:
    """Steps one program on the scheduler; `on_end` runs once when the program is over."""

    def __init__(self, scheduler: Scheduler, program: Program, on_end: Callable[[], None]) -> None:
        self._scheduler = scheduler
        self._program = program
        self._on_end = on_end
        self._timer: Timer | None = None
        self._gate: Gate | None = None
        self.done = False
        self.interrupted = False

    def start(self) -> None:
        self._timer = self._scheduler.call_later(0.0, lambda: self._step(None))

    def resume(self, value: Any = None) -> None:
        """Continue the program now (a gate fired)."""
        self._gate = None
        if self.done:
            return
        self._timer = self._scheduler.call_later(0.0, lambda: self._step(value))

    def interrupt(self) -> None:
        """The channel was asked to hang up: throw `HungUp` into the program (once)."""
        if self.done or self.interrupted:
            return
        self.interrupted = True
        self._cancel_wait()
        self._timer = self._scheduler.call_later(0.0, self._throw)

    def _cancel_wait(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._gate is not None:
            self._gate._forget(self)
            self._gate = None

    def _throw(self) -> None:
        self._run(lambda: self._program.throw(HungUp()))

    def _step(self, value: Any) -> None:
        self._run(lambda: self._program.send(value))

    def _run(self, advance: Callable[[], Step]) -> None:
        self._timer = None
        try:
            step = advance()
        except (StopIteration, HungUp):
            self._finish()
            return
        if isinstance(step, Gate):
            self._gate = step
            step._wait(self)
        else:
            self._timer = self._scheduler.call_later(float(step), lambda: self._step(None))

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._on_end()

    def kill(self) -> None:
        """Stop without running the program's clean-up (PBX shutdown, server close)."""
        self._cancel_wait()
        self.done = True
        self._program.close()
