"""In-process publish/subscribe of domain events.

`publish` never blocks and never raises: the AMI reader calls it. Each subscriber has a bounded
queue; when a slow subscriber's queue is full its oldest events are dropped and counted (and
logged once per burst), so one stuck consumer can never hold up the tracker or the others.

With several nodes (docs/scale-out.md, "The bus"), the events other nodes published come back
through `publish_remote`: they reach only the taps and consumers subscribed with `remote=True`
(screen pops, ticket pushes, live statistics), never those whose work the publishing node
does itself (the call writer, the ticket opener, the dialer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import structlog

from cti.calls.events import Event
from cti.slices import Slice, next_turn

log = structlog.get_logger(__name__)

Handler = Callable[[Event], Awaitable[None] | None]


@dataclass
class Subscription:
    name: str
    queue: asyncio.Queue[Event]
    kinds: frozenset[type[Event]] | None = None
    dropped: int = 0
    remote: bool = False  # also gets the events of other nodes (`publish_remote`)
    _warned: bool = field(default=False, repr=False)
    _types: tuple[type[Event], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        self._types = tuple(self.kinds or ())  # built once: `wants` runs for every event

    def wants(self, event: Event) -> bool:
        return self.kinds is None or isinstance(event, self._types)


class EventBus:
    def __init__(self) -> None:
        self._taps: list[tuple[str, Callable[[Event], None]]] = []
        self._remote_taps: list[tuple[str, Callable[[Event], None]]] = []
        self._subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.published = 0
        self.published_remote = 0

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """The queued consumers (read by the metrics: queue depths and drops)."""
        return tuple(self._subscriptions)

    def subscribe(
        self,
        name: str,
        maxsize: int = 10_000,
        kinds: frozenset[type[Event]] | None = None,
        remote: bool = False,
    ) -> Subscription:
        sub = Subscription(name, asyncio.Queue(maxsize), kinds, remote=remote)
        self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def tap(self, name: str, handler: Callable[[Event], None], remote: bool = False) -> None:
        """Run `handler` inline, inside `publish`, for latency-critical consumers (screen pops).

        Only for handlers that never block and never do I/O themselves (they may start tasks):
        they run on the AMI reader's path. A raising tap is logged and skipped. `remote`: it
        also sees the events of other nodes."""
        self._taps.append((name, handler))
        if remote:
            self._remote_taps.append((name, handler))

    def hear_remote(self, name: str) -> None:
        """Let the tap or queued consumer `name`, already subscribed, also receive the events
        of other nodes (`publish_remote`)."""
        found = False
        for tap in self._taps:
            if tap[0] == name:
                found = True
                if tap not in self._remote_taps:
                    self._remote_taps.append(tap)
        for sub in self._subscriptions:
            if sub.name == name:
                found = sub.remote = True
        if not found:
            raise KeyError(f"no tap or consumer named {name!r} on the bus")

    def publish(self, event: Event) -> None:
        self.published += 1
        self._deliver(event, self._taps, self._subscriptions)

    def publish_remote(self, event: Event, skip: Collection[str] = ()) -> None:
        """An event another node published (from the JetStream bus): to the remote taps and
        consumers only, but those named in `skip`. Never blocks, never raises, like `publish`."""
        self.published_remote += 1
        taps = [t for t in self._remote_taps if t[0] not in skip] if skip else self._remote_taps
        self._deliver(event, taps, [s for s in self._subscriptions if s.remote and s.name not in skip])

    def _deliver(
        self, event: Event, taps: list[tuple[str, Callable[[Event], None]]], subs: list[Subscription]
    ) -> None:
        for name, handler in taps:
            try:
                handler(event)
            except Exception:
                log.exception("event tap failed", subscriber=name, event_kind=event.kind)
        for sub in subs:
            if not sub.wants(event):
                continue
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.queue.task_done()
                sub.dropped += 1
                if not sub._warned:
                    sub._warned = True
                    log.warning("bus subscriber too slow, dropping oldest events", subscriber=sub.name)
            elif sub._warned and sub.queue.qsize() < sub.queue.maxsize // 2:
                sub._warned = False
            sub.queue.put_nowait(event)

    def consume(
        self,
        name: str,
        handler: Handler,
        maxsize: int = 10_000,
        kinds: frozenset[type[Event]] | None = None,
        remote: bool = False,
    ) -> asyncio.Task[None]:
        """Run `handler` for every event in a referenced task; a raising handler is logged, not
        fatal. `remote`: also for the events of other nodes."""
        sub = self.subscribe(name, maxsize, kinds, remote)
        task = asyncio.create_task(self._pump(sub, handler), name=f"bus:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _pump(self, sub: Subscription, handler: Handler) -> None:
        # `Queue.get` does not yield while events are queued: a consumer with a backlog (the
        # statistics after a burst) would hold the loop, and the screen pops, until it is empty.
        # It works in slices instead, taking turns with the other background work
        # (`cti.slices`), so the consumers an event wakes together do not run back to back.
        work = Slice()
        try:
            while True:
                if sub.queue.empty():
                    event = await sub.queue.get()  # waits: the loop runs the others meanwhile
                    await next_turn()
                    work.restart()
                else:
                    if work.over():
                        await next_turn()
                        work.restart()
                    event = sub.queue.get_nowait()
                try:
                    result = handler(event)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("event handler failed", subscriber=sub.name, event_kind=event.kind)
                finally:
                    sub.queue.task_done()
        finally:
            self.unsubscribe(sub)

    async def drain(self, within_s: float = 5.0) -> None:
        """Wait until every consumer has handled what was published (bounded by `within_s`)."""
        joins = [s.queue.join() for s in self._subscriptions]
        try:
            await asyncio.wait_for(asyncio.gather(*joins), within_s)
        except TimeoutError:
            log.warning("bus drain timed out", pending={s.name: s.queue.qsize() for s in self._subscriptions})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
