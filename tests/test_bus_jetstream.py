"""The bus over NATS JetStream (cti/bus_jetstream.py), against the real NATS server with
JetStream on 127.0.0.1:4222; each test has a stream and subjects of its own, deleted after.

- published events reach a durable consumer on another node, acknowledged; that consumer
  stopped and restarted (a new process would do the same: same durable) resumes after the last
  event it acknowledged: nothing lost, nothing handled twice;
- NATS away (a closed port; a TCP relay cut and restored): `export` never waits, the buffer
  holds what it can (the rest dropped, counted), and what it held is published once NATS is back;
- a stale stream owner's events (an older fencing token) are dropped; unreadable bytes are
  skipped and the consumer goes on.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import replace

import pytest

from cti.bus_jetstream import JetStreamBus
from cti.calls import events as ev
from cti.config import BusSettings
from test_daemon import until

NATS_URL = "nats://127.0.0.1:4222"


def _nats_up() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 4222)) == 0


pytestmark = pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222")


@pytest.fixture
async def bus_settings() -> AsyncIterator[BusSettings]:
    """A stream and subject prefix of this test's own, deleted afterwards."""
    import nats

    tag = uuid.uuid4().hex[:10]
    settings = BusSettings(nats_url=NATS_URL, stream=f"CTI_TEST_{tag}", subject_prefix=f"cti-test-{tag}")
    yield settings
    nc = await nats.connect(NATS_URL)
    with suppress(Exception):
        await nc.jetstream().delete_stream(settings.stream)
    await nc.close()


def bus(
    settings: BusSettings, node: str, token_for: Callable[[str], int | None] | None = None
) -> JetStreamBus:
    return JetStreamBus(replace(settings, node=node), token_for)


def event(i: int, server: str = "pbx-a") -> ev.Event:
    return ev.CallStarted(server, float(i), f"call-{i}", "inbound", f"+3361234{i:04d}", None)


async def test_a_durable_consumer_resumes_after_its_last_acknowledged_event(
    bus_settings: BusSettings,
) -> None:
    publisher = bus(bus_settings, "node-a")
    publisher.start()
    seen: list[str] = []

    async def handle(e: ev.Event) -> None:
        assert isinstance(e, ev.CallStarted)
        seen.append(e.linkedid)

    consumer = bus(bus_settings, "node-b")
    desk = consumer.consume("desk", handle)
    consumer.start()
    await until(lambda: consumer.connected and publisher.connected, 10)
    for i in range(200):
        publisher.export(event(i))
    await until(lambda: len(seen) == 200, 10)
    await consumer.close()  # handles and acknowledges what was delivered, then goes
    assert desk.handled == 200

    for i in range(200, 500):  # published while node B is down
        publisher.export(event(i))
    assert await publisher.flush(10)

    restarted = bus(bus_settings, "node-b")
    again = restarted.consume("desk", handle)
    restarted.start()
    await until(lambda: len(seen) >= 500, 10)
    await asyncio.sleep(0.3)  # anything more would be a duplicate
    assert seen == [f"call-{i}" for i in range(500)]  # in order, none lost, none twice
    assert again.handled == 300 and again.late == 0
    await restarted.close()
    await publisher.close()


async def test_a_node_skips_its_own_events_unless_asked(bus_settings: BusSettings) -> None:
    node = bus(bus_settings, "node-a")
    others: list[ev.Event] = []
    everything: list[ev.Event] = []
    node.consume("desk", others.append)
    node.consume("audit", everything.append, own=True)
    node.start()
    await until(lambda: node.connected, 10)
    late: list[ev.Event] = []
    node.consume("late", late.append, own=True)  # once connected: subscribed at once
    await asyncio.sleep(0.5)
    node.export(event(1))
    await until(lambda: len(everything) == 1 and len(late) == 1, 10)
    assert everything == late == [event(1)] and others == []
    await node.close()


async def test_publishing_never_waits_for_an_absent_nats(bus_settings: BusSettings) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = replace(bus_settings, nats_url=f"nats://127.0.0.1:{closed}", buffer=1000, timeout_s=0.2)
    node = bus(settings, "node-a")
    node.start()
    slowest = 0.0
    for i in range(5000):
        started = time.perf_counter()
        node.export(event(i))
        slowest = max(slowest, time.perf_counter() - started)
        if i % 500 == 0:
            await asyncio.sleep(0.01)  # the connection attempts run meanwhile
    await until(lambda: node.connect_failures >= 2, 10)
    # A wait for NATS would last timeout_s (0.2 s); the bound leaves room for a loaded machine.
    assert slowest < 0.1, slowest
    assert node.pending == 1000 and node.dropped == 4000 and node.published == 0
    started = time.perf_counter()
    await node.close(within_s=0.5)
    assert time.perf_counter() - started < 2


class Relay:
    """A TCP relay to NATS that a test can cut (every connection closed, new ones refused)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 4222)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.pipes):
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        await self.server.wait_closed()


async def test_events_published_during_a_cut_arrive_once_nats_is_back(bus_settings: BusSettings) -> None:
    relay = Relay()
    await relay.start()
    settings = replace(bus_settings, nats_url=f"nats://127.0.0.1:{relay.port}", timeout_s=0.5)
    publisher = bus(settings, "node-a")
    publisher.start()
    seen: list[str] = []
    consumer = bus(bus_settings, "node-b")  # straight to NATS
    consumer.consume("desk", lambda e: seen.append(e.linkedid) if isinstance(e, ev.CallEvent) else None)
    consumer.start()
    await until(lambda: publisher.connected and consumer.connected, 10)
    for i in range(100):
        publisher.export(event(i))
    await until(lambda: len(seen) == 100, 10)

    await relay.cut()
    await until(lambda: not publisher.connected, 10)
    slowest = 0.0
    for i in range(100, 1100):
        started = time.perf_counter()
        publisher.export(event(i))
        slowest = max(slowest, time.perf_counter() - started)
        if i % 100 == 0:
            await asyncio.sleep(0.05)
    assert slowest < 0.1, slowest  # a wait for NATS would last timeout_s (0.5 s)
    assert len(seen) == 100  # nothing went through the cut

    await relay.start()  # the same port again
    await until(lambda: len(seen) >= 1100, 20)
    await asyncio.sleep(0.3)
    assert seen == [f"call-{i}" for i in range(1100)]  # none lost, none twice, in order
    await publisher.close()
    await consumer.close()
    await relay.cut()


async def test_a_stale_owners_events_are_dropped(bus_settings: BusSettings) -> None:
    tokens = {"old-owner": 1, "new-owner": 2}
    old = bus(bus_settings, "old-owner", lambda server: tokens["old-owner"])
    new = bus(bus_settings, "new-owner", lambda server: tokens["new-owner"])
    seen: list[str] = []
    desk = bus(bus_settings, "desk-node")
    consumer = desk.consume(
        "desk", lambda e: seen.append(e.linkedid) if isinstance(e, ev.CallEvent) else None
    )
    for node in (old, new, desk):
        node.start()
    await until(lambda: old.connected and new.connected and desk.connected, 10)
    old.export(event(1))
    await until(lambda: seen == ["call-1"], 10)
    new.export(event(2))  # the standby took over: token 2
    await until(lambda: seen == ["call-1", "call-2"], 10)
    old.export(event(3))  # the old owner, thawed, still believes it owns the stream
    old.export(event(4, server="pbx-b"))  # ...but not another server's
    new.export(event(5))
    await until(lambda: len(seen) == 4, 10)
    assert seen[:2] == ["call-1", "call-2"] and sorted(seen[2:]) == ["call-4", "call-5"]
    assert consumer.fenced == 1
    for node in (old, new, desk):
        await node.close()


async def test_unreadable_bytes_are_skipped_and_the_consumer_goes_on(bus_settings: BusSettings) -> None:
    import nats

    seen: list[ev.Event] = []
    desk = bus(bus_settings, "desk-node")
    consumer = desk.consume("desk", seen.append)
    publisher = bus(bus_settings, "node-a")
    for node in (desk, publisher):
        node.start()
    await until(lambda: desk.connected and publisher.connected, 10)
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    subject = f"{bus_settings.subject_prefix}.pbx-a.call_started"
    await js.publish(subject, b'{"v": 9, "kind": "call_started", "event": {}}')
    await js.publish(subject, b"\x00garbage")
    await nc.close()
    publisher.export(event(7))
    await until(lambda: seen == [event(7)], 10)
    assert consumer.undecodable == 2
    await desk.close()
    await publisher.close()
