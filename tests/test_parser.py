"""The AMI wire parser, fed byte by byte where it matters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cti.ami.actions import format_action
from cti.ami.link import AmiLink
from cti.ami.parser import BANNER_TOO_LONG, MAX_BANNER_BYTES, AmiParser
from cti.config import AsteriskServer, Secret
from fakeami import FakeAmi

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def test_banner_then_messages_across_arbitrary_splits() -> None:
    data = (
        BANNER
        + b"Response: Success\r\nActionID: a1\r\nMessage: ok\r\n\r\n"
        + b"Event: Newchannel\r\nUniqueid: 1.1\r\n\r\n"
    )
    for cut in range(1, len(data)):
        parser = AmiParser()
        out = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert parser.banner == "Asterisk Call Manager/11.0.0"
        assert [m.get("Response") or m.get("Event") for m in out] == ["Success", "Newchannel"]


def test_utf8_character_split_between_two_reads_survives() -> None:
    frame = "Event: NewCallerid\r\nCallerIDName: Zoë\r\n\r\n".encode()
    cut = frame.index("ë".encode()) + 1  # between the two bytes of ë
    parser = AmiParser(expect_banner=False)
    out = parser.feed(frame[:cut]) + parser.feed(frame[cut:])
    assert out[0]["CallerIDName"] == "Zoë"


def test_repeated_headers_keep_every_value() -> None:
    parser = AmiParser(expect_banner=False)
    out = parser.feed(
        b"Response: Success\r\nActionID: c\r\nOutput: Asterisk 22.10.1\r\nOutput: second line\r\n\r\n"
    )
    assert out[0].lines("Output") == ["Asterisk 22.10.1", "second line"]


def test_malformed_frames_are_reported_and_skipped_not_raised() -> None:
    parser = AmiParser(expect_banner=False)
    out = parser.feed(
        b"garbage without colon\r\n\r\n"
        b"\xff\xfeEvent: Hangup\r\nUniqueid: 9\r\n\r\n"
        b"Event: Hangup\r\nUniqueid: 10\r\n\r\n"
    )
    assert [m.get("Uniqueid") for m in out] == ["9", "10"]
    reasons = {p.reason for p in parser.take_problems()}
    assert reasons == {
        "line without a header name",
        "frame without headers",
        "invalid UTF-8 replaced",
    }


def test_unread_events_are_skipped_but_list_terminators_pass() -> None:
    parser = AmiParser(expect_banner=False, events=frozenset({"Hangup"}))
    out = parser.feed(
        b"Event: VarSet\r\nVariable: x\r\n\r\nEvent: Hangup\r\nUniqueid: 1\r\n\r\n"
        b"Event: QueueStatusComplete\r\nActionID: q\r\nEventList: Complete\r\n\r\n"
        b"Response: Success\r\nActionID: q\r\n\r\n"
    )
    assert [m.get("Event") or m.get("Response") for m in out] == ["Hangup", "QueueStatusComplete", "Success"]
    assert parser.skipped == 1


def test_a_peer_that_never_ends_a_frame_cannot_grow_the_buffer_without_bound() -> None:
    parser = AmiParser(expect_banner=False)
    for _ in range(40):
        parser.feed(b"X" * 65536)
    assert parser.pending_bytes <= (1 << 20) + 65536
    assert any(p.reason == "frame too long, discarded" for p in parser.take_problems())


def test_action_values_cannot_inject_headers() -> None:
    raw = format_action("QueuePause", {"Interface": "PJSIP/1001", "Reason": "lunch\r\nAction: Logoff"}, "a-1")
    assert raw.count(b"\r\n\r\n") == 1
    assert b"\r\nAction: Logoff" not in raw
    assert (
        format_action("Originate", {"Variable": {"CTI_CAMPAIGN": "c1", "CTI_CONTACT": "7"}}, "o-1").count(
            b"Variable: "
        )
        == 2
    )


# ---------------------------------------------------------------------------- cost (issue 14, 9)
CAPTURES = Path(__file__).resolve().parent / "captures" / "lab"
PBX_CAPTURES = Path(__file__).resolve().parent / "captures" / "pbx"
CHUNK = 65536


def _capture(name: str) -> bytes:
    for folder in (PBX_CAPTURES, CAPTURES):
        if (folder / name).is_file():
            return (folder / name).read_bytes()
    pytest.skip(f"{name} not present")


def _work(parser: AmiParser) -> int:
    return parser.scanned_bytes + parser.copied_bytes


def test_a_banner_without_crlf_is_bounded_reported_and_skipped() -> None:
    """A peer whose first line never ends (18 MB were buffered, in quadratic time): the parser
    holds at most MAX_BANNER_BYTES of it, says once that this is no AMI server, skips to the end
    of that line and parses what follows."""
    parser = AmiParser()
    junk = b"X" * CHUNK
    held = []
    for _ in range(64):  # 4 MiB
        assert parser.feed(junk) == []
        held.append(parser.pending_bytes)
    assert max(held) <= MAX_BANNER_BYTES + CHUNK
    assert parser.failed == BANNER_TOO_LONG
    assert [p.reason for p in parser.take_problems()] == [BANNER_TOO_LONG]
    out = parser.feed(b"XX\r")
    out += parser.feed(b"\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n")
    assert [m.get("Uniqueid") for m in out] == ["1.1"]
    assert parser.take_problems() == []
    assert _work(parser) <= 3 * (64 * CHUNK + 40)


@pytest.mark.parametrize("length", [MAX_BANNER_BYTES - 1, MAX_BANNER_BYTES, MAX_BANNER_BYTES + 1, 5000])
def test_the_banner_verdict_does_not_depend_on_the_reads(length: int) -> None:
    data = b"B" * length + b"\r\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n"
    whole = AmiParser()
    expected = whole.feed(data)
    for size in (1, 7, 1000):
        parser = AmiParser()
        out = [m for i in range(0, len(data), size) for m in parser.feed(data[i : i + size])]
        assert out == expected and [m.get("Uniqueid") for m in out] == ["1.1"]
        assert (parser.banner, parser.failed) == (whole.banner, whole.failed)
    assert (whole.failed is None) == (length <= MAX_BANNER_BYTES)


def test_a_frame_longer_than_the_limit_is_dropped_to_its_end_and_the_next_frames_parse() -> None:
    parser = AmiParser(expect_banner=False)
    parser.feed(b"Event: Hangup\r\nUniqueid: 1.1\r\nJunk: ")
    for _ in range(24):  # 1.5 MiB without a frame end
        parser.feed(b"Y" * CHUNK)
        assert parser.pending_bytes <= (1 << 20) + CHUNK
    out = parser.feed(b"Y\r\n\r")
    out += parser.feed(b"\nEvent: Hangup\r\nUniqueid: 2.2\r\n\r\n")
    # The long frame's tail is not parsed as a frame of its own.
    assert [m.get("Uniqueid") for m in out] == ["2.2"]
    assert [p.reason for p in parser.take_problems()] == ["frame too long, discarded"]


@pytest.mark.parametrize("name", ["ring_no_answer.ami", "inbound_attended_transfer.ami"])
def test_one_byte_reads_of_a_real_capture_give_the_same_messages_in_linear_work(name: str) -> None:
    data = _capture(name)
    events = frozenset({"Newchannel", "Hangup", "AgentConnect", "QueueMember"})
    whole = AmiParser(events=events)
    expected = whole.feed(data)
    assert expected
    bytewise = AmiParser(events=events)
    out = []
    for i in range(len(data)):
        out += bytewise.feed(data[i : i + 1])
    assert out == expected
    assert (bytewise.banner, bytewise.skipped) == (whole.banner, whole.skipped)
    # Each byte is searched and copied a bounded number of times, whatever the chunking.
    assert _work(whole) <= 3 * len(data)
    assert _work(bytewise) <= 12 * len(data)


def test_one_byte_reads_of_a_long_frame_cost_linear_work() -> None:
    """200,000 one-byte reads took 17 s: the buffer was re-concatenated on every read."""
    frame = b"Response: Success\r\nActionID: c\r\n" + b"Output: 0123456789abcdef\r\n" * 8000 + b"\r\n"
    for n in (len(frame) // 2, len(frame)):
        parser = AmiParser(expect_banner=False)
        out = []
        for i in range(n):
            out += parser.feed(frame[i : i + 1])
        assert parser.pending_bytes == (0 if n == len(frame) else n)
        assert _work(parser) <= 12 * n
    assert len(out) == 1 and len(out[0].lines("Output")) == 8000


def test_the_work_counters_count_what_is_read() -> None:
    parser = AmiParser(expect_banner=False)
    data = b"Event: Hangup\r\nUniqueid: 1.1\r\n\r\n" * 10
    parser.feed(data[:7])
    parser.feed(data[7:])
    assert parser.scanned_bytes >= len(data)
    assert parser.copied_bytes >= 7


async def test_the_link_drops_a_peer_with_an_endless_banner_and_recovers() -> None:
    """The link used to buffer the endless line until its login timed out; it now drops the
    connection as soon as the line outgrows a banner, and the next connection works."""

    class EndlessBanner(FakeAmi):
        async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.clients or self.endless_done:
                await super()._serve(reader, writer)
                return
            self.endless_done = True
            try:
                for _ in range(64):
                    writer.write(b"Z" * CHUNK)
                    await writer.drain()
                await reader.read()  # until the client drops us
            except ConnectionError:
                pass
            finally:
                writer.transport.abort()

    async with EndlessBanner() as fake:
        fake.endless_done = False
        server = AsteriskServer(
            name="pbx-test",
            host="127.0.0.1",
            port=fake.port,
            username=fake.username,
            secret=Secret(fake.secret),
            keepalive_s=5.0,
            action_timeout_s=30.0,  # the old way out: the login's timeout
            connect_timeout_s=1.0,
            reconnect_cap_s=0.2,
        )
        link = AmiLink(server, on_message=lambda _m: None)
        runner = asyncio.create_task(link.run())
        try:
            for _ in range(500):  # 10 s
                if link.connected:
                    break
                await asyncio.sleep(0.02)
            assert fake.logins == 1 and link.malformed >= 1
            assert link.banner == "Asterisk Call Manager/11.0.0"
        finally:
            await link.close()
            await runner
