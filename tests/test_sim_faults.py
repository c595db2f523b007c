"""Fault injection of the simulated PBX, each against the real `AmiLink`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from cti.ami.actions import ActionTimeout
from cti.ami.link import AmiLink
from cti.ami.message import Message
from cti.config import AsteriskServer, Secret
from cti.sim.config import lab_config
from cti.sim.pbx import MALFORMED, SimulatedPbx

KEEPALIVE = 0.3


def server_for(pbx: SimulatedPbx, **overrides: object) -> AsteriskServer:
    settings: dict[str, object] = {
        "name": "sim",
        "host": "127.0.0.1",
        "port": pbx.port,
        "username": "cti",
        "secret": Secret("ctisecret"),
        "keepalive_s": 5.0,
        "action_timeout_s": 2.0,
        "connect_timeout_s": 1.0,
        "reconnect_cap_s": 0.2,
    }
    return AsteriskServer(**(settings | overrides))  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.disconnects: list[str] = []

    def on_message(self, message: Message) -> None:
        self.messages.append(message)

    def on_disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)

    def named(self, event: str) -> list[Message]:
        return [m for m in self.messages if m.event == event]


@asynccontextmanager
async def linked(pbx: SimulatedPbx, recorder: Recorder, **overrides: object) -> AsyncIterator[AmiLink]:
    link = AmiLink(
        server_for(pbx, **overrides),
        recorder.on_message,
        on_disconnected=recorder.on_disconnected,
        rng=random.Random(1),
    )
    task = asyncio.create_task(link.run())
    try:
        await eventually(lambda: link.connected)
        yield link
    finally:
        await link.close()
        await task


async def eventually(predicate: Callable[[], object], within: float = 5.0) -> None:
    # Polling: the states waited on (counters, flags) have no event to wait for.
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def pbx() -> AsyncIterator[SimulatedPbx]:
    async with SimulatedPbx(lab_config(speed=None)) as sim:
        yield sim


async def test_drop_the_link_reconnects_and_works(pbx: SimulatedPbx) -> None:
    recorder = Recorder()
    async with linked(pbx, recorder) as link:
        pbx.faults.drop()
        await eventually(lambda: recorder.disconnects)
        await eventually(lambda: link.connected and pbx.manager.logins == 2)
        assert link.reconnects == 1
        assert (await link.send("Ping"))["Ping"] == "Pong"


async def test_a_silent_pbx_is_detected_by_the_keepalive(pbx: SimulatedPbx) -> None:
    recorder = Recorder()
    async with linked(pbx, recorder, keepalive_s=KEEPALIVE) as link:
        pbx.faults.go_silent()
        await eventually(lambda: recorder.disconnects, within=10 * KEEPALIVE + 5)
        assert "Ping" in recorder.disconnects[0]
        # The new connection is not silent: the link is back.
        await eventually(lambda: link.connected and pbx.manager.logins == 2)
        assert (await link.send("Ping"))["Ping"] == "Pong"


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_frames_are_skipped_and_events_keep_flowing(pbx: SimulatedPbx, kind: str) -> None:
    recorder = Recorder()
    async with linked(pbx, recorder) as link:
        pbx.faults.send_malformed(kind)
        pbx.inbound_call("+33612345678", "Jean Dupont", digits="3", stay_s=10)
        await pbx.advance(5)
        await eventually(lambda: recorder.named("Hangup"))
        assert link.connected and link.reconnects == 0
        if kind != "empty_lines":
            assert link.malformed >= 1
        assert len(recorder.named("Newchannel")) == 2


async def test_slow_reads_make_actions_time_out_until_the_pbx_reads_again(pbx: SimulatedPbx) -> None:
    recorder = Recorder()
    async with linked(pbx, recorder) as link:
        pbx.faults.slow_reads(3.0)
        with pytest.raises(ActionTimeout):
            await link.send("Ping", timeout=0.3)
        pbx.faults.slow_reads(0.0)
        # The late Ping is answered in the end, too late for its caller (the link hands the
        # orphan answer to the event callback); then actions are answered in time again.
        await eventually(lambda: any(m.get("Ping") == "Pong" for m in recorder.messages))
        assert (await link.send("Ping"))["Ping"] == "Pong"
        assert link.connected


async def test_frames_cut_anywhere_arrive_whole(pbx: SimulatedPbx) -> None:
    recorder = Recorder()
    async with linked(pbx, recorder) as link:
        pbx.faults.trickle(7, 0.0)
        pbx.inbound_call("+33612345678", "Zoë Müller", digits="3", stay_s=10)
        await pbx.advance(5)
        await eventually(lambda: len(recorder.named("Hangup")) == 2)
        assert link.malformed == 0
        names = {m.get("CallerIDName") for m in recorder.named("NewCallerid")}
        assert "Zoë Müller" in names
