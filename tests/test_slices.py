"""Background work takes turns: at most one slice per loop iteration, whatever the number of
workers, so what arrives on a socket never waits behind more than one slice."""

from __future__ import annotations

import asyncio

from cti.slices import Slice, next_turn


async def test_one_background_slice_per_loop_iteration_across_workers() -> None:
    trace: list[str] = []
    stop = False
    loop = asyncio.get_running_loop()

    def iteration() -> None:  # a callback that runs once per loop iteration, like a socket poll
        trace.append("|")
        if not stop:
            loop.call_soon(iteration)

    async def worker(name: str) -> None:
        for _ in range(20):
            await next_turn()
            trace.append(name)

    loop.call_soon(iteration)
    await asyncio.gather(worker("a"), worker("b"), worker("c"))
    stop = True
    slices = "".join(trace).split("|")
    assert max(len(s) for s in slices) == 1  # never two slices in one iteration
    assert sorted("".join(slices)) == sorted("abc" * 20)  # and every slice ran


async def test_a_cancelled_waiter_gives_its_turn_up() -> None:
    blocked = asyncio.create_task(next_turn())
    await asyncio.sleep(0)
    blocked.cancel()
    await asyncio.wait_for(next_turn(), 1)  # the next waiter is not stuck behind it
    assert blocked.cancelled()


def test_turns_are_per_event_loop() -> None:
    async def leave_a_waiter() -> None:
        asyncio.get_running_loop().create_task(next_turn())  # never granted: the loop ends first

    asyncio.run(leave_a_waiter())
    asyncio.run(asyncio.wait_for(next_turn(), 1))  # a new loop does not inherit that queue


def test_a_slice_is_over_after_its_time() -> None:
    work = Slice(0.0)
    assert work.over()
    assert not Slice(60.0).over()
