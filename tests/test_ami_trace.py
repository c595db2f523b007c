"""The raw AMI trace ([[asterisk]] trace_dir), through real sockets on 127.0.0.1.

A relay between the link and the fake Asterisk keeps what Asterisk sent on each connection: the
trace files must hold exactly those bytes, replay to the calls the live daemon recorded, stay
private (0600), rotate, and never cost the link anything (a stalled disk drops and counts, a
disk error turns the trace off and the link goes on).
"""

from __future__ import annotations

import asyncio
import re
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import structlog
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from cti.ami import trace
from cti.ami.link import AmiLink
from cti.ami.message import Message
from cti.app import Daemon
from cti.calls.events import CallEnded, Event
from cti.calls.records import CallRecord
from cti.config import AsteriskServer, DatabaseSettings, Secret, Settings, WebSettings
from cti.replay import replay_files
from cti.web.metrics import DaemonCollector, build_registry
from fakeami import BANNER, CAPTURES, FakeAmi, capture_list, frame

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")

END = frame(Event="UserEvent", UserEvent="End")
NAME = re.compile(r"^pbx1-\d{8}T\d{6}Z-\d{4}\.ami$")
# What the fake answers itself (list items come from `fake.lists`): left out of pushed captures.
ANSWERED = {"FullyBooted", "CoreShowChannel", "CoreShowChannelsComplete", "QueueParams", "QueueMember"}
ANSWERED |= {"QueueEntry", "QueueStatusComplete"}


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    structlog.reset_defaults()  # other tests configure structlog: start from its defaults
    yield
    structlog.reset_defaults()


class Tap:
    """A TCP relay on 127.0.0.1 in front of the fake Asterisk; `sent[i]` is every byte Asterisk
    sent on the i-th connection, as forwarded to the link."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.sent: list[bytearray] = []
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Tap:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for session in self._sessions:
            session.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        record = bytearray()
        self.sent.append(record)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        pumps = {
            asyncio.create_task(_pump(up_reader, writer, record)),
            asyncio.create_task(_pump(reader, up_writer, None)),
        }
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for end in (writer, up_writer):
                end.close()  # what was forwarded is flushed before the FIN
                with suppress(OSError):
                    await end.wait_closed()
            self._sessions.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray | None) -> None:
    with suppress(OSError):
        while data := await reader.read(65536):
            if record is not None:
                record += data  # before the link can have it: a test reading `sent` sees it all
            writer.write(data)
            await writer.drain()


async def until(predicate: Callable[[], object], within_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def events_of(name: str, after: str | None = None) -> bytes:
    """A capture's event frames (not the responses to its own session's actions, not what the
    fake answers itself), from after the first `after` event."""
    frames = (CAPTURES / name).read_bytes().split(b"\r\n\r\n")
    started = after is None
    kept = []
    for f in frames:
        if not started:
            started = f.startswith(f"Event: {after}\r\n".encode())
        elif f.startswith(b"Event: ") and f[7 : f.find(b"\r\n")].decode() not in ANSWERED:
            kept.append(f + b"\r\n\r\n")
    return b"".join(kept)


def server(port: int, trace_dir: Path, **overrides: Any) -> AsteriskServer:
    settings: dict[str, Any] = {
        "name": "pbx1",
        "host": "127.0.0.1",
        "port": port,
        "secret": Secret("s3cret"),
        "keepalive_s": 30.0,  # no Ping in the middle of what a test counts
        "action_timeout_s": 2.0,
        "reconnect_cap_s": 0.2,
        "trace_dir": str(trace_dir),
    }
    return AsteriskServer(**(settings | overrides))


@asynccontextmanager
async def running(target: AsteriskServer, messages: list[Message]) -> AsyncIterator[AmiLink]:
    link = AmiLink(target, messages.append)
    runner = asyncio.create_task(link.run())
    try:
        await until(lambda: link.connected)
        yield link
    finally:
        await link.close()
        await runner


def ended(messages: list[Message]) -> bool:
    return bool(messages) and messages[-1].get("UserEvent") == "End"


def traces(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.ami"))


async def test_a_connection_is_traced_byte_for_byte_in_a_private_file(tmp_path: Path) -> None:
    directory = tmp_path / "not" / "there" / "yet"
    messages: list[Message] = []
    capture = events_of("inbound_answered.ami")
    async with (
        FakeAmi(secret="s3cret") as fake,
        Tap(fake.port) as tap,
        running(server(tap.port, directory), messages),
    ):
        # Odd cuts: inside a header, and inside "Zoë"'s two UTF-8 bytes.
        zoe = frame(Event="UserEvent", UserEvent="Note", Text="Zoë")
        await fake.push(zoe, split_at=[9, zoe.index("ë".encode()) + 1])
        await fake.push(capture, split_at=[len(capture) // 3, len(capture) // 2])
        await fake.push(END)
        await until(lambda: ended(messages))
    [path] = traces(directory)
    assert NAME.match(path.name), path.name
    assert path.read_bytes() == bytes(tap.sent[0])  # everything, exactly, in order
    assert path.read_bytes().startswith(BANNER) and "Zoë".encode() in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # callers' numbers: personal data
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


async def test_a_reconnect_starts_a_second_file_and_cti_replay_gives_the_live_calls(tmp_path: Path) -> None:
    """reconnect_part1 over the first connection, cut mid-call; part2's lists and events over the
    second (as tests/test_daemon.py): replaying the two trace files gives the daemon's own record."""
    directory = tmp_path / "traces"
    live: list[CallRecord] = []

    def keep(event: Event) -> None:
        if isinstance(event, CallEnded):
            live.append(event.record)

    async with FakeAmi(secret="s3cret") as fake, Tap(fake.port) as tap:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        settings = Settings(
            asterisk=(server(tap.port, directory),),
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/cti.db", flush_interval_s=0.05),
            web=WebSettings(port=0),
        )
        daemon = Daemon(settings)
        await daemon.start()
        try:
            daemon.bus.consume("trace-test", keep, kinds=frozenset({CallEnded}))
            await until(lambda: fake.actions("QueueStatus"))
            await fake.push(events_of("reconnect_part1.ami"))
            await until(lambda: len(daemon.trackings[0].tracker.calls) == 1)
            fake.lists = {
                "coreshowchannels": list(capture_list("reconnect_part2.ami", "CoreShowChannels")),
                "queuestatus": list(capture_list("reconnect_part2.ami", "QueueStatus")),
            }
            fake.drop()
            await until(lambda: daemon.trackings[0].resyncs == 2)
            await fake.push(events_of("reconnect_part2.ami", after="QueueStatusComplete"))
            await until(lambda: len(live) == 1)
        finally:
            await daemon.shutdown()
    files = traces(directory)
    assert len(files) == 2 and all(NAME.match(f.name) for f in files)
    assert [f.read_bytes() for f in files] == [bytes(sent) for sent in tap.sent]
    replayed = replay_files(files, server="pbx1")
    assert [r.to_json() for r in replayed.records] == [r.to_json() for r in live]
    assert live[0].outcome == "answered" and live[0].closed_by == "events"  # a whole call, not a stub


async def test_files_rotate_at_message_ends_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    directory = tmp_path / "traces"
    messages: list[Message] = []
    capture = events_of("inbound_blind_transfer.ami")  # about 80 kB: a dozen files of 4 kB
    async with FakeAmi(secret="s3cret") as fake, Tap(fake.port) as tap:
        target = server(tap.port, directory, trace_max_bytes=4096, trace_files=3)
        async with running(target, messages):
            await fake.push(capture + END, split_at=range(1000, len(capture), 7000))
            await until(lambda: ended(messages))
    files = traces(directory)
    assert len(files) == 3
    continued = [f.read_bytes() for f in files]
    for path, data in zip(files, continued, strict=True):
        # Each file is whole AMI on its own, a continuation starting with the connection's
        # banner: it replays without a single parse problem.
        assert data.startswith(BANNER)
        assert replay_files([path], server="pbx1").parse_problems == 0
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for data in continued[:-1]:
        # Cut at the first message end at or past 4096 bytes, not later.
        assert len(data) >= 4096 and data.endswith(b"\r\n\r\n")
        assert data.rfind(b"\r\n\r\n", 0, len(data) - 1) + 4 < 4096
    # The newest three, banners aside, are the end of what Asterisk sent: the oldest went.
    joined = b"".join(data.removeprefix(BANNER) for data in continued)
    assert bytes(tap.sent[0]).endswith(joined)
    assert len(joined) < len(tap.sent[0]) - 4096


async def test_an_unwritable_directory_logs_one_error_and_the_link_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    messages: list[Message] = []
    with capture_logs() as logs:
        async with (
            FakeAmi(secret="s3cret") as fake,
            running(server(fake.port, blocker / "traces"), messages) as link,
        ):
            await until(lambda: link.trace_errors == 1)
            await fake.push(events_of("inbound_answered.ami") + END)
            await until(lambda: ended(messages))
            assert link.connected
            assert link.trace_errors == 1 and link.trace_dropped_bytes == 0
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["event"].startswith("AMI trace cannot be written: tracing off for this connection")
    assert str(blocker / "traces") == errors[0]["directory"] and errors[0]["server"] == "pbx1"
    assert not (blocker.parent / "traces").exists()


class StalledDisk:
    """The trace's writes wait until `release()`: a disk that stopped answering."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.waiting = threading.Event()
        self._write = trace._write_all

    def __call__(self, fd: int, data: bytes) -> None:
        self.waiting.set()
        self.released.wait()
        self._write(fd, data)

    def release(self) -> None:
        self.released.set()


async def test_a_stalled_disk_drops_and_counts_bytes_and_never_holds_up_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "traces"
    disk = StalledDisk()
    monkeypatch.setattr(trace, "_write_all", disk)
    monkeypatch.setattr(trace, "QUEUE_BYTES", 1024)
    messages: list[Message] = []
    capture = events_of("inbound_answered.ami")
    parts = range(4000, len(capture), 4000)  # every part bigger than the whole queue
    try:
        with capture_logs() as logs:
            async with (
                FakeAmi(secret="s3cret") as fake,
                Tap(fake.port) as tap,
                running(server(tap.port, directory), messages) as link,
            ):
                await until(disk.waiting.is_set)  # the writer is stuck on the banner
                await fake.push(capture + END, split_at=parts)
                # Every event reached the daemon while the trace's writer was still stuck.
                await until(lambda: ended(messages))
                assert not disk.released.is_set()
                dropped = link.trace_dropped_bytes
                assert dropped >= len(capture) + len(END) - 1024
                scrape = generate_latest(build_registry(DaemonCollector(links=[link]))).decode()
                disk.release()
                # What was queued before the burst is written: the next chunk has room.
                accepted = len(tap.sent[0]) - dropped
                await until(lambda: traces(directory) and traces(directory)[0].stat().st_size == accepted)
                last = frame(Event="UserEvent", UserEvent="AfterTheGap")
                await fake.push(last)
                await until(lambda: messages[-1].get("UserEvent") == "AfterTheGap")
    finally:
        disk.release()
    samples = {
        (s.name, s.labels.get("server")): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }
    assert samples["cti_ami_trace_dropped_bytes_total", "pbx1"] == dropped
    [path] = traces(directory)
    data, sent = path.read_bytes(), bytes(tap.sent[0])
    assert last in data  # written after the gap (a Logoff answer follows it)
    warnings = [e for e in logs if e["event"].startswith("AMI trace behind the link")]
    gaps = [e for e in logs if e["event"] == "AMI trace gap: bytes dropped here"]
    assert len(warnings) == len(gaps) >= 1  # once per burst, not once per chunk
    assert sum(g["dropped_bytes"] for g in gaps) == dropped
    # The file is what Asterisk sent with exactly the dropped bytes cut out, where the log says.
    expected, at_sent, at_file = bytearray(), 0, 0
    for gap in gaps:
        kept = gap["at_byte"] - at_file
        expected += sent[at_sent : at_sent + kept]
        at_sent, at_file = at_sent + kept + gap["dropped_bytes"], gap["at_byte"]
    expected += sent[at_sent:]
    assert data == bytes(expected)


def test_the_settings_and_config_check_name_the_trace(tmp_path: Path) -> None:
    from cti.config import load_settings
    from cti.config_commands import review

    settings = load_settings(None, {"CTI_AMI_TRACE_DIR": str(tmp_path), "CTI_AMI_TRACE_FILES": "3"})
    assert (settings.asterisk[0].trace_dir, settings.asterisk[0].trace_files) == (str(tmp_path), 3)
    assert settings.asterisk[0].trace_max_bytes == 64 << 20  # the safe default
    [finding] = [f for f in review(settings) if f.setting == "asterisk[default].trace_dir"]
    assert finding.level == "warning" and "personal data" in finding.text
    off = load_settings(None, {})
    assert off.asterisk[0].trace_dir == "" and AmiLink(off.asterisk[0], print).trace is None
