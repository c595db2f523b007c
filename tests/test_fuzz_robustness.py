"""Property-based robustness (issue 14): whatever arrives on the socket, nothing escapes.

Traffic is drawn from the real captures (tests/captures/lab, tests/captures/pbx) and then
mangled the ways a real PBX and a real network mangle it: reads split at arbitrary bytes, frames
duplicated or dropped, events of different channels swapped (Asterisk's threads race), header
values replaced by numbers, empty strings, huge or unicode values and CRLF injection attempts,
and stray bytes. Properties:
- no exception escapes the parser, the tracker, the replay or the consumers the daemon runs on
  the tracker's events (live statistics, screen pops, the writers' row builders);
- the chunking of the reads changes nothing at all (every call's outcome, mutated or not);
- every call is closed exactly once, and no live call is without a channel;
- memory is bounded: the parser holds at most a frame, the tracker's tables stay within their
  caps and the count of live objects stops growing.

The budget is a hypothesis profile: "ci" (default: derandomized, so a CI run is repeatable, and
small enough that this file runs in well under a minute on the 2-core CI machine) or "nightly"
(`CTI_HYPOTHESIS_PROFILE=nightly`: ten times the examples, random seeds).
"""

from __future__ import annotations

import gc
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti.ami.parser import MAX_BANNER_BYTES, MAX_FRAME_BYTES, AmiParser
from cti.calls import events as ev
from cti.calls.tracker import ENDED_MEMORY, CallTracker
from cti.db.calls_store import call_row, segment_rows
from cti.replay import Replayer
from cti.screenpop.router import PopRouter
from cti.stats.agents import Span
from cti.stats.live import LiveStats
from cti.stats.store import span_row
from cti.values import utc

TESTS = Path(__file__).resolve().parent
CAPTURES = TESTS / "captures" / "lab"
PBX_CAPTURES = TESTS / "captures" / "pbx"

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=300, derandomize=True, **_COMMON)
settings.register_profile("nightly", max_examples=3000, derandomize=False, **_COMMON)
PROFILE = os.environ.get("CTI_HYPOTHESIS_PROFILE", "ci")
FUZZ = settings.get_profile(PROFILE)
# The heavier properties (whole replays, consumers) get a quarter of the examples.
HEAVY = settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 4))

NAMES = [
    "inbound_answered.ami",
    "inbound_abandoned.ami",
    "inbound_blind_transfer.ami",
    "inbound_attended_transfer.ami",
    "inbound_ringall_answered.ami",
    "inbound_ringnoanswer.ami",
    "inbound_queue_timeout.ami",
    "inbound_ivr_timeout.ami",
    "outbound_answered.ami",
    "outbound_busy.ami",
    "agent_session.ami",
    "reconnect_part2.ami",
    "pbx_restart_part1.ami",
    "ring_all.ami",
    "attended_transfer_dtmf.ami",
    "outbound_dial_agent_hangs_up.ami",
]


def _load() -> dict[str, list[bytes]]:
    frames = {}
    for name in NAMES:
        for folder in (CAPTURES, PBX_CAPTURES):
            if (folder / name).is_file():
                frames[name] = (folder / name).read_bytes().split(b"\r\n\r\n")[:-1]
    return frames


FRAMES = _load()
pytestmark = [
    # A failing example of several kB would otherwise be reported as hypothesis's warning about
    # its own long repr (warnings are errors here), not as the failure.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
    # The suite's own budget is the profile's: a nightly run may take minutes per property.
    pytest.mark.timeout(60 if PROFILE == "ci" else 3600),
]

# Values a PBX, a proxy or an attacker might put in a header.
ODD_VALUES = [
    "",
    " ",
    "0",
    "-1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e309",
    "99999999999999999999999",
    "4102444800.000000",
    "1.5",
    " 12 ",
    "1_000",
    "abc",
    "<unknown>",
    "<null>",
    "Zoë 中文 \U0001f600",
    "\ufeff",
    "x\r\nEvent: Hangup",
    "x\r\n\r\nEvent: Hangup\r\nUniqueid: 1795389610.8\r\nLinkedid: 1795389610.8",
    "x\nUniqueid: evil",
    "x\rLinkedid: evil",
    "9" * 5000,
    "Y" * 70_000,
]
VALUES = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=30),
)
STRAY = st.sampled_from(
    [b"\r\n", b"\r\n\r\n", b"\r", b"\n", b": ", b"\xff\xfe", b"\xc3", b"\x00", b"Event: "]
)


def _header_of(frame: bytes, name: bytes) -> bytes | None:
    for line in frame.split(b"\r\n"):
        if line.startswith(name + b": "):
            return line[len(name) + 2 :]
    return None


@st.composite
def traffic(draw: st.DrawFn, max_ops: int = 12, name: str | None = None) -> bytes:
    """One capture's bytes, mangled by a few operations (frame 0 keeps the banner)."""
    frames = list(FRAMES[name or draw(st.sampled_from(sorted(FRAMES)))])
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(["drop", "dup", "swap", "value", "value", "value", "stray"]))
        i = draw(st.integers(1, len(frames) - 1)) if len(frames) > 1 else 0
        if op == "drop" and i:
            del frames[i]
        elif op == "dup":
            frames.insert(min(len(frames), i + draw(st.integers(0, 5))), frames[i])
        elif op == "swap" and 0 < i < len(frames) - 1:
            a, b = frames[i], frames[i + 1]
            if _header_of(a, b"Uniqueid") != _header_of(b, b"Uniqueid"):  # different channels
                frames[i], frames[i + 1] = b, a
        elif op == "value":
            lines = frames[i].split(b"\r\n")
            j = draw(st.integers(0, len(lines) - 1))
            key = lines[j].split(b": ", 1)[0]
            lines[j] = key + b": " + draw(VALUES).encode("utf-8", "surrogatepass")
            frames[i] = b"\r\n".join(lines)
        elif op == "stray":
            cut = draw(st.integers(0, len(frames[i])))
            frames[i] = frames[i][:cut] + draw(STRAY) + frames[i][cut:]
    return b"\r\n\r\n".join(frames) + b"\r\n\r\n"


def chunks(data: bytes, cuts: Iterable[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


CUTS = st.lists(st.integers(0, 10**7), max_size=40)


def test_every_capture_the_properties_draw_from_is_in_the_repository() -> None:
    # A missing file would silently narrow every property below.
    assert sorted(FRAMES) == sorted(NAMES)


# ------------------------------------------------------------------------------ parser
@FUZZ
@given(data=traffic(), cuts=CUTS, events=st.sampled_from([None, "tracker"]))
def test_the_parser_is_indifferent_to_chunking_and_never_raises(
    data: bytes, cuts: list[int], events: str | None
) -> None:
    wanted = CallTracker().handled_events if events else None
    whole = AmiParser(events=wanted)
    expected = whole.feed(data)
    split = AmiParser(events=wanted)
    got = []
    largest = 0
    for chunk in chunks(data, cuts):
        got += split.feed(chunk)
        largest = max(largest, len(chunk))
        assert split.pending_bytes <= max(MAX_FRAME_BYTES, MAX_BANNER_BYTES) + largest
    assert got == expected
    assert (split.banner, split.skipped, split.failed) == (whole.banner, whole.skipped, whole.failed)
    assert [p.reason for p in split.problems] == [p.reason for p in whole.problems]
    assert split.scanned_bytes + split.copied_bytes <= 12 * len(data) + 64 * (len(cuts) + 1)


@FUZZ
@given(
    first=st.binary(max_size=3000).map(lambda b: b.replace(b"\r\n", b"")),
    length=st.integers(0, 3000),
    cuts=CUTS,
)
def test_any_first_line_gets_the_same_verdict_whatever_the_chunking(
    first: bytes, length: int, cuts: list[int]
) -> None:
    """The banner: short, long, binary, or longer than any banner (the peer is no AMI server)."""
    data = (first + b"B" * length)[:3000] + b"\r\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n"
    whole = AmiParser()
    expected = whole.feed(data)
    split = AmiParser()
    got = [m for chunk in chunks(data, cuts) for m in split.feed(chunk)]
    assert got == expected
    assert (split.banner, split.failed) == (whole.banner, whole.failed)
    assert split.pending_bytes <= MAX_BANNER_BYTES + len(data)


@FUZZ
@given(noise=st.binary(max_size=4000), cuts=CUTS)
def test_the_parser_survives_random_bytes(noise: bytes, cuts: list[int]) -> None:
    parser = AmiParser()
    for chunk in chunks(noise, cuts):
        for message in parser.feed(chunk):
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in message.items())
    assert parser.pending_bytes <= len(noise)


# ------------------------------------------------------------------------------ tracker, replay
class CheckedTracker(CallTracker):
    """A tracker that checks, after every message, that no live call is without a channel and
    that every channel it knows belongs to a live call."""

    def feed(self, msg: Any, now: float | None = None) -> list[ev.Event]:
        out = super().feed(msg, now)
        for linkedid, call in self.calls.items():
            assert call.channels, f"call {linkedid} has no channel"
            assert call.record.linkedid == linkedid
        for uid, channel in self.channels.items():
            assert self.calls.get(channel.call.record.linkedid) is channel.call, f"channel {uid} orphaned"
        return out


def replayed(parts: Iterable[bytes]) -> tuple[dict[str, Any], list[ev.Event], CheckedTracker]:
    tracker = CheckedTracker()
    seen: list[ev.Event] = []
    replayer = Replayer(tracker, on_event=seen.append)
    replayer.connection(parts)
    result = replayer.finish()
    doc = result.to_json()
    seen += tracker.close_all(tracker.last_event_at, "shutdown")
    return doc, seen, tracker


def assert_closed_exactly_once(seen: list[ev.Event], tracker: CallTracker) -> None:
    started = Counter(e.linkedid for e in seen if isinstance(e, ev.CallStarted))
    ended = Counter(e.linkedid for e in seen if isinstance(e, ev.CallEnded))
    assert max(started.values(), default=1) == 1, started.most_common(3)
    assert max(ended.values(), default=1) == 1, ended.most_common(3)
    assert set(started) <= set(ended), set(started) - set(ended)
    assert tracker.calls == {} and tracker.channels == {}


@HEAVY
@given(data=traffic(), cuts=CUTS)
def test_mangled_traffic_replays_the_same_whatever_the_chunking(data: bytes, cuts: list[int]) -> None:
    doc, seen, tracker = replayed([data])
    split_doc, split_seen, _ = replayed(chunks(data, cuts))
    # Every call, mangled or not, comes out the same: the reads' boundaries mean nothing.
    assert split_doc == doc
    assert [e.to_json() for e in split_seen] == [e.to_json() for e in seen]
    assert_closed_exactly_once(seen, tracker)
    json.dumps(doc, allow_nan=False)
    for event in seen:
        json.dumps(event.to_json(), allow_nan=False)


@st.composite
def connections(draw: st.DrawFn) -> list[bytes]:
    names = draw(st.lists(st.sampled_from(sorted(FRAMES)), min_size=2, max_size=3, unique=True))
    return [draw(traffic(max_ops=6, name=name)) for name in names]


@HEAVY
@given(parts=connections())
def test_reconnects_with_mangled_traffic_close_every_call_once(parts: list[bytes]) -> None:
    """Several connections in a row (the replay's reconnect: each one's first CoreShowChannels
    and QueueStatus are a resync), each a different capture: the same capture twice would be
    the whole traffic of ended calls sent again (the test below checks that case)."""
    tracker = CheckedTracker()
    seen: list[ev.Event] = []
    replayer = Replayer(tracker, on_event=seen.append)
    for data in parts:
        replayer.connection([data])
    replayer.finish()
    seen += tracker.close_all(tracker.last_event_at, "shutdown")
    assert_closed_exactly_once(seen, tracker)


def test_a_newchannel_repeated_after_its_call_ended_does_not_start_it_again() -> None:
    frames = FRAMES["inbound_answered.ami"]
    first = next(f for f in frames if f.startswith(b"Event: Newchannel\r\n"))
    doc, seen, tracker = replayed([b"\r\n\r\n".join([*frames, first]) + b"\r\n\r\n"])
    assert [c["outcome"] for c in doc["calls"]] == ["answered"]
    assert_closed_exactly_once(seen, tracker)


# ------------------------------------------------------------------------------ consumers
@HEAVY
@given(data=traffic())
def test_the_daemons_consumers_take_whatever_the_tracker_emits(data: bytes) -> None:
    """Live statistics, screen pops and the writers' row builders, fed the events of mangled
    traffic in order, as the daemon's bus hands them over."""
    _, seen, _ = replayed([data])
    last = max((e.at for e in seen), default=0.0)
    spans: list[Span] = []
    stats = LiveStats(tz=ZoneInfo("Europe/Paris"), clock=lambda: last, on_spans=spans.extend)
    pops = PopRouter(lambda interface: interface)
    for event in seen:
        stats.on_event(event)
        pops.feed(event)
        if isinstance(event, ev.CallEnded):
            call_row(event.record)
            segment_rows(1, event.record)
    stats.tick(last + 1)
    spans += stats.close(last + 2)
    json.dumps(stats.snapshot(last + 2), allow_nan=False)
    pieces = [p for s in spans if s.started_at > 0 for p in s.cut()]
    assert len(pieces) <= sum(2 + (s.ended_at - s.started_at) / 900 for s in spans)
    for piece in pieces:
        if utc(piece.ended_at) is not None:
            span_row(piece)


# ------------------------------------------------------------------------------ memory
def _shifted(data: bytes, k: int) -> bytes:
    """The traffic with every linkedid/uniqueid moved by k thousand seconds: new calls."""
    import re

    return re.sub(
        rb"\b(179\d{7})\.(\d+)\b", lambda m: b"%d.%s" % (int(m.group(1)) + 1000 * k, m.group(2)), data
    )


def _sizes(tracker: CallTracker) -> dict[str, int]:
    return {
        "calls": len(tracker.calls),
        "channels": len(tracker.channels),
        "awaiting": len(tracker._awaiting),
        "completing": len(tracker._completing),
        "early": len(tracker._early),
        "ended": len(tracker._ended),
        "dead": len(tracker._dead),
    }


@settings(HEAVY, max_examples=max(2, FUZZ.max_examples // 150))
@given(data=st.lists(traffic(), min_size=3, max_size=3))
def test_memory_stays_bounded_on_endless_mangled_traffic(data: list[bytes]) -> None:
    """The same mangled traffic again and again, every round with new ids, into one tracker and
    one LiveStats that are never closed (the daemon's): calls whose hangups were dropped are
    capped, and the count of live objects stops growing."""
    tracker = CallTracker(max_calls=50)
    stats = LiveStats(tz=ZoneInfo("UTC"), clock=lambda: tracker.last_event_at)
    replayer = Replayer(tracker, on_event=stats.on_event)
    replayer.result.records = _Discard()  # type: ignore[assignment]
    counts = []
    for k in range(40):
        for part in data:
            replayer.connection([_shifted(part, k)])
        sizes = _sizes(tracker)
        assert sizes["calls"] <= 50 and sizes["ended"] <= ENDED_MEMORY and sizes["dead"] <= ENDED_MEMORY
        if k in (10, 39):
            gc.collect()
            counts.append(len(gc.get_objects()))
    # Each round's ids are new: its calls must go (closed, or evicted past the cap), with
    # everything hanging from them. A round's calls are hundreds of container objects; what
    # may grow is the bounded memory of ended ids (strings, not containers).
    per_round = (counts[1] - counts[0]) / 29
    assert per_round < 50, f"{per_round:.0f} more live objects per round"


class _Discard(list):  # type: ignore[type-arg]
    def append(self, _item: object) -> None:
        pass
