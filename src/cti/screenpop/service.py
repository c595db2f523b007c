"""Screen pops live: bus events → router → the agents' WebSockets, with the caller looked up in
the directory as soon as the call starts (so the pop usually carries the customer already)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from cti.calls import events as ev
from cti.screenpop.router import Outgoing, PopRouter

log = structlog.get_logger(__name__)
LOOKUP_TIMEOUT_S = 1.0


class Lookup(Protocol):
    def __call__(self, raw: str | None) -> Awaitable[dict[str, Any]]: ...


class ScreenPops:
    def __init__(
        self, router: PopRouter, send: Callable[[str, dict[str, Any]], None], lookup: Lookup | None = None
    ) -> None:
        self.router = router
        self.send = send
        self.lookup = lookup
        self._lookups: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._reported: set[str] = set()
        self.sent = 0

    def _deliver(self, out: list[Outgoing]) -> None:
        for user, message in out:
            self.send(user, message)
            self.sent += 1

    def on_event(self, event: ev.Event) -> None:
        self._deliver(self.router.feed(event))
        if len(self.router.unknown_interfaces) > len(self._reported):
            for interface in self.router.unknown_interfaces - self._reported:
                # Once per interface: a queue member nobody mapped must not flood the log.
                log.warning("ringing interface mapped to no user, no pop", interface=interface)
            self._reported |= self.router.unknown_interfaces
        if self.lookup is None or not isinstance(event, ev.CallStarted | ev.CallerIdentified):
            return
        if (event.server, event.linkedid) in self.router.calls and event.caller_raw is not None:
            self._start_lookup(event.server, event.linkedid, event.caller_raw)

    def _start_lookup(self, server: str, linkedid: str, raw: str) -> None:
        previous = self._lookups.pop((server, linkedid), None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._lookup(server, linkedid, raw), name=f"lookup:{linkedid}")
        self._lookups[(server, linkedid)] = task
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._lookups.items()):
            if running is task:
                del self._lookups[key]

    async def _lookup(self, server: str, linkedid: str, raw: str) -> None:
        assert self.lookup is not None
        try:
            result = await asyncio.wait_for(self.lookup(raw), LOOKUP_TIMEOUT_S)
        except Exception as exc:  # the pop must never wait on, or die of, the directory
            log.warning(
                "caller lookup failed, pop degraded", call=linkedid, error=str(exc) or type(exc).__name__
            )
            result = {"status": "unavailable"}
        self._deliver(self.router.set_customer(server, linkedid, result))

    async def close(self) -> None:
        for task in list(self._lookups.values()):
            task.cancel()
        await asyncio.gather(*self._lookups.values(), return_exceptions=True)
        self._lookups.clear()
