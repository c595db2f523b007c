"""The AMI link against a fake Asterisk on 127.0.0.1: every regression through real sockets."""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from cti.ami.actions import ActionError, ActionTimeout, LinkDown
from cti.ami.link import BACKOFF_BASE_S, AmiLink, backoff_delay
from cti.ami.message import Message
from cti.ami.parser import AmiParser
from cti.config import AsteriskServer, Secret
from fakeami import BANNER, CAPTURES, FakeAmi, capture_list, frame

KEEPALIVE = 0.5
# Scheduling slack on a loaded CI machine, yet less than one more keepalive interval: a link that
# waited for a third interval would fail.
MARGIN = 0.3
SECRET = "Tr0ub4dor&3-not-in-logs"
needs_captures = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    # Other tests configure structlog (level filters, renderers); start from the defaults.
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    async with FakeAmi(secret=SECRET) as server:
        yield server


def server_for(fake: FakeAmi, **overrides: Any) -> AsteriskServer:
    settings: dict[str, Any] = {
        "name": "pbx-test",
        "host": "127.0.0.1",
        "port": fake.port,
        "username": fake.username,
        "secret": Secret(SECRET),
        "keepalive_s": 5.0,
        "action_timeout_s": 2.0,
        "connect_timeout_s": 1.0,
    }
    return AsteriskServer(**(settings | overrides))


class Recorder:
    """The daemon's side of the link: what it was given, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.disconnects: list[str] = []
        self.disconnected_at: list[float] = []

    def on_message(self, message: Message) -> None:
        self.messages.append(message)

    def on_disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)
        self.disconnected_at.append(asyncio.get_running_loop().time())

    def named(self, event: str) -> list[Message]:
        return [m for m in self.messages if m.event == event]


@asynccontextmanager
async def running(link: AmiLink) -> AsyncIterator[AmiLink]:
    task = asyncio.create_task(link.run())
    try:
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


async def connected_link(link: AmiLink, fake: FakeAmi, logins: int = 1) -> None:
    await eventually(lambda: link.connected and fake.logins == logins)


# 1
async def test_an_exception_in_the_event_callback_keeps_the_link_up(fake: FakeAmi) -> None:
    seen: list[Message] = []

    def on_message(message: Message) -> None:
        if message.event == "Newchannel":
            raise RuntimeError("tracker bug")
        seen.append(message)

    link = AmiLink(server_for(fake), on_message)
    with capture_logs() as logs:
        async with running(link):
            await connected_link(link, fake)
            await fake.push(frame(Event="Newchannel", Uniqueid="1.1"))
            await fake.push(frame(Event="Newchannel", Uniqueid="1.2"))
            await fake.push(frame(Event="Hangup", Uniqueid="1.1"))
            await eventually(lambda: any(m.event == "Hangup" for m in seen))
            assert link.connected
            assert link.reconnects == 0
            assert len(fake.clients) == 1
            assert link.callback_errors == 2
    failed = [e for e in logs if e["event"] == "callback failed"]
    assert [(e["log_level"], e["ami_event"]) for e in failed] == [("error", "Newchannel")]
    assert isinstance(failed[0]["exc_info"], RuntimeError)
    # The same failure again is not repeated at error level.
    assert [e["log_level"] for e in logs if e["event"] == "callback failed again"] == ["debug"]


# 2
async def test_utf8_split_between_two_tcp_writes_arrives_intact(
    fake: FakeAmi, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[bytes] = []
    feed = AmiLink._feed
    monkeypatch.setattr(
        AmiLink, "_feed", lambda self, conn, data: (reads.append(data), feed(self, conn, data))
    )
    recorder = Recorder()
    link = AmiLink(server_for(fake), recorder.on_message)
    async with running(link):
        await connected_link(link, fake)
        data = frame(Event="NewCallerid", Channel="PJSIP/100-00000001", CallerIDName="Zoë")
        cut = data.index("ë".encode()) + 1  # between the two bytes of ë
        await fake.push(data, split_at=[cut])
        await eventually(lambda: recorder.named("NewCallerid"))
    assert recorder.named("NewCallerid")[0]["CallerIDName"] == "Zoë"
    # The case under test really happened: the link read the two halves separately.
    assert data[:cut] in reads and data[cut:] in reads


async def test_a_failure_handling_received_bytes_drops_the_connection_and_reconnects(
    fake: FakeAmi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bytes are handled inside the loop's read callback: a bug there (the callbacks are
    # isolated, the parser is not) must end this session cleanly, not leave a link that reads
    # nothing more.
    feed = AmiLink._feed

    def broken_once(self: AmiLink, conn: Any, data: bytes) -> None:
        if b"Explode" in data:
            raise ValueError("a bug in the parser")
        feed(self, conn, data)

    monkeypatch.setattr(AmiLink, "_feed", broken_once)
    recorder = Recorder()
    link = AmiLink(server_for(fake), recorder.on_message, on_disconnected=recorder.on_disconnected)
    with capture_logs() as logs:
        async with running(link):
            await connected_link(link, fake)
            await fake.push(frame(Event="Explode"))
            await eventually(lambda: recorder.disconnects)
            assert recorder.disconnects == ["reader failed"]
            await connected_link(link, fake, logins=2)
            await fake.push(frame(Event="Newchannel", Channel="PJSIP/100-00000002"))
            await eventually(lambda: recorder.named("Newchannel"))
    assert [e["log_level"] for e in logs if e["event"] == "AMI reader failed"] == ["error"]


# 3
async def test_a_silent_peer_is_detected_and_the_link_reconnects(fake: FakeAmi) -> None:
    recorder = Recorder()
    link = AmiLink(
        server_for(fake, keepalive_s=KEEPALIVE),
        recorder.on_message,
        on_disconnected=recorder.on_disconnected,
        rng=random.Random(3),
    )
    loop = asyncio.get_running_loop()
    async with running(link):
        await connected_link(link, fake)
        silent_since = loop.time()
        fake.go_silent()
        await eventually(lambda: recorder.disconnects, within=2 * KEEPALIVE + 5)
        assert recorder.disconnected_at[0] - silent_since <= 2 * KEEPALIVE + MARGIN
        assert "Ping" in recorder.disconnects[0]
        # Detected on the first unanswered Ping, not a later one.
        assert len(fake.actions("Ping")) == 1
        await connected_link(link, fake, logins=2)
        assert loop.time() - silent_since <= 2 * KEEPALIVE + BACKOFF_BASE_S + MARGIN
        assert link.reconnects == 1
        assert (await link.send("Ping"))["Ping"] == "Pong"


# 4
@needs_captures
async def test_a_drop_in_the_middle_of_a_list_fails_fast_then_works_after_reconnect(fake: FakeAmi) -> None:
    recorder = Recorder()
    fake.lists["queuestatus"] = list(capture_list("reconnect_part2.ami", "QueueStatus"))
    link = AmiLink(server_for(fake, action_timeout_s=30.0), recorder.on_message, rng=random.Random(4))
    async with running(link):
        await connected_link(link, fake)
        fake.drop_mid_list = 2
        with pytest.raises(LinkDown):
            async with asyncio.timeout(5):  # far below the action timeout: a hang would show
                await link.send_list("QueueStatus")
        await connected_link(link, fake, logins=2)
        response, items = await link.send_list("QueueStatus")
    assert response.is_list_start
    assert [m.event for m in items] == [m.event for m in capture_list("reconnect_part2.ami", "QueueStatus")]
    assert {"QueueParams", "QueueMember"} <= {m.event for m in items}
    # List items went to the caller only, not to the event callback.
    assert not [
        m for m in recorder.messages if m.event in ("QueueParams", "QueueMember", "QueueStatusComplete")
    ]


async def test_on_connected_can_resync_while_events_keep_flowing(fake: FakeAmi) -> None:
    recorder = Recorder()
    order: list[str] = []
    fake.lists["coreshowchannels"] = [
        {"Event": "CoreShowChannel", "Channel": "PJSIP/100-1", "Uniqueid": "1.1"},
        frame(Event="Newchannel", Channel="PJSIP/101-2", Uniqueid="1.2"),  # interleaved, no ActionID
        {"Event": "CoreShowChannel", "Channel": "PJSIP/102-3", "Uniqueid": "1.3"},
    ]
    snapshots: list[list[Message]] = []

    def on_message(message: Message) -> None:
        recorder.on_message(message)
        order.append(message.event or "")

    async def on_connected(link: AmiLink) -> None:
        _, channels = await link.send_list("CoreShowChannels")
        snapshots.append(channels)
        order.append("resynchronised")

    link = AmiLink(server_for(fake), on_message, on_connected)
    async with running(link):
        await eventually(lambda: snapshots)
    assert [m["Uniqueid"] for m in snapshots[0]] == ["1.1", "1.3"]
    assert order.index("Newchannel") < order.index("resynchronised")
    assert fake.actions("Login")[0]["Events"] == "on"
    assert fake.actions("Logoff"), "close() logs off"


async def test_list_answers_that_are_errors_or_not_lists(fake: FakeAmi) -> None:
    fake.errors["queuesummary"] = "Permission denied"
    link = AmiLink(server_for(fake), lambda m: None)
    with pytest.raises(LinkDown):
        await link.send_list("QueueStatus")  # not running yet
    async with running(link):
        await connected_link(link, fake)
        with pytest.raises(ActionError, match="Permission denied"):
            await link.send_list("QueueSummary")
        response, items = await link.send_list("Ping")  # Success without EventList
        assert (response["Ping"], items) == ("Pong", [])


# 5
async def test_async_callbacks_are_referenced_logged_and_cancelled_on_close(fake: FakeAmi) -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))

    async def on_message(message: Message) -> None:
        if message.event == "AgentConnect":
            await release.wait()
            raise ValueError("late failure")

    link = AmiLink(server_for(fake), on_message)
    try:
        with capture_logs() as logs:
            async with running(link):
                await connected_link(link, fake)
                await eventually(lambda: link.pending_callbacks == 0)  # FullyBooted's is done
                await fake.push(frame(Event="AgentConnect", Uniqueid="1.1"))
                await eventually(lambda: link.pending_callbacks == 1)
                await asyncio.sleep(0.05)
                assert link.pending_callbacks == 1  # held while pending, not garbage
                release.set()
                await eventually(lambda: link.pending_callbacks == 0)
                release.clear()
                await fake.push(frame(Event="AgentConnect", Uniqueid="1.2"))
                await eventually(lambda: link.pending_callbacks == 1)
            assert link.pending_callbacks == 0  # close() cancelled and awaited the leftover
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous_handler)
    failed = [e for e in logs if e["event"] == "callback failed"]
    assert [(e["ami_event"], type(e["exc_info"])) for e in failed] == [("AgentConnect", ValueError)]
    assert loop_errors == []


# 6
async def test_login_failure_is_logged_without_the_secret_and_retried() -> None:
    async with FakeAmi(secret="the-right-one") as fake:
        link = AmiLink(server_for(fake), lambda m: None, rng=random.Random(6))
        with capture_logs() as logs:
            async with running(link):
                await eventually(lambda: fake.failed_logins >= 2, within=10)
                assert not link.connected
                fake.secret = SECRET  # the PBX now accepts our credentials
                await eventually(lambda: link.connected, within=10)
                fake.drop()
                await connected_link(link, fake, logins=2)
    refused = [e for e in logs if e["event"] == "AMI login refused"]
    assert refused[0]["log_level"] == "error"
    assert refused[0]["reason"] == "Authentication failed"
    assert refused[0]["username"] == "cti"
    assert SECRET not in repr(logs)
    # Retried with the seeded back-off, attempt after attempt; a good login starts it again at 0.
    rng = random.Random(6)
    delays = [e["delay_s"] for e in logs if e["event"] == "AMI reconnecting"]
    failures = len(delays) - 1
    assert failures >= 2
    attempts = [*range(failures), 0]
    assert delays == [round(backoff_delay(attempt, 30.0, rng), 3) for attempt in attempts]


@needs_captures
async def test_a_real_login_failed_transcript_is_survived(fake: FakeAmi) -> None:
    # The bytes Asterisk sent on a refused login, pushed before any answer of our own.
    transcript = (CAPTURES / "login_failed.ami").read_bytes().removeprefix(BANNER)
    recorder = Recorder()
    link = AmiLink(server_for(fake), recorder.on_message)
    async with running(link):
        await connected_link(link, fake)
        await fake.push(transcript)
        await fake.push(frame(Event="Hangup", Uniqueid="1.1"))
        await eventually(lambda: recorder.named("Hangup"))
        assert link.connected
    # Its ActionID is not ours: delivered as any other message, nothing more.
    assert any(m.get("Message") == "Authentication failed" for m in recorder.messages)


# 7
async def test_action_timeout_and_error_response(fake: FakeAmi) -> None:
    fake.ignored.add("queuepause")
    fake.errors["queueremove"] = "Unable to remove interface: Not there"
    link = AmiLink(server_for(fake), lambda m: None)
    async with running(link):
        await connected_link(link, fake)
        with pytest.raises(ActionTimeout):
            await link.send("QueuePause", Interface="Local/agent1@agents/n", Paused="true", timeout=0.2)
        with pytest.raises(ActionError) as error:
            await link.send("QueueRemove", {"Queue": "support", "Interface": "Local/agent9@agents/n"})
        assert error.value.message == "Unable to remove interface: Not there"
        assert error.value.action == "QueueRemove"
        assert link.connected
        assert (await link.send("Ping"))["Ping"] == "Pong"
    removed = fake.actions("QueueRemove")[0]
    assert (removed["Queue"], removed["Interface"]) == ("support", "Local/agent9@agents/n")


# 8
@needs_captures
async def test_malformed_frames_are_logged_once_and_good_events_still_arrive(fake: FakeAmi) -> None:
    capture = (CAPTURES / "inbound_answered.ami").read_bytes().removeprefix(BANNER)
    frames = capture.split(b"\r\n\r\n")
    middle = len(frames) // 2
    garbage = b"this line is no AMI header\r\n\r\n<<<>>>\r\n\r\n"
    poisoned = b"\r\n\r\n".join(frames[:middle]) + b"\r\n\r\n" + garbage + b"\r\n\r\n".join(frames[middle:])
    expected = AmiParser(expect_banner=False).feed(capture)
    recorder = Recorder()
    link = AmiLink(server_for(fake), recorder.on_message)
    with capture_logs() as logs:
        async with running(link):
            await connected_link(link, fake)
            await eventually(lambda: recorder.named("FullyBooted"))
            recorder.messages.clear()
            await fake.push(poisoned, split_at=[7, len(poisoned) // 3, len(poisoned) // 2 + 1])
            await fake.push(garbage + frame(Event="Hangup", Uniqueid="end"))
            await eventually(lambda: recorder.named("Hangup") and recorder.messages[-1]["Uniqueid"] == "end")
            assert link.connected
    assert recorder.messages[:-1] == expected
    malformed = [e for e in logs if e["event"].startswith("malformed AMI data")]
    warned = [e["reason"] for e in malformed if e["log_level"] == "warning"]
    assert sorted(warned) == ["frame without headers", "line without a header name"]
    assert [e for e in malformed if e["log_level"] == "debug"], "repeats are logged at debug"
    assert link.malformed == len(malformed)


# 9
def test_backoff_grows_exponentially_with_full_jitter_under_the_cap() -> None:
    rng = random.Random(9)
    cap = 30.0
    means = []
    for attempt in range(12):
        ceiling = min(cap, BACKOFF_BASE_S * 2**attempt)
        delays = [backoff_delay(attempt, cap, rng) for _ in range(400)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert len(set(delays)) == len(delays), "jittered"
        assert max(delays) > 0.8 * ceiling
        means.append(sum(delays) / len(delays))
    for before, after in itertools.pairwise(means[:6]):  # ceilings 0.5 … 16 s
        assert 1.6 < after / before < 2.5
    assert 0.4 * cap < means[-1] < 0.6 * cap
    assert backoff_delay(10_000, cap, rng) <= cap


async def test_an_unreachable_server_is_retried_and_close_stops_it() -> None:
    async with FakeAmi() as fake:
        server = server_for(fake)
    link = AmiLink(server, lambda m: None, rng=random.Random(1))  # nobody listens there now
    with capture_logs() as logs:
        async with running(link):
            await eventually(lambda: len([e for e in logs if e["event"] == "AMI connect failed"]) >= 2)
            assert not link.connected


# 10
async def test_the_secret_never_appears_in_log_output(fake: FakeAmi) -> None:
    output = io.StringIO()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=repr),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=output),
    )
    fake.secret = "not-yet"
    fake.ignored.add("originate")

    def on_message(message: Message) -> None:
        raise RuntimeError(f"bad event {message}")

    link = AmiLink(server_for(fake), on_message, rng=random.Random(10))
    async with running(link):
        await eventually(lambda: fake.failed_logins >= 1, within=10)
        fake.secret = SECRET
        await connected_link(link, fake)
        with pytest.raises(ActionTimeout) as timeout:
            await link.send("Originate", Channel="Local/1@fake-pstn", Timeout=30000, timeout=0.1)
        fake.drop()
        await connected_link(link, fake, logins=2)
    text = output.getvalue()
    assert "AMI login refused" in text and "callback failed" in text and "AMI link down" in text
    assert SECRET not in text
    assert SECRET not in str(timeout.value)
    assert SECRET in fake.actions("Login")[-1]["Secret"]  # it was sent, only to Asterisk


async def test_a_resync_refused_while_asterisk_boots_is_retried_until_it_works(fake: FakeAmi) -> None:
    # Right after a PBX restart Asterisk accepts the login before app_queue is loaded (seen on
    # the real-PBX tier): QueueStatus is refused as an unknown command for a moment.
    fake.errors["queuestatus"] = (
        "Invalid/unknown command: QueueStatus. Use Action: ListCommands to show available commands."
    )
    fake.lists["queuestatus"] = [{"Event": "QueueParams", "Queue": "support"}]
    attempts: list[int] = []

    async def on_connected(link: AmiLink) -> None:
        attempts.append(1)
        _, status = await link.send_list("QueueStatus")
        assert status[0]["Queue"] == "support"

    link = AmiLink(server_for(fake), Recorder().on_message, on_connected)
    async with running(link):
        await eventually(lambda: len(attempts) >= 2)
        assert not link.synced and link.resync_failures >= 1
        del fake.errors["queuestatus"]  # app_queue is loaded now
        await eventually(lambda: link.synced, within=10)
    assert fake.logins == 1, "retried on the same connection, not by reconnecting"


# Stream ownership (calls/ownership.py)
async def test_bytes_received_once_the_lease_may_have_lapsed_are_not_read(fake: FakeAmi) -> None:
    recorder = Recorder()
    link = AmiLink(
        server_for(fake, reconnect_cap_s=60.0), recorder.on_message, None, recorder.on_disconnected
    )
    async with running(link):
        await connected_link(link, fake)
        await fake.push(frame(Event="Newchannel", Uniqueid="1.1"))
        await eventually(lambda: recorder.named("Newchannel"))
        link.read_until = 0.0  # the owner was frozen past its lease
        await fake.push(frame(Event="Hangup", Uniqueid="1.1"))
        await eventually(lambda: recorder.disconnects)
        assert recorder.named("Hangup") == []
        assert recorder.disconnects == ["stream lease may have lapsed"]


async def test_a_suspended_link_reads_nothing_more_and_runs_again_later(fake: FakeAmi) -> None:
    recorder = Recorder()
    link = AmiLink(server_for(fake), recorder.on_message, None, recorder.on_disconnected)
    task = asyncio.create_task(link.run())
    await connected_link(link, fake)
    await link.suspend("stream ownership ended")  # another daemon owns the stream
    await asyncio.wait_for(task, 5)
    assert not link.connected and not link.closed
    assert recorder.disconnects == ["stream ownership ended"]
    assert fake.logins == 1
    async with running(link):  # ours again
        await connected_link(link, fake, logins=2)
        await fake.push(frame(Event="Newchannel", Uniqueid="2.1"))
        await eventually(lambda: recorder.named("Newchannel"))
    assert link.closed
