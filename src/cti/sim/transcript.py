"""Compare two AMI transcripts (a real capture and a simulator run) event by event.

Identifiers differ by nature (uniqueids, Local sequence numbers, bridge UUIDs, timestamps), so
both sides are normalised first: Local channels are renumbered in creation order, bridges in order
of appearance. An event is then identified by its name, the channel it is about and what kind of
step it is (the application of a `Newexten`, the variable of a `VarSet`, the state of a
`DeviceStateChange`...), and compared with its header NAMES (values aside).

What Asterisk does not fix, the comparison does not demand. Asterisk publishes events from many
threads: each channel's own thread, the device-state thread, app_queue's member updates, the
originate thread, the bridge. Within one burst (events less than `BURST_GAP_S` apart), the
interleaving of those threads varies from run to run: the captures themselves show the same burst
in different orders (`inbound_answered` and `inbound_caller_hangup`, for one). So, burst by burst,
the comparison demands the same events (as a multiset) and the same order within each thread; the
bursts themselves must come in the same order. Frames without a timestamp (responses, list items)
form one more thread, compared in order over the whole transcript. `exact` reports whether the
whole sequence also matched event for event.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from cti.ami.parser import AmiParser

BURST_GAP_S = 0.010
_LOCAL = re.compile(r"(Local/[^\s;]+?)-([0-9a-f]{8})(?=;|\s|$)(;[12])?")
# Headers that say what kind of step an event is (compared); other values are not compared.
_KIND_HEADERS = {
    "Newexten": ("Application",),
    "VarSet": ("Variable",),
    "UserEvent": ("UserEvent",),
    "Newstate": ("ChannelStateDesc",),
    "DialEnd": ("DialStatus",),
    "DeviceStateChange": ("Device", "State"),
    "AgentComplete": ("Reason", "Queue", "MemberName"),
    "AgentCalled": ("Queue", "MemberName"),
    "AgentConnect": ("Queue", "MemberName"),
    "AgentRingNoAnswer": ("Queue", "MemberName"),
    "QueueCallerJoin": ("Queue",),
    "QueueCallerLeave": ("Queue",),
    "QueueCallerAbandon": ("Queue",),
    "QueueMemberStatus": ("Queue", "MemberName", "Status"),
    "QueueMemberAdded": ("Queue", "MemberName"),
    "QueueMemberRemoved": ("Queue", "MemberName"),
    "QueueMemberPause": ("Queue", "MemberName", "Paused"),
    "OriginateResponse": ("Response", "Reason"),
    "DTMFBegin": ("Digit", "Direction"),
    "DTMFEnd": ("Digit", "Direction"),
    "BlindTransfer": ("Result",),
    "AttendedTransfer": ("Result", "DestType"),
}
_SESSION_HEADERS = ("Response", "ActionID", "Message", "EventList", "Queue", "Name", "MemberName")


@dataclass
class Frame:
    name: str
    headers: tuple[str, ...]
    values: dict[str, str]
    stamp: float | None
    thread: str = ""
    kind: tuple[str, ...] = ()
    index: int = 0

    @property
    def key(self) -> tuple[str, ...]:
        return (self.name, self.thread, *self.kind)


def read(data: bytes) -> list[Frame]:
    """Frames of a raw transcript (banner skipped), in arrival order."""
    parser = AmiParser(expect_banner=False)
    # The parser merges repeated headers; the header NAMES in order come from the raw lines.
    body = data.split(b"\r\n", 1)[1] if data.startswith(b"Asterisk Call Manager") else data
    out: list[Frame] = []
    for chunk in body.split(b"\r\n\r\n"):
        if not chunk.strip():
            continue
        message = parser.parse_frame(chunk)
        if message is None:
            continue
        names = tuple(line.split(":", 1)[0] for line in chunk.decode("utf-8", "replace").split("\r\n"))
        name = message.get("Event") or f"Response:{message.get('Response', '?')}"
        # A Ping's Response carries a Timestamp too; only events are placed in time.
        stamp = message.get("Timestamp") if "Event" in message else None
        out.append(Frame(name, names, dict(message), float(stamp) if stamp else None, index=len(out)))
    return out


@dataclass
class Normaliser:
    """Renumbers Local channels by creation order (their sequence numbers) and bridges by appearance."""

    locals_: dict[str, int] = field(default_factory=dict)
    bridges: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_frames(cls, frames: list[Frame]) -> Normaliser:
        seqs: set[str] = set()
        for f in frames:
            for value in f.values.values():
                seqs.update(m.group(2) for m in _LOCAL.finditer(value))
        return cls({seq: i for i, seq in enumerate(sorted(seqs, key=lambda s: int(s, 16)))})

    def channel(self, name: str) -> str:
        return _LOCAL.sub(
            lambda m: f"{m.group(1)}-#{self.locals_.get(m.group(2), -1)}{m.group(3) or ''}", name
        )

    def bridge(self, uid: str) -> str:
        return f"bridge#{self.bridges.setdefault(uid, len(self.bridges))}"


def classify(frames: list[Frame]) -> list[Frame]:
    """Fill in each frame's thread (who published it) and kind (what step it is)."""
    norm = Normaliser.for_frames(frames)
    for f in frames:
        f.thread = _thread(f, norm)
        f.kind = tuple(_kind_value(f, h, norm) for h in _KIND_HEADERS.get(f.name, ()))
    return frames


def _kind_value(frame: Frame, header: str, norm: Normaliser) -> str:
    value = frame.values.get(header, "")
    return norm.channel(value) if header == "Device" else value


def _thread(f: Frame, norm: Normaliser) -> str:
    v = f.values
    if f.stamp is None:
        return "session"
    if f.name == "DeviceStateChange":
        return "device:" + norm.channel(v.get("Device", ""))
    if f.name.startswith("QueueMember"):
        return f"member:{v.get('Queue', '')}:{v.get('Interface', '')}"
    if f.name == "OriginateResponse":
        return "originate:" + v.get("ActionID", "")
    if f.name == "AgentComplete":
        # app_queue sends it from its stasis subscription, not from the caller's thread: its place
        # among the caller channel's bridge events varies (inbound_caller_hangup vs outbound_answered).
        return "queue-stasis:" + norm.channel(v.get("Channel", ""))
    for header in ("Channel", "DestChannel", "LocalOneChannel", "TransfereeChannel"):
        if header in v:
            return "channel:" + norm.channel(v[header])
    for header in ("BridgeUniqueid", "ToBridgeUniqueid"):
        if header in v:
            return "bridge:" + norm.bridge(v[header])
    return "pbx"


def bursts(frames: list[Frame], gap_s: float = BURST_GAP_S) -> list[list[Frame]]:
    """Timestamped frames cut where two successive events are at least `gap_s` apart."""
    out: list[list[Frame]] = []
    last: float | None = None
    for f in frames:
        if f.stamp is None:
            continue
        if last is None or f.stamp - last >= gap_s:
            out.append([])
        out[-1].append(f)
        last = f.stamp
    return out


@dataclass
class Report:
    """What differs between two transcripts; empty `problems` means equivalent."""

    problems: list[str] = field(default_factory=list)
    events_expected: int = 0
    events_got: int = 0
    exact: bool = False
    out_of_place: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"{self.events_expected} events expected, {self.events_got} got; exact order: {self.exact}"
        return "\n".join([head, *self.problems[:40]])


def compare(
    expected: bytes | list[Frame], got: bytes | list[Frame], apart: frozenset[str] = frozenset()
) -> Report:
    """`apart`: event names compared thread by thread over the whole transcript, not burst by
    burst (their timing is not reproduced)."""
    want = classify(read(expected) if isinstance(expected, bytes) else expected)
    have = classify(read(got) if isinstance(got, bytes) else got)
    report = Report(events_expected=len(want), events_got=len(have))
    _compare_session(want, have, report)
    if apart:
        separate_a = _threads([f for f in want if f.name in apart])
        separate_b = _threads([f for f in have if f.name in apart])
        if separate_a != separate_b:
            report.problems.append(f"{sorted(apart)}: per-channel sequences differ")
    timed_a = [f for f in want if f.name not in apart]
    timed_b = [f for f in have if f.name not in apart]
    _compare_bursts(bursts(timed_a), bursts(timed_b), report)
    report.exact = [f.key for f in want] == [f.key for f in have] and not report.problems
    report.out_of_place = _distance([f.key for f in want], [f.key for f in have])
    return report


def _session_key(f: Frame) -> tuple[str, ...]:
    return (f.name, *(f.values.get(h, "") for h in _SESSION_HEADERS))


def _compare_session(want: list[Frame], have: list[Frame], report: Report) -> None:
    a = [f for f in want if f.stamp is None]
    b = [f for f in have if f.stamp is None]
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if _session_key(x) != _session_key(y):
            report.problems.append(f"session frame {i}: expected {_session_key(x)}, got {_session_key(y)}")
            return
        if x.headers != y.headers:
            report.problems.append(f"session frame {i} {x.name}: headers {x.headers} != {y.headers}")
    if len(a) != len(b):
        report.problems.append(f"session frames: expected {len(a)}, got {len(b)}")


def _compare_bursts(want: list[list[Frame]], have: list[list[Frame]], report: Report) -> None:
    for i, (x, y) in enumerate(zip(want, have, strict=False)):
        before = len(report.problems)
        _compare_burst(i, x, y, report)
        if len(report.problems) > before:
            return  # later bursts would only repeat the shift
    if len(want) != len(have):
        report.problems.append(f"bursts: expected {len(want)}, got {len(have)}")


def _compare_burst(i: int, want: list[Frame], have: list[Frame], report: Report) -> None:
    missing = Counter(f.key for f in want) - Counter(f.key for f in have)
    extra = Counter(f.key for f in have) - Counter(f.key for f in want)
    where = f"burst {i} (expected frames #{want[0].index}..#{want[-1].index})"
    if missing or extra:
        report.problems.append(f"{where}: missing {dict(missing)}; unexpected {dict(extra)}")
        return
    threads: dict[str, tuple[list[Frame], list[Frame]]] = {}
    for f in want:
        threads.setdefault(f.thread, ([], []))[0].append(f)
    for f in have:
        threads.setdefault(f.thread, ([], []))[1].append(f)
    for thread, (a, b) in threads.items():
        if [f.key for f in a] != [f.key for f in b]:
            shown_a = [f.key[0:1] + f.key[2:] for f in a]
            shown_b = [f.key[0:1] + f.key[2:] for f in b]
            report.problems.append(f"{where} {thread}: order {shown_a} != {shown_b}")
            continue
        for x, y in zip(a, b, strict=True):
            if x.headers != y.headers:
                report.problems.append(f"{where} {x.name} on {thread}: headers {x.headers} != {y.headers}")


def _distance(a: list[tuple[str, ...]], b: list[tuple[str, ...]]) -> int:
    """How many events are not in the longest common subsequence (0: same order)."""
    if len(a) * len(b) > 40_000_000:
        return -1
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return max(len(a), len(b)) - prev[-1]


def by_call(frames: list[Frame]) -> tuple[list[list[Frame]], list[Frame]]:
    """Frames grouped by call (Linkedid; an OriginateResponse goes with its call's ActionID), in
    order of the calls' first appearance, and the frames that belong to no call."""
    calls: dict[str, list[Frame]] = {}
    action_call: dict[str, str] = {}
    rest: list[Frame] = []
    for f in frames:
        linkedid = (
            f.values.get("Linkedid") or f.values.get("DestLinkedid") or f.values.get("LocalOneLinkedid")
        )
        if f.name == "OriginateResponse":
            linkedid = action_call.get(f.values.get("ActionID", ""), linkedid)
        if linkedid is None or f.stamp is None:
            rest.append(f)
            continue
        calls.setdefault(linkedid, []).append(f)
    # A failed Originate has no Linkedid: it goes with the call its ActionID started, if any.
    for linkedid, items in calls.items():
        for f in items:
            if f.name == "OriginateResponse" and "ActionID" in f.values:
                action_call[f.values["ActionID"]] = linkedid
    return list(calls.values()), rest


def compare_by_call(expected: bytes, got: bytes) -> Report:
    """For transcripts of many overlapping calls: each call compared on its own, in order of the
    calls' first appearance (bursts and threads within the call, as `compare` does), then what
    belongs to no call (device states, member states) thread by thread over the whole run, then
    the responses. `AgentComplete` is compared apart, by queue, member and reason: app_queue
    publishes it from its own taskprocessor, sometimes after both channels are gone, and then it
    carries no channel at all (mixed_seed1 has one such)."""
    want, have = read(expected), read(got)
    report = Report(events_expected=len(want), events_got=len(have))
    _compare_session(want, have, report)
    completes = [_complete_key(f) for f in want if f.name == "AgentComplete"]
    if sorted(completes) != sorted(_complete_key(f) for f in have if f.name == "AgentComplete"):
        report.problems.append("AgentComplete events differ (queue, member, reason)")
    calls_a, rest_a = by_call([f for f in want if f.name != "AgentComplete"])
    calls_b, rest_b = by_call([f for f in have if f.name != "AgentComplete"])
    if len(calls_a) != len(calls_b):
        report.problems.append(f"calls: expected {len(calls_a)}, got {len(calls_b)}")
    for i, (a, b) in enumerate(zip(calls_a, calls_b, strict=False)):
        sub = compare(a, b)
        if not sub.ok:
            report.problems.append(f"call {i}: {sub.problems[0]}")
    threads_a = _threads([f for f in classify(rest_a) if f.stamp is not None])
    threads_b = _threads([f for f in classify(rest_b) if f.stamp is not None])
    for thread in sorted(set(threads_a) | set(threads_b)):
        if threads_a.get(thread, []) != threads_b.get(thread, []):
            report.problems.append(f"{thread}: sequences differ")
    return report


def _complete_key(f: Frame) -> tuple[str, str, str]:
    return (f.values.get("Queue", ""), f.values.get("MemberName", ""), f.values.get("Reason", ""))


def _threads(frames: list[Frame]) -> dict[str, list[tuple[str, ...]]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for f in frames:
        out.setdefault(f.thread, []).append(f.key)
    return out
