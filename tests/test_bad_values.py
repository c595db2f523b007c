"""Absurd numbers from Asterisk (issue 14, item 7): never trusted, never a crash, never a stall.

Every transcript here is a real capture of ../shared/ami-captures with the value of one header
of one frame changed, every other byte as Asterisk sent it; each test says which
(`with_value`). The stamps are `nan`, `inf`, `1e309` (read as infinity), `99999999999999999999999`
(1e23), a year-2100 instant and one a day before the call: before, a year-2100 stamp made the
span writer build one object per quarter hour up to 2100 (RSS +336 MB from agent_session.ami's
6.9 KB, /healthz 3.6 s, SIGTERM ignored), `inf` looped for ever, and 1e309 raised
OverflowError in the dialer, the live statistics and the call writer, which dropped the record.
What replaces them, and why, is in cti.values and docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from cti import cli, values
from cti.app import Daemon
from fakeami import CAPTURES, FakeAmi
from test_daemon import calls_in, event_bytes, finished, settings_for, until

pytestmark = pytest.mark.skipif(not CAPTURES.is_dir(), reason="tests/captures/lab is missing")

YEAR_2100 = "4102444800.000000"
STAMPS = {
    "nan": "nan",
    "inf": "inf",
    "1e309": "1e309",
    "1e23": "99999999999999999999999",
    "year-2100": YEAR_2100,
}
INSTANTS = ("started_at", "ended_at", "answered_at", "joined_at", "left_at", "at")
DURATIONS = ("wait_s", "ring_s", "talk_s")


def with_value(data: bytes, event: str, header: str, value: str, nth: int = 0) -> bytes:
    """`data` with `header` of the `nth` frame of `event` (-1: the last) set to `value`."""
    frames = data.split(b"\r\n\r\n")
    hits = [i for i, f in enumerate(frames) if f.startswith(f"Event: {event}\r\n".encode())]
    i = hits[nth]
    lines = frames[i].split(b"\r\n")
    key = header.encode() + b": "
    [j] = [j for j, line in enumerate(lines) if line.startswith(key)]
    lines[j] = key + value.encode()
    frames[i] = b"\r\n".join(lines)
    return b"\r\n\r\n".join(frames)


def stamp_of(data: bytes, event: str, nth: int = 0) -> float:
    frame = [f for f in data.split(b"\r\n\r\n") if f.startswith(f"Event: {event}\r\n".encode())][nth]
    return float(frame.split(b"Timestamp: ", 1)[1].split(b"\r\n", 1)[0])


def strict_json(text: str) -> Any:
    """JSON as the standard has it: NaN and Infinity are no JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} in the output")

    return json.loads(text, parse_constant=refuse)


def replay(tmp_path: Path, data: bytes) -> dict[str, Any]:
    """`cti replay FILE --json`, its output read as strict JSON."""
    path = tmp_path / "transcript.ami"
    path.write_bytes(data)
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["replay", str(path), "--json"]) == 0
    doc = strict_json(out.getvalue())
    assert isinstance(doc, dict)
    return doc


def instants(call: dict[str, Any]) -> list[float]:
    found = [call[k] for k in INSTANTS if call.get(k) is not None]
    for seg in call["segments"]:
        found += [seg[k] for k in INSTANTS if seg.get(k) is not None]
    return found


def assert_like(call: dict[str, Any], clean: dict[str, Any], within_s: float) -> None:
    """The same call as the clean replay's, its instants and durations within `within_s`."""
    for key in ("linkedid", "outcome", "hangup_by", "agent", "queue", "direction"):
        assert call[key] == clean[key], key
    for key in INSTANTS + DURATIONS:
        if clean.get(key) is not None:
            assert call[key] == pytest.approx(clean[key], abs=within_s), key
    for seg, clean_seg in zip(call["segments"], clean["segments"], strict=True):
        for key in INSTANTS + DURATIONS:
            if clean_seg.get(key) is not None:
                assert seg[key] == pytest.approx(clean_seg[key], abs=within_s), key


@pytest.fixture(autouse=True)
def fresh_reports() -> None:
    values.ABSURD.reset()


# ------------------------------------------------------------------------------ cti replay
@pytest.mark.parametrize("case", list(STAMPS))
@pytest.mark.parametrize(("event", "nth"), [("AgentConnect", 0), ("QueueCallerLeave", 0), ("Hangup", -1)])
def test_an_absurd_timestamp_is_replaced_in_the_replay(
    tmp_path: Path, case: str, event: str, nth: int
) -> None:
    """inbound_answered.ami with the `Timestamp` of the answer (AgentConnect), of the caller
    leaving the queue, or of the last Hangup set to an absurd value: strict JSON, the same call,
    the absurd instant replaced by the stream's clock (the stamp before it, here milliseconds
    to a few seconds earlier)."""
    clean_bytes = (CAPTURES / "inbound_answered.ami").read_bytes()
    [clean] = replay(tmp_path, clean_bytes)["calls"]
    [call] = replay(tmp_path, with_value(clean_bytes, event, "Timestamp", STAMPS[case], nth))["calls"]
    assert_like(call, clean, within_s=6.6)  # the last Hangup comes 6.5 s after the one before
    assert values.ABSURD.seen, "the absurd stamp was not reported"


@pytest.mark.parametrize(("event", "nth"), [("AgentConnect", 0), ("Hangup", -1)])
def test_a_timestamp_that_jumps_back_a_day_is_replaced(tmp_path: Path, event: str, nth: int) -> None:
    """The answer (or the last Hangup) of inbound_answered.ami stamped a day before the rest:
    the answer came before the call started, or the call ended before it was answered."""
    clean_bytes = (CAPTURES / "inbound_answered.ami").read_bytes()
    [clean] = replay(tmp_path, clean_bytes)["calls"]
    day_before = f"{stamp_of(clean_bytes, event, nth) - 86_400:.6f}"
    [call] = replay(tmp_path, with_value(clean_bytes, event, "Timestamp", day_before, nth))["calls"]
    assert_like(call, clean, within_s=6.6)
    assert min(instants(call)) >= call["started_at"]
    assert values.ABSURD.seen == {"timestamp: ran backwards": 1}


def test_a_clock_set_back_for_good_is_followed_after_three_stamps(tmp_path: Path) -> None:
    """Every stamp of inbound_answered.ami from the AgentConnect on is an hour earlier (the
    PBX's clock set back): two stamps are replaced, then the new clock is Asterisk's."""
    data = (CAPTURES / "inbound_answered.ami").read_bytes()
    head, tail = data.split(b"Event: AgentConnect\r\n", 1)

    def earlier(match: re.Match[bytes]) -> bytes:
        return b"Timestamp: %.6f" % (float(match.group(1)) - 3600)

    tail = re.sub(rb"Timestamp: ([0-9.]+)", earlier, tail)
    [call] = replay(tmp_path, head + b"Event: AgentConnect\r\n" + tail)["calls"]
    assert call["ended_at"] == pytest.approx(stamp_of(data, "Hangup", -1) - 3600, abs=1e-3)
    assert values.ABSURD.seen["timestamp: Asterisk's clock was set"] == 1
    assert values.ABSURD.seen["timestamp: ran backwards"] == 2


def test_queue_params_with_nan_counts_do_not_crash_the_replay(tmp_path: Path) -> None:
    """agent_session.ami's QueueStatus answer with `Completed: nan` (and `Abandoned: -5`):
    `cti replay` crashed with ValueError; the absurd counts are missing (0), the rest is kept."""
    data = (CAPTURES / "agent_session.ami").read_bytes()
    data = with_value(with_value(data, "QueueParams", "Completed", "nan"), "QueueParams", "Abandoned", "-5")
    doc = replay(tmp_path, data)
    assert doc["stats"]["asterisk_queue_status"] == [{"support": {"completed": 0, "abandoned": 0}}]
    assert values.ABSURD.seen == {"count": 2}


@pytest.mark.parametrize("value", ["1e309", "nan", "-5", "99999999999999999999999", "abc"])
def test_absurd_durations_from_asterisk_are_missing_not_trusted(tmp_path: Path, value: str) -> None:
    """inbound_answered.ami as sent with `timestampevents = no` (every Timestamp header
    removed), so Asterisk's own figures are the durations, and AgentComplete's `TalkTime`
    absurd: talk_s was Infinity, NaN or negative in the JSON. It is now exactly as if Asterisk
    had not sent the header."""
    data = (CAPTURES / "inbound_answered.ami").read_bytes()
    untimed = b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"Timestamp: "))
    [clean] = replay(tmp_path, untimed)["calls"]
    assert clean["talk_s"] == 6
    without = untimed.replace(b"\r\nTalkTime: 6\r\n", b"\r\n", 1)
    assert without != untimed
    [missing] = replay(tmp_path, without)["calls"]
    values.ABSURD.reset()
    [call] = replay(tmp_path, with_value(untimed, "AgentComplete", "TalkTime", value))["calls"]
    assert call == missing
    assert values.ABSURD.seen == {"duration": 1}


def test_an_absurd_value_is_logged_once_then_rate_limited() -> None:
    now = [0.0]
    report = values.AbsurdValues(every_s=60, clock=lambda: now[0])
    with capture_logs() as logs:
        for _ in range(1000):
            values.duration("nan", report)
        now[0] = 61
        values.duration("inf", report)
        values.counter("-1", report)
    assert report.seen == {"duration": 1001, "count": 1}
    assert [(e["kind"], e["since_last_report"]) for e in logs] == [
        ("duration", 1),
        ("duration", 1000),
        ("count", 1),
    ]


def test_the_clock_keeps_asterisks_stamps_when_sane_even_seconds_or_days_off_ours() -> None:
    """Live: Asterisk's clock 3 s ahead of ours, then 5 s behind (a step within the
    tolerance), then its stamps 2 days behind ours (a recording fed to the daemon): all kept."""
    clock = values.AsteriskClock(report=values.AbsurdValues())
    arrival = 1_796_000_000.0
    assert clock.read(f"{arrival + 3:.6f}", arrival) == arrival + 3
    assert clock.read(f"{arrival - 2:.6f}", arrival + 1) == arrival - 2
    assert clock.arrival_offset == pytest.approx(3)
    old = values.AsteriskClock(report=values.AbsurdValues())
    assert old.read("1795389610.224275", arrival) == 1795389610.224275
    assert old.read("1795389611.5", arrival + 0.01) == 1795389611.5


def test_an_absurd_stamp_live_is_the_arrival_time_on_asterisks_clock() -> None:
    report = values.AbsurdValues()
    clock = values.AsteriskClock(report=report)
    arrival = 1_796_000_000.0
    assert clock.read(YEAR_2100, arrival) == arrival  # nothing known yet: our clock
    assert clock.read(f"{arrival + 3:.6f}", arrival + 1) == arrival + 3  # Asterisk 2 s ahead
    assert clock.read("inf", arrival + 11) == pytest.approx(arrival + 13)
    assert clock.read(f"{arrival - 3600:.6f}", arrival + 12) == pytest.approx(arrival + 14)
    assert clock.read(f"{arrival + 2 * 86_400:.6f}", arrival + 13) == pytest.approx(arrival + 15)
    assert report.seen == {
        "timestamp: ahead of our clock": 2,
        "timestamp: not a time": 1,
        "timestamp: ran backwards": 1,
    }


# ------------------------------------------------------------------------------ live daemon
async def _healthz_times(url: str, stop: asyncio.Event, times: list[float]) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            start = time.perf_counter()
            async with session.get(f"{url}/healthz") as response:
                await response.read()
            times.append(time.perf_counter() - start)
            await asyncio.sleep(0.05)


def _span_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("select count(*) from agent_state_spans").fetchone()
    return int(count)


async def test_a_year_2100_stamp_costs_the_daemon_nothing(tmp_path: Path) -> None:
    """agent_session.ami over a real socket with its last QueueMemberRemoved (Agent5 logs out)
    stamped 2100-01-01: the agent's span was cut into one piece per quarter hour up to 2100."""
    db = tmp_path / "cti.db"
    data = with_value(event_bytes("agent_session"), "QueueMemberRemoved", "Timestamp", YEAR_2100, -1)
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, db))
        await daemon.start()
        stop, times = asyncio.Event(), []
        poller = asyncio.create_task(_healthz_times(daemon.web_url, stop, times))
        try:
            await until(lambda: fake.actions("QueueStatus"))
            await fake.push(data)
            tracker, before_last = daemon.trackings[0].tracker, stamp_of(data, "QueueMemberRemoved", -2)
            await until(lambda: tracker.members == {} and tracker.last_event_at >= before_last)
            await daemon.bus.drain()
            assert await daemon.stats.spans.flush()
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await poller
            await daemon.shutdown()
    # Agent5's states over 9 s of traffic: a handful of quarter-hour pieces, not 2.6 million.
    assert 0 < _span_rows(db) < 20
    assert max(times) < 1.0, f"/healthz took {max(times):.3f}s"


@pytest.mark.parametrize("case", ["nan", "inf", "1e309", "1e23"])
async def test_a_call_ending_at_an_absurd_instant_is_stored(tmp_path: Path, case: str) -> None:
    """inbound_answered.ami over a real socket, its last Hangup stamped absurdly: the writer
    refused the record (OverflowError, ValueError) and the call was lost."""
    db = tmp_path / "cti.db"
    raw = event_bytes("inbound_answered")
    data = with_value(raw, "Hangup", "Timestamp", STAMPS[case], -1)
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, db))
        await daemon.start()
        try:
            await until(lambda: fake.actions("QueueStatus"))
            await fake.push(data)
            await until(lambda: finished(db, 1))
            async with aiohttp.ClientSession() as session, session.get(f"{daemon.web_url}/healthz") as r:
                assert r.status == 200
        finally:
            await daemon.shutdown()
    [call] = await calls_in(db)
    last = stamp_of(raw, "Hangup", -2)  # the stamp before the absurd one
    assert call["ended_at"].timestamp() == pytest.approx(last, abs=1.0)
    assert call["outcome"] == "answered" and call["talk_s"] == pytest.approx(6.5, abs=0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("case", ["inf", "year-2100"])
async def test_cti_serve_still_answers_and_stops_on_sigterm_after_an_absurd_stamp(
    tmp_path: Path, case: str
) -> None:
    """`cti serve` fed agent_session.ami with Agent5's logout stamped `inf` (the span cut never
    ended) or in 2100 (millions of pieces): /healthz stopped answering and SIGTERM was ignored."""
    db, config, port = tmp_path / "cti.db", tmp_path / "cti.toml", _free_port()
    data = with_value(event_bytes("agent_session"), "QueueMemberRemoved", "Timestamp", STAMPS[case], -1)
    async with FakeAmi(secret="s3cret") as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        config.write_text(
            f'[[asterisk]]\nname = "pbx1"\nhost = "127.0.0.1"\nport = {fake.port}\nkeepalive_s = 0.5\n'
            f'[database]\nurl = "sqlite+aiosqlite:///{db}"\nflush_interval_s = 0.05\n'
            f'[log]\nformat = "json"\n[web]\nhost = "127.0.0.1"\nport = {port}\n'
        )
        env = {**os.environ, "CTI_AMI_PBX1_SECRET": "s3cret"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cti.cli", "serve", "--config", str(config),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await until(lambda: fake.actions("QueueStatus"), within_s=30)
            await fake.push(data)
            await asyncio.sleep(1.0)  # the span writer flushes every 50 ms
            async with aiohttp.ClientSession() as session:
                start = time.perf_counter()
                async with asyncio.timeout(5), session.get(f"http://127.0.0.1:{port}/healthz") as r:
                    assert r.status == 200
                assert time.perf_counter() - start < 1.0
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert '"absurd value from Asterisk, not trusted"' in err.decode()
    assert 0 < _span_rows(db) < 20


def restamped(data: bytes, first_at: float) -> bytes:
    """Every `Timestamp` moved by the same amount, so that the first one is `first_at`."""
    stamps = [float(s) for s in re.findall(rb"Timestamp: ([0-9.]+)", data)]
    shift = first_at - min(stamps)
    return re.sub(rb"Timestamp: ([0-9.]+)", lambda m: b"Timestamp: %.6f" % (float(m.group(1)) + shift), data)


async def test_an_absurd_first_stamp_live_is_our_clock_and_no_consumer_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """outbound_answered.ami re-stamped to start now (Asterisk's clock and ours agree, as on a
    site), its first Newchannel stamped 1e309: the dialer's look-up of the call by number
    raised OverflowError, and the writer refused the record. The call now starts when that
    Newchannel arrived, by our clock."""
    db = tmp_path / "cti.db"
    async with FakeAmi() as fake:
        fake.lists = {"coreshowchannels": [], "queuestatus": []}
        daemon = Daemon(settings_for(fake, db))
        await daemon.start()
        try:
            await until(lambda: fake.actions("QueueStatus"))
            now = time.time()
            data = with_value(
                restamped(event_bytes("outbound_answered"), now), "Newchannel", "Timestamp", "1e309"
            )
            await fake.push(data)
            await until(lambda: finished(db, 1))
            await daemon.bus.drain()
        finally:
            await daemon.shutdown()
    [call] = await calls_in(db)
    assert call["direction"] == "outbound" and call["outcome"] == "outbound_answered"
    assert call["started_at"].timestamp() == pytest.approx(now, abs=2.0)
    assert call["ended_at"].timestamp() > call["started_at"].timestamp()
    out = capsys.readouterr()
    assert "absurd value from Asterisk" in out.out + out.err
    assert "event handler failed" not in out.out + out.err
