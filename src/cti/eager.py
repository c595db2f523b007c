"""Run a coroutine on the caller's own step until it has to wait: Python 3.12's eager tasks, for
the Python 3.11 we support.

Why: a WebSocket send nearly always completes at once (the frame goes into the socket's buffer).
Wrapped in a task, it would first wait for its turn on the event loop, behind every callback
already ready (a statistics slice, a database batch): that wait was most of a screen pop's
latency. Started eagerly, the frame leaves on the step that produced it, and a task exists only
for the rare send that must wait for the socket to drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T] | None:
    """Run `coro` now. Returns None when it finished without waiting (its exception, if it
    raised, propagates here), otherwise a task that runs the rest of it."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_rest(coro, awaited))


async def _rest(coro: Coroutine[Any, Any, T], awaited: Any) -> T:
    """What `asyncio.Task` does for a coroutine, from the point where `start_eagerly` left it:
    wait for the future it yielded, resume it, until it returns."""
    while True:
        if awaited is None:
            await asyncio.sleep(0)  # a bare yield (`sleep(0)`): it only gives the loop a turn
        elif not isinstance(awaited, asyncio.Future):
            coro.close()
            raise RuntimeError(f"coroutine yielded {awaited!r}, not an asyncio future")
        else:
            awaited._asyncio_future_blocking = False  # as Task does: the yield is handled here
            try:
                await awaited
            except BaseException:
                if not awaited.done():  # this task itself was cancelled: so is the coroutine
                    coro.close()
                    raise
                # Otherwise the coroutine sees the future's exception when it resumes.
        try:
            awaited = coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
