"""The simulated PBX speaks AMI as Asterisk 22 does: framing, login, lists, errors, Originate."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cti.ami.actions import format_action
from cti.ami.message import Message
from cti.ami.parser import AmiParser
from cti.app import Daemon
from cti.config import AsteriskServer, DatabaseSettings, Secret, Settings, WebSettings
from cti.db.calls_store import load_calls
from cti.db.engine import create_engine
from cti.sim.config import OutboundMix, TrafficSpec, call_centre_config, lab_config
from cti.sim.pbx import SimulatedPbx


class Client:
    """A bare AMI client: actions out, every message in, in order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.parser = AmiParser()
        self.messages: list[Message] = []
        self._ids = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._writer is not None and self._task is not None
        self._writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        assert self._reader is not None
        while data := await self._reader.read(1 << 16):
            self.messages.extend(self.parser.feed(data))

    @property
    def closed(self) -> bool:
        return self._task is not None and self._task.done()

    async def send(self, action: str, **headers: Any) -> str:
        assert self._writer is not None
        action_id = f"t-{next(self._ids)}"
        self._writer.write(format_action(action, headers, action_id))
        await self._writer.drain()
        return action_id

    async def ask(self, action: str, **headers: Any) -> Message:
        action_id = await self.send(action, **headers)
        return await self.response(action_id)

    async def response(self, action_id: str) -> Message:
        await self.wait(lambda: any(m.action_id == action_id and m.response for m in self.messages))
        return next(m for m in self.messages if m.action_id == action_id and m.response)

    async def items(self, action: str, **headers: Any) -> tuple[Message, list[Message]]:
        """A list action: its Response and the events up to the Complete (included)."""
        action_id = await self.send(action, **headers)
        await self.wait(lambda: any(m.action_id == action_id and m.is_list_end for m in self.messages))
        mine = [m for m in self.messages if m.action_id == action_id]
        return mine[0], mine[1:]

    def events(self, name: str) -> list[Message]:
        return [m for m in self.messages if m.event == name]

    async def wait(self, predicate: Any, within: float = 5.0) -> None:
        # Polling: what arrives on the socket has no event of its own.
        async with asyncio.timeout(within):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.005)

    async def login(self, secret: str = "ctisecret") -> Message:
        return await self.ask("Login", Username="cti", Secret=secret)


@pytest.fixture
async def pbx() -> AsyncIterator[SimulatedPbx]:
    async with SimulatedPbx(lab_config(speed=None, start_time=1_800_000_000.0)) as sim:
        yield sim


async def test_banner_login_and_session_actions(pbx: SimulatedPbx) -> None:
    async with Client(pbx.port) as client:
        await client.wait(lambda: client.parser.banner)
        assert client.parser.banner == "Asterisk Call Manager/11.0.0"
        denied = await client.ask("CoreShowChannels")
        assert (denied.response, denied["Message"]) == ("Error", "Permission denied")
        ok = await client.login()
        assert (ok.response, ok["Message"]) == ("Success", "Authentication accepted")
        await client.wait(lambda: client.events("FullyBooted"))
        pong = await client.ask("Ping")
        assert pong["Ping"] == "Pong" and float(pong["Timestamp"]) == pytest.approx(1_800_000_000.0)
        version = await client.ask("Command", Command="core show version")
        assert version.response == "Success" and version["Output"].startswith("Asterisk 22.10.1")
        unknown = await client.ask("NoSuchAction")
        assert (unknown.response, unknown["Message"]) == ("Error", "Invalid/unknown command")
        bye = await client.ask("Logoff")
        assert (bye.response, bye["Message"]) == ("Goodbye", "Thanks for all the fish.")
        await client.wait(lambda: client.closed)


async def test_a_wrong_secret_is_refused_and_the_connection_closed(pbx: SimulatedPbx) -> None:
    async with Client(pbx.port) as client:
        refused = await client.login(secret="wrong")
        assert (refused.response, refused["Message"]) == ("Error", "Authentication failed")
        await client.wait(lambda: client.closed)
    assert pbx.manager.failed_logins == 1


async def test_lists_reflect_a_call_in_progress(pbx: SimulatedPbx) -> None:
    async with Client(pbx.port) as client:
        await client.login()
        # billing: Agent2 never answers, so the caller is still waiting after 4 s.
        linkedid = pbx.inbound_call("+212661234567", "Fatima Zahra", digits="4", stay_s=30)
        await pbx.advance(4)
        start, channels = await client.items("CoreShowChannels")
        assert (start["EventList"], start["Message"]) == ("start", "Channels will follow")
        *items, done = channels
        assert done.event == "CoreShowChannelsComplete" and done["ListItems"] == str(len(items)) == "4"
        assert {m["Linkedid"] for m in items} == {linkedid}
        assert {m["Application"] for m in items} == {"Wait", "Queue", "AppQueue"}
        start, status = await client.items("QueueStatus", Queue="billing")
        params, member, entry, complete = status
        assert (params.event, params["Calls"], params["Strategy"]) == ("QueueParams", "1", "ringall")
        assert {"Completed", "Abandoned", "ServicelevelPerf", "ServicelevelPerf2"} <= set(params)
        assert (member.event, member["Name"]) == ("QueueMember", "Agent2")
        assert (entry.event, entry["Position"], entry["Wait"]) == ("QueueEntry", "1", "2")
        assert complete["ListItems"] == "3"
        _, summary = await client.items("QueueSummary", Queue="billing")
        assert (summary[0]["Callers"], summary[0]["LongestHoldTime"]) == ("1", "2")
        _, status_items = await client.items("Status")
        assert status_items[-1]["Items"] == "4"
        _, unknown = await client.items("QueueStatus", Queue="nosuchqueue")
        assert [m.event for m in unknown] == ["QueueStatusComplete"]
        await pbx.advance(40)
        _, after = await client.items("QueueStatus", Queue="billing")
        assert (after[0]["Calls"], after[0]["Abandoned"]) == ("0", "1")
    assert pbx.truth.calls[linkedid].outcome == "abandoned"


async def test_member_actions_and_their_errors(pbx: SimulatedPbx) -> None:
    agent5 = "Local/agent5@agents/n"
    async with Client(pbx.port) as client:
        await client.login()
        added = await client.ask("QueueAdd", Queue="support", Interface=agent5, MemberName="Agent5")
        assert added["Message"] == "Added interface to queue"
        again = await client.ask("QueueAdd", Queue="support", Interface=agent5, MemberName="Agent5")
        assert (again.response, again["Message"]) == ("Error", "Unable to add interface: Already there")
        paused = await client.ask("QueuePause", Interface=agent5, Paused="true", Reason="lunch")
        assert paused["Message"] == "Interface paused successfully"
        await client.wait(lambda: client.events("QueueMemberPause"))
        assert client.events("QueueMemberPause")[0]["PausedReason"] == "lunch"
        missing = await client.ask("QueuePause", Interface="Local/nobody@agents/n", Paused="true")
        assert (missing.response, missing["Message"]) == ("Error", "Interface not found")
        removed = await client.ask("QueueRemove", Queue="support", Interface=agent5)
        assert removed["Message"] == "Removed interface from queue"
        gone = await client.ask("QueueRemove", Queue="support", Interface=agent5)
        assert (gone.response, gone["Message"]) == ("Error", "Unable to remove interface: Not there")
    assert [m.event for m in client.messages if m.event and m.event.startswith("QueueMember")] == [
        "QueueMemberAdded",
        "QueueMemberPause",
        "QueueMemberRemoved",
    ]


async def test_a_paused_agent_is_not_rung(pbx: SimulatedPbx) -> None:
    async with Client(pbx.port) as client:
        await client.login()
        await client.ask("QueuePause", Interface="Local/agent1@agents/n", Paused="true", Reason="break")
        linkedid = pbx.inbound_call(digits="1", stay_s=30, talk_s=3)
        await pbx.advance(15)
        await client.wait(lambda: client.events("AgentComplete"))
    assert {m["MemberName"] for m in client.events("AgentCalled")} == {"Agent4"}
    assert pbx.truth.calls[linkedid].agent == "Agent4"


@pytest.mark.parametrize(
    ("number", "reason", "status"),
    [
        ("0600000001", "4", "Success"),
        ("0600000002", "5", "Failure"),
        ("0600000003", "3", "Failure"),
        ("0600000004", "8", "Failure"),
    ],
)
async def test_async_originate_outcomes_follow_the_lab_numbers(
    pbx: SimulatedPbx, number: str, reason: str, status: str
) -> None:
    async with Client(pbx.port) as client:
        await client.login()
        queued = await client.ask(
            "Originate",
            Channel=f"Local/{number}@fake-pstn",
            Context="dialer-connect",
            Exten="s",
            Priority=1,
            Timeout=8000,
            Async="true",
            Variable={"CAMPAIGN": "c1", "CONTACT": "7"},
        )
        assert queued["Message"] == "Originate successfully queued"
        await pbx.advance(10)
        await client.wait(lambda: client.events("OriginateResponse"))
    [result] = client.events("OriginateResponse")
    assert (result["Response"], result["Reason"], result.action_id) == (status, reason, queued.action_id)
    if status == "Failure":
        # As in outbound_busy.ami: the dial string, not the channel, and no uniqueid.
        assert (result["Channel"], result["Uniqueid"]) == (f"Local/{number}@fake-pstn", "<unknown>")
    else:
        assert result["Channel"].endswith(";1")
        connected = [m for m in client.events("UserEvent") if m["UserEvent"] == "DialerConnected"]
        assert (connected[0]["Campaign"], connected[0]["Contact"]) == ("c1", "7")


@pytest.mark.parametrize(("outcome", "reason"), [("failed", "0"), ("rejected", "1")])
async def test_the_outbound_mix_gives_every_reason_code(outcome: str, reason: str) -> None:
    config = lab_config(
        speed=None,
        outbound_mix=OutboundMix(
            **{n: 0.0 for n in ("answered", "busy", "no_answer", "congestion", "failed")} | {outcome: 1.0}
        ),
    )
    async with SimulatedPbx(config) as pbx, Client(pbx.port) as client:
        await client.login()
        await client.ask(
            "Originate",
            Channel="Local/0611111111@fake-pstn",
            Context="dialer-connect",
            Exten="s",
            Async="true",
        )
        await pbx.advance(10)
        await client.wait(lambda: client.events("OriginateResponse"))
    assert client.events("OriginateResponse")[0]["Reason"] == reason


async def test_a_synchronous_originate_answers_when_the_call_does(pbx: SimulatedPbx) -> None:
    async with Client(pbx.port) as client:
        await client.login()
        failing = await client.send("Originate", Channel="Local/s@nosuchcontext", Context="caller", Exten="s")
        busy = await client.send(
            "Originate", Channel="Local/0600000002@fake-pstn", Context="dialer-connect", Exten="s"
        )
        answered = await client.send(
            "Originate", Channel="Local/0600000001@fake-pstn", Context="dialer-connect", Exten="s"
        )
        assert (await client.response(failing))["Message"] == "Originate failed"
        await pbx.advance(3)
        assert (await client.response(busy)).response == "Error"
        assert (await client.response(answered))["Message"] == "Originate successfully queued"
        # A synchronous Originate has no OriginateResponse event.
        assert not client.events("OriginateResponse")
        await pbx.advance(30)


async def test_event_timestamps_follow_simulated_time_at_any_speed() -> None:
    config = lab_config(speed=200.0, start_time=1_800_000_000.0)
    async with SimulatedPbx(config) as pbx, Client(pbx.port) as client:
        await client.login()
        pbx.inbound_call(digits="1", stay_s=30, talk_s=3)
        await client.wait(lambda: client.events("AgentComplete"), within=10)
    join = float(client.events("QueueCallerJoin")[0]["Timestamp"])
    connect = float(client.events("AgentConnect")[0]["Timestamp"])
    complete = float(client.events("AgentComplete")[0]["Timestamp"])
    # Agent1 answers 2 s after it starts ringing and talks TALK (3 s) after Answer's half second.
    assert connect - join == pytest.approx(2.0, abs=0.01)
    assert complete - connect == pytest.approx(3.5, abs=0.01)


async def test_the_daemon_resyncs_a_call_already_in_progress(tmp_path: Path) -> None:
    db = tmp_path / "cti.db"
    async with SimulatedPbx(lab_config(speed=None)) as pbx:
        linkedid = pbx.inbound_call("+33612345678", "Jean Dupont", digits="2", stay_s=40, talk_s=4)
        await pbx.advance(3)  # in queue sales, Agent2 ringing
        server = AsteriskServer(
            name="sim", host="127.0.0.1", port=pbx.port, secret=Secret("ctisecret"), reconnect_cap_s=0.2
        )
        settings = Settings(
            asterisk=(server,),
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{db}", flush_interval_s=0.05),
            web=WebSettings(port=0),
        )
        daemon = Daemon(settings)
        await daemon.start()
        try:
            await _until(lambda: daemon.trackings[0].resyncs)
            assert linkedid in daemon.trackings[0].tracker.calls  # adopted from CoreShowChannels
            await pbx.advance(30)
            rows: list[dict[str, Any]] = []

            async def stored() -> bool:
                rows[:] = await _calls(db)
                return bool(rows)

            await _until(stored)
        finally:
            await daemon.shutdown()
    [row] = rows
    assert (row["linkedid"], row["outcome"], row["agent"]) == (linkedid, "answered", "Agent3")
    assert pbx.truth.calls[linkedid].agent == "Agent3"


async def _until(predicate: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while True:
            value = predicate()
            if await value if asyncio.iscoroutine(value) else value:
                return
            await asyncio.sleep(0.02)


async def _calls(db: Path) -> list[dict[str, Any]]:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        return [c for c in await load_calls(engine) if c["closed_by"] != "shutdown"]
    finally:
        await engine.dispose()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_cti_sim_serves_traffic_and_stops_on_sigterm(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cti.cli",
        "sim",
        "--port",
        "0",
        "--speed",
        "50",
        "--calls-per-minute",
        "60",
        "--seed",
        "3",
        "--truth",
        str(truth),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        async with Client(port) as client:
            await client.login()
            await client.wait(lambda: client.events("QueueCallerJoin"), within=20)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    doc = json.loads(truth.read_text())
    assert doc["calls"] and doc["events"] > 0
    assert all(call["direction"] == "inbound" for call in doc["calls"])


async def test_same_seed_same_calls_whatever_the_start() -> None:
    async def day(start: float) -> list[tuple[str | None, str | None, str | None]]:
        traffic = TrafficSpec(calls_per_minute=30, outbound_per_minute=6)
        config = call_centre_config(4, speed=None, seed=5, start_time=start, traffic=traffic)
        async with SimulatedPbx(config) as pbx:
            pbx.start_traffic(120)
            await pbx.advance(120)
            await pbx.idle()
            return [(c.outcome, c.queue, c.agent) for c in pbx.truth.calls.values()]

    first = await day(1_800_000_000.0)
    assert first and first == await day(1_800_086_400.0)
