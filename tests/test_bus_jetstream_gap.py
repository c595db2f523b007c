"""Events in flight to a node when its NATS connection drops (cti/bus_jetstream.py, "gaps";
docs/scale-out.md, "Durable consumers"), against the real NATS server with JetStream on
127.0.0.1:4222, each test with a stream of its own.

A TCP relay stands between the consumer's node and NATS. It first swallows what NATS sends
(a link gone dead: the events JetStream pushes meanwhile never arrive, unacknowledged), then
drops the connection. JetStream then pushes the newer events at once and delivers the lost ones
again only after `ack_wait_s`, behind them. While another node publishes a steady flow:

- the node reconnects (same process): every event is handled once, in stream order;
- the node is abandoned as with `kill -9` and a new one with the same name starts: the same.

The lost events come back later all the same (delivered again): they are skipped then, counted
as `late`, as many as were fetched to fill the gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from cti import bus_jetstream
from cti.bus_jetstream import JetStreamBus
from cti.calls import events as ev
from cti.config import BusSettings
from test_bus_jetstream import NATS_URL, _nats_up, bus, bus_settings, event  # noqa: F401 - the fixture
from test_daemon import until

pytestmark = pytest.mark.skipif(not _nats_up(), reason="no NATS server on 127.0.0.1:4222")

IN_FLIGHT = 20  # events swallowed by the dead link, at least


class DeadLinkRelay:
    """A TCP relay to NATS that can go dead: what NATS sends is swallowed (`freeze`), then
    every connection is dropped (`cut`); new connections are relayed normally again."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.frozen = False
        self.refusing = False
        self.swallowed = 0  # bytes from NATS never passed on
        self.pipes: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 4222)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            try:
                while data := await src.read(65536):
                    if down and self.frozen:
                        self.swallowed += len(data)
                        continue
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer, False)),
            asyncio.create_task(pipe(up_reader, writer, True)),
        ):
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def cut(self) -> None:
        """Drop every relayed connection; the next ones are relayed (unless `refusing`)."""
        pipes = list(self.pipes)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        self.frozen = False

    async def close(self) -> None:
        self.refusing = True
        await self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Flow:
    """A publishing node exporting one event every few ms until stopped (event i is the
    stream's sequence i + 1: nothing else is published on the test's stream)."""

    def __init__(self, node: JetStreamBus) -> None:
        self.node = node
        self.count = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.node.export(event(self.count))
            self.count += 1
            await asyncio.sleep(0.003)

    async def stop(self) -> int:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        assert await self.node.flush(20)
        return self.count


async def _consumer_info(js: Any, settings: BusSettings, name: str) -> Any:
    try:
        return await js.consumer_info(settings.stream, name)
    except Exception:
        return None


async def _in_flight(js: Any, settings: BusSettings, name: str, at_least: int) -> bool:
    info = await _consumer_info(js, settings, name)
    return info is not None and info.num_ack_pending >= at_least


async def _all_acknowledged(js: Any, settings: BusSettings, name: str, last: int) -> bool:
    """Every event up to stream sequence `last` acknowledged, none delivered and waiting."""
    info = await _consumer_info(js, settings, name)
    return (
        info is not None
        and info.num_ack_pending == 0
        and info.num_redelivered == 0
        and (info.ack_floor.stream_seq or 0) >= last
    )


@pytest.fixture
async def nats_js() -> AsyncIterator[Any]:
    import nats

    nc = await nats.connect(NATS_URL)
    yield nc.jetstream()
    await nc.close()


def _recorder(seen: list[str]) -> Any:
    def handle(e: ev.Event) -> None:
        if isinstance(e, ev.CallEvent):
            seen.append(e.linkedid)

    return handle


async def test_events_in_flight_when_the_connection_drops_are_handled_once_in_order(
    bus_settings: BusSettings,  # noqa: F811
    nats_js: Any,
) -> None:
    relay = DeadLinkRelay()
    await relay.start()
    settings = replace(bus_settings, ack_wait_s=2.0, timeout_s=1.0)
    publisher = bus(settings, "node-a")
    publisher.start()
    seen: list[str] = []
    node = bus(replace(settings, nats_url=f"nats://127.0.0.1:{relay.port}"), "node-b")
    desk = node.consume("desk", _recorder(seen))
    node.start()
    await until(lambda: publisher.connected and node.connected, 10)
    flow = Flow(publisher)
    flow.start()
    await until(lambda: len(seen) >= 50, 20)

    relay.frozen = True  # the link dies: what JetStream pushes now is lost on the way
    await until(lambda: _in_flight(nats_js, settings, desk.name, IN_FLIGHT), 20)
    await relay.cut()  # the client notices, reconnects through the relay, subscribes again
    await until(lambda: node._nc is not None and node._nc.stats["reconnects"] >= 1 and node.connected, 20)
    before = len(seen)
    await until(lambda: len(seen) >= before + 100, 30)  # newer events flow again
    total = await flow.stop()

    last = (await nats_js.stream_info(settings.stream)).state.last_seq
    # Until the lost events were delivered again (after ack_wait_s) and acknowledged too.
    await until(lambda: _all_acknowledged(nats_js, settings, desk.name, last), 60)
    assert relay.swallowed > 0
    assert seen == [f"call-{i}" for i in range(total)], _missing(seen, total)
    assert desk.handled == total
    assert desk.filled >= IN_FLIGHT and desk.gone == 0 and desk.unfilled == 0
    assert desk.late == desk.filled  # each fetched one came again later: skipped, not handled twice
    await node.close()
    await publisher.close()
    await relay.close()


async def test_a_node_killed_with_events_in_flight_handles_them_once_in_order_after_restart(
    bus_settings: BusSettings,  # noqa: F811
    nats_js: Any,
) -> None:
    relay = DeadLinkRelay()
    await relay.start()
    settings = replace(bus_settings, ack_wait_s=2.0, timeout_s=1.0)
    publisher = bus(settings, "node-a")
    publisher.start()
    seen: list[str] = []
    node = bus(replace(settings, nats_url=f"nats://127.0.0.1:{relay.port}"), "node-b")
    desk = node.consume("desk", _recorder(seen))
    node.start()
    await until(lambda: publisher.connected and node.connected, 10)
    flow = Flow(publisher)
    flow.start()
    await until(lambda: len(seen) >= 50, 20)

    relay.frozen = True
    await until(lambda: _in_flight(nats_js, settings, desk.name, IN_FLIGHT), 20)
    # `kill -9`: the socket closes, nothing more is acknowledged (the dead link delivered
    # nothing to acknowledge) nor drained; the process never comes back.
    assert node._task is not None and node._nc is not None
    node._task.cancel()
    await asyncio.gather(node._task, return_exceptions=True)
    await node._nc.close()
    await relay.close()
    handled_before = len(seen)

    restarted = bus(settings, "node-b")  # straight to NATS, the same durable consumer
    again = restarted.consume("desk", _recorder(seen))
    restarted.start()
    await until(lambda: restarted.connected, 10)
    await until(lambda: len(seen) >= handled_before + 100, 30)
    total = await flow.stop()

    last = (await nats_js.stream_info(settings.stream)).state.last_seq
    await until(lambda: _all_acknowledged(nats_js, settings, again.name, last), 60)
    assert seen == [f"call-{i}" for i in range(total)], _missing(seen, total)
    assert desk.handled + again.handled == total
    assert again.filled >= IN_FLIGHT and again.gone == 0 and again.unfilled == 0
    assert again.late == again.filled
    await restarted.close()
    await publisher.close()


async def test_what_cannot_be_filled_is_skipped_and_counted(
    bus_settings: BusSettings,  # noqa: F811
    nats_js: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gap longer than MAX_FILL: its oldest events are skipped (`unfilled`); one removed from
    the stream meanwhile is skipped (`gone`); the rest are handled in order, nothing twice."""
    monkeypatch.setattr(bus_jetstream, "MAX_FILL", 10)
    relay = DeadLinkRelay()
    await relay.start()
    settings = replace(bus_settings, ack_wait_s=2.0, timeout_s=1.0)
    publisher = bus(settings, "node-a")
    publisher.start()
    seen: list[str] = []
    node = bus(replace(settings, nats_url=f"nats://127.0.0.1:{relay.port}"), "node-b")
    desk = node.consume("desk", _recorder(seen))
    node.start()
    await until(lambda: publisher.connected and node.connected, 10)
    flow = Flow(publisher)
    flow.start()
    await until(lambda: len(seen) >= 50, 20)

    relay.frozen = True
    await until(lambda: _in_flight(nats_js, settings, desk.name, IN_FLIGHT), 20)
    paused = await flow.stop()  # the gap is fixed now: what is in flight stays so
    await until(lambda: _in_flight(nats_js, settings, desk.name, paused - len(seen)), 20)
    info = await nats_js.consumer_info(settings.stream, desk.name)
    floor, delivered = info.ack_floor.stream_seq, info.delivered.stream_seq
    assert floor == len(seen) and delivered == paused  # the gap: floor + 1 .. delivered
    assert await nats_js.delete_msg(settings.stream, delivered - 1)
    await relay.cut()
    await until(lambda: node._nc is not None and node._nc.stats["reconnects"] >= 1 and node.connected, 20)
    flow.start()
    await until(lambda: len(seen) >= paused + 50, 30)
    total = await flow.stop()

    last = (await nats_js.stream_info(settings.stream)).state.last_seq
    await until(lambda: _all_acknowledged(nats_js, settings, desk.name, last), 60)
    gap = delivered - floor
    skipped = {f"call-{seq - 1}" for seq in range(floor + 1, delivered - 10 + 1)}
    skipped.add(f"call-{delivered - 2}")  # sequence delivered - 1, deleted
    assert seen == [f"call-{i}" for i in range(total) if f"call-{i}" not in skipped]
    assert desk.unfilled == gap - 10 and desk.gone == 1 and desk.filled == 9
    assert desk.late >= desk.unfilled + desk.filled  # came again later: skipped
    await node.close()
    await publisher.close()
    await relay.close()


def _missing(seen: list[str], total: int) -> str:
    expected = [f"call-{i}" for i in range(total)]
    missing = sorted(set(expected) - set(seen), key=lambda s: int(s.split("-")[1]))
    twice = len(seen) - len(set(seen))
    out_of_order = seen != sorted(seen, key=lambda s: int(s.split("-")[1]))
    return f"{len(missing)} missing (first {missing[:5]}), {twice} twice, out of order: {out_of_order}"
