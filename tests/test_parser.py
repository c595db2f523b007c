"""The AMI wire parser, fed byte by byte where it matters."""

from __future__ import annotations

from cti.ami.actions import format_action
from cti.ami.parser import AmiParser

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
