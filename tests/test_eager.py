"""`start_eagerly`: a coroutine runs on the caller's step; only one that waits gets a task."""

from __future__ import annotations

import asyncio

import pytest

from cti.eager import start_eagerly


async def test_a_coroutine_that_never_waits_runs_to_the_end_on_the_callers_step() -> None:
    seen: list[str] = []

    async def work() -> None:
        seen.append("ran")

    assert start_eagerly(work()) is None
    assert seen == ["ran"]  # before the loop had any turn


async def test_its_exception_is_raised_to_the_caller() -> None:
    async def fails() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        start_eagerly(fails())


async def test_a_coroutine_that_waits_is_finished_by_a_task_in_order() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[object] = []

    async def work() -> str:
        seen.append("before")
        seen.append(await gate)
        await asyncio.sleep(0)  # a bare yield is handled too
        seen.append("after")
        return "done"

    rest = start_eagerly(work())
    assert rest is not None and seen == ["before"]
    await asyncio.sleep(0.01)
    assert not rest.done()  # still waiting for the gate
    gate.set_result(7)
    assert await rest == "done"
    assert seen == ["before", 7, "after"]


async def test_the_awaited_futures_exception_reaches_the_coroutine() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def work() -> str:
        try:
            await gate
        except ValueError as exc:
            return f"handled {exc}"
        return "not raised"

    rest = start_eagerly(work())
    assert rest is not None
    gate.set_exception(ValueError("boom"))
    assert await rest == "handled boom"


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    rest = start_eagerly(work())
    assert rest is not None
    await asyncio.sleep(0)
    rest.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rest
    assert cleaned == [True] and gate.cancelled()
