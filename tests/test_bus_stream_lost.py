"""The JetStream stream lost under running nodes (a NATS server restarted without its storage,
an operator's `nats stream rm`): the nodes make it again and go on, none skipping the new
stream's events for having been further along in the old one (cti/bus_jetstream.py). Against
the real NATS server on 127.0.0.1:4222, a stream of the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from cti.bus_jetstream import DurableConsumer, JetStreamBus
from cti.calls import events as ev
from cti.config import BusSettings
from test_bus_jetstream import NATS_URL, _nats_up, bus, bus_settings, event  # noqa: F401 - the fixture
from test_daemon import until

pytestmark = pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222")


def _into(seen: list[str]) -> Callable[[ev.Event], None]:
    def handle(e: ev.Event) -> None:
        if isinstance(e, ev.CallEvent):
            seen.append(e.linkedid)

    return handle


async def _two_nodes(
    settings: BusSettings, events: int
) -> tuple[JetStreamBus, JetStreamBus, DurableConsumer, list[str]]:
    """Node A publishes, node B's `desk` consumer has handled A's first `events` events."""
    publisher = bus(settings, "node-a")
    publisher.start()
    seen: list[str] = []
    consumer = bus(settings, "node-b")
    desk = consumer.consume("desk", _into(seen))
    consumer.start()
    await until(lambda: publisher.connected and consumer.connected, 10)
    for i in range(events):
        publisher.export(event(i))
    await until(lambda: len(seen) == events, 10)
    return publisher, consumer, desk, seen


async def _delete_stream(name: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        assert await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


async def test_a_stream_deleted_under_running_nodes_is_made_again_and_nothing_new_is_skipped(
    bus_settings: BusSettings,  # noqa: F811
) -> None:
    publisher, consumer, desk, seen = await _two_nodes(bus_settings, 300)

    await _delete_stream(bus_settings.stream)  # its consumers go with it
    # The new stream's sequences start at 1 again, far below node B's 300.
    for i in range(300, 400):
        publisher.export(event(i))
        await asyncio.sleep(0.01)
    await until(lambda: len(seen) >= 400, 30)
    await asyncio.sleep(0.3)  # anything more would be a duplicate
    assert seen == [f"call-{i}" for i in range(400)]  # none lost, none twice, in order
    assert desk.late == 0
    await publisher.close()
    await consumer.close()


async def test_a_deleted_consumer_is_made_again_from_the_event_after_its_position(
    bus_settings: BusSettings,  # noqa: F811
) -> None:
    import nats

    publisher, consumer, desk, seen = await _two_nodes(bus_settings, 100)

    nc = await nats.connect(NATS_URL)
    try:
        assert await nc.jetstream().delete_consumer(bus_settings.stream, desk.name)
    finally:
        await nc.close()
    # Published while node B has no consumer: "from now on" would lose them all.
    for i in range(100, 200):
        publisher.export(event(i))
    assert await publisher.flush(10)
    await until(lambda: consumer.streams_lost == 1, 30)
    await until(lambda: len(seen) >= 200, 30)
    await asyncio.sleep(0.3)
    assert seen == [f"call-{i}" for i in range(200)]  # none lost, none twice, in order
    assert publisher.streams_lost == 0  # the stream itself never went
    await publisher.close()
    await consumer.close()
