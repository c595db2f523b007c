"""The in-process event bus: a slow or failing consumer never blocks publishing or the others."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cti.bus import EventBus
from cti.calls import events as ev


def _event(i: int) -> ev.Event:
    return ev.LinkStateChanged("pbx", float(i), True, str(i))


async def test_slow_subscriber_drops_its_oldest_and_never_blocks() -> None:
    bus = EventBus()
    slow = bus.subscribe("slow", maxsize=10)
    fast_seen: list[float] = []
    bus.consume("fast", lambda e: fast_seen.append(e.at))
    for i in range(100):
        bus.publish(_event(i))  # synchronous: must return at once even though "slow" never reads
    await bus.drain(1.0)
    assert slow.dropped == 90 and slow.queue.qsize() == 10
    assert slow.queue.get_nowait().at == 90.0  # the newest ten are kept
    assert fast_seen == [float(i) for i in range(100)]
    await bus.close()


async def test_raising_handler_is_isolated() -> None:
    bus = EventBus()
    seen: list[float] = []

    def handler(e: ev.Event) -> None:
        if e.at == 1.0:
            raise RuntimeError("boom")
        seen.append(e.at)

    task = bus.consume("h", handler)
    for i in range(3):
        bus.publish(_event(i))
    await bus.drain(1.0)
    assert seen == [0.0, 2.0] and not task.done()
    await bus.close()
    assert task.cancelled()


async def test_async_handlers_and_kind_filter() -> None:
    bus = EventBus()
    got: list[str] = []

    async def handler(e: ev.Event) -> None:
        await asyncio.sleep(0)
        got.append(e.kind)

    bus.consume("ended-only", handler, kinds=frozenset({ev.CallStarted}))
    bus.publish(_event(1))
    bus.publish(ev.CallStarted("pbx", 1.0, "1.1", "inbound", None, None))
    await bus.drain(1.0)
    assert got == ["call_started"]
    await bus.close()


async def test_taps_run_inline_and_a_raising_tap_is_isolated() -> None:
    bus = EventBus()
    seen: list[float] = []
    bus.tap("boom", lambda e: (_ for _ in ()).throw(RuntimeError("boom")))
    bus.tap("pops", lambda e: seen.append(e.at))
    bus.publish(_event(1))
    assert seen == [1.0]  # delivered before publish returned, despite the raising tap before it


async def test_a_consumer_with_a_backlog_lets_the_loop_run_between_slices() -> None:
    """A burst queued for a slow consumer must not hold the loop until it is all handled: the
    screen pops share that loop."""
    bus = EventBus()
    handled: list[float] = []

    def slow(e: ev.Event) -> None:
        until = time.perf_counter() + 0.0002  # 0.2 ms of work per event
        while time.perf_counter() < until:
            pass
        handled.append(e.at)

    bus.consume("slow", slow)
    for i in range(500):
        bus.publish(_event(i))
    seen_while_busy: list[int] = []

    async def other() -> None:
        while len(handled) < 500:
            seen_while_busy.append(len(handled))
            await asyncio.sleep(0)

    await asyncio.gather(other(), bus.drain(5.0))
    # The other task ran many times while the backlog was being worked through, each time
    # after a slice of events, not only once the queue was empty.
    turns = [n for n in seen_while_busy if 0 < n < 500]
    assert len(turns) >= 10
    assert handled == [float(i) for i in range(500)]
    await bus.close()


def test_config_check_says_what_nodes_sharing_desktops_need() -> None:
    from cti.config import BusSettings, DatabaseSettings, Secret, Settings, WebSettings
    from cti.config_commands import review

    alone = Settings()
    assert not [f for f in review(alone) if f.setting.startswith("bus.")]
    shared = Settings(bus=BusSettings(nats_url="nats://127.0.0.1:4222"))
    said = [(f.setting, f.text) for f in review(shared) if f.level == "warning"]
    assert any(s == "web.secret" and "each node refuses the sessions" in t for s, t in said)
    assert any(s == "database.url" and "nodes share no users" in t for s, t in said)
    assert any(s == "bus.node" for s, _ in said)
    ready = Settings(
        bus=BusSettings(nats_url="nats://127.0.0.1:4222", node="node-a"),
        web=WebSettings(secret=Secret("s3cret")),
        database=DatabaseSettings(url="postgresql://cti@db/cti"),
    )
    assert not {"web.secret", "database.url", "bus.node"} & {f.setting for f in review(ready)}


async def test_a_daemon_whose_nats_is_away_goes_on_serving_its_own_desktops(tmp_path: Path) -> None:
    """`[bus] nats_url` naming a port nobody listens on: the daemon starts, tracks, stores and
    pops its own desktop as without the bus; its events wait in the bounded buffer, counted."""
    import socket
    from dataclasses import replace

    import aiohttp

    from cti.app import Daemon
    from cti.config import BusSettings
    from fakeami import CAPTURES, FakeAmi
    from test_daemon import calls_in, event_bytes, settings_for, until

    if not CAPTURES.is_dir():
        pytest.skip("tests/captures/lab is missing")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        bus = BusSettings(nats_url=f"nats://127.0.0.1:{closed}", node="alone", timeout_s=0.2, buffer=10)
        daemon = Daemon(replace(settings_for(fake, tmp_path / "cti.db"), bus=bus))
        await daemon.start()
        try:
            password = "correct horse battery"
            await daemon.users.add("alice", password, "agent", "Alice", interfaces=["Local/agent1@agents/n"])
            await until(lambda: fake.actions("QueueStatus"))
            async with aiohttp.ClientSession() as session:
                body = {"username": "alice", "password": password}
                async with session.post(f"{daemon.web_url}/api/login", json=body) as r:
                    token = (await r.json())["token"]
                ws = await session.ws_connect(
                    f"{daemon.web_url}/ws", headers={"Authorization": f"Bearer {token}"}
                )
                await fake.push(event_bytes("inbound_answered"))
                while (await asyncio.wait_for(ws.receive_json(), 10))["type"] != "pop":
                    pass
                await ws.close()
            await until(lambda: calls_in(tmp_path / "cti.db"))
            jetstream = daemon.jetstream
            assert jetstream is not None and not jetstream.connected
            # Every event it published waits for NATS, but the oldest beyond the bound (counted).
            assert jetstream.pending == 10 and jetstream.dropped == daemon.bus.published - 10 > 0
            assert jetstream.published == 0
        finally:
            await daemon.shutdown()  # does not wait for NATS
