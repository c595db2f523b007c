"""Incremental AMI wire parser: bytes in, `Message`s out. No I/O.

Frames are cut on the raw bytes and only whole frames are decoded, so a UTF-8 character split
across two TCP reads is never lost (panoramisk decodes each chunk on its own with
``errors='ignore'`` and drops it). Invalid UTF-8 is replaced, never dropped silently, and a frame
that is not AMI is counted and reported, never raised.

Cost is linear in the bytes received whatever the chunking: a partial frame waits in a
`bytearray` that is only appended to, each read is searched once for a frame end (plus the 3
bytes before it, where a frame end may straddle two reads), and each byte is copied a bounded
number of times. Memory is bounded too: a frame can't grow past `MAX_FRAME_BYTES` (the rest of
it is discarded up to its end) and the banner line past `MAX_BANNER_BYTES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat

from cti.ami.message import Message

_FRAME_END = b"\r\n\r\n"
_EOL = b"\r\n"
# A peer that never ends a frame must not make us buffer without bound.
MAX_FRAME_BYTES = 1 << 20
# Asterisk's banner is about 30 bytes ("Asterisk Call Manager/11.0.0"): a first line longer than
# this is not AMI (a wrong port, a proxy's error page, a peer gone mad).
MAX_BANNER_BYTES = 1024
# The skip decision is cached by the frame's first bytes when they hold the whole event name.
_PREFIX = 32
_MAX_CACHED_PREFIXES = 1024
BANNER_TOO_LONG = "banner line too long: not an AMI server"
_split = str.split
_HEADER_SEP, _ONCE = repeat(": "), repeat(1)  # endless: map() stops with the lines


@dataclass
class ParseProblem:
    reason: str
    sample: str


@dataclass
class AmiParser:
    """Feed it the byte stream; it returns the complete messages seen so far.

    `events`, when given, is the set of event names the consumer handles: other events are
    skipped before their headers are parsed. A busy Asterisk sends mostly `VarSet`, `Newexten`
    and `DeviceStateChange`, which no part of cti reads, so this is most of the parse time saved.
    Responses and list items are never skipped as long as their names are in the set.

    `failed` is set when the peer is not speaking AMI at all (a first line longer than
    `MAX_BANNER_BYTES`): the parser goes on (it skips to the end of that line), but a live link
    should drop the connection. `scanned_bytes` and `copied_bytes` count the parser's own work on
    the raw bytes (searches for frame ends, copies in and out of the partial-frame buffer).
    """

    expect_banner: bool = True
    events: frozenset[str] | None = None
    banner: str | None = None
    problems: list[ParseProblem] = field(default_factory=list)
    skipped: int = 0
    failed: str | None = None
    scanned_bytes: int = 0
    copied_bytes: int = 0
    # A partial frame (or, while `_discarding`, only the last 3 bytes of one being thrown away).
    _carry: bytearray = field(default_factory=bytearray)
    _discarding: bool = False
    # The banner line so far (at most MAX_BANNER_BYTES; then only its last byte, for a split CRLF).
    _line: bytearray = field(default_factory=bytearray)
    _line_too_long: bool = False
    _wanted: frozenset[bytes] | None = None
    _skip_by_prefix: dict[bytes, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.events is not None:
            self._wanted = frozenset(name.encode() for name in self.events)

    def feed(self, data: bytes) -> list[Message]:
        if self.expect_banner:
            data = self._take_banner(data)
        frames: list[bytes] = []
        if self._carry or self._discarding:
            first, data = self._complete_carry(data)
            if first is not None:
                frames.append(first)
        if data:
            self.scanned_bytes += len(data)
            more = data.split(_FRAME_END)
            rest = more.pop()
            if rest:
                self._keep(rest)
            if frames:
                frames.extend(more)
            else:
                frames = more
        return self._messages(frames) if frames else []

    # ------------------------------------------------------------------ framing
    def _take_banner(self, data: bytes) -> bytes:
        """Consume the banner line; return the bytes after it (empty while it is incomplete)."""
        line = self._line
        start = len(line) - 1 if line else 0  # a CR at the end of the previous read
        line += data
        self.copied_bytes += len(data)
        end = line.find(_EOL, start)
        self.scanned_bytes += (len(line) if end < 0 else end + 2) - start
        if end < 0:
            # Too long already (a CR at the end may be the start of the CRLF): the same verdict
            # as for the whole line in one read, however it is cut into reads.
            if len(line) - line.endswith(b"\r") > MAX_BANNER_BYTES:
                self._banner_too_long(line)
                del line[:-1]  # keep the last byte: it may be the CR of the CRLF still to come
            return b""
        if end > MAX_BANNER_BYTES:
            self._banner_too_long(line)
        if not self._line_too_long:
            self.banner = line[:end].decode("utf-8", "replace")
        after = bytes(line[end + 2 :])
        self.copied_bytes += len(after)
        self.expect_banner = False
        self._line = bytearray()
        return after

    def _banner_too_long(self, line: bytearray) -> None:
        if not self._line_too_long:
            self._line_too_long = True
            self.failed = BANNER_TOO_LONG
            self.banner = line[:80].decode("utf-8", "replace")
            self.problems.append(ParseProblem(BANNER_TOO_LONG, self.banner))

    def _complete_carry(self, data: bytes) -> tuple[bytes | None, bytes]:
        """Finish the frame carried over from earlier reads with the start of `data`.

        Returns that frame (None if it was being discarded, or is still incomplete: it is then
        kept) and what follows it in `data`."""
        carry = self._carry
        # Where a frame end may straddle the two reads: the carry's last 3 bytes, data's first 3.
        held = min(len(carry), 3)
        probe = bytes(carry[len(carry) - held :]) + data[:3]
        self.scanned_bytes += len(probe)
        at = probe.find(_FRAME_END)
        if 0 <= at < held:
            frame_len, after = len(carry) - held + at, at + 4 - held
        else:
            end = data.find(_FRAME_END)
            self.scanned_bytes += len(data) if end < 0 else end + 4
            if end < 0:
                self._keep(data)
                return None, b""
            frame_len, after = len(carry) + end, end + 4
            if not self._discarding:
                carry += memoryview(data)[:end]
                self.copied_bytes += end
        frame = None
        if self._discarding:
            self._discarding = False
        else:
            frame = bytes(carry) if frame_len == len(carry) else bytes(carry[:frame_len])
            self.copied_bytes += frame_len
        carry.clear()
        self.copied_bytes += len(data) - after
        return frame, data[after:]

    def _keep(self, data: bytes) -> None:
        """Add the start of an unfinished frame to the carry, within the frame size limit."""
        carry = self._carry
        if self._discarding:
            carry += data[-3:]
            del carry[:-3]
            self.copied_bytes += min(len(data), 3)
            return
        carry += data
        self.copied_bytes += len(data)
        if len(carry) > MAX_FRAME_BYTES:
            self.problems.append(
                ParseProblem("frame too long, discarded", carry[:80].decode("utf-8", "replace"))
            )
            del carry[:-3]  # a frame end may start in these
            self._discarding = True

    # ------------------------------------------------------------------ frames to messages
    def _messages(self, frames: list[bytes]) -> list[Message]:
        messages = []
        wanted, parse = self._wanted, self.parse_frame
        if wanted is None:
            for chunk in frames:
                message = parse(chunk)
                if message is not None:
                    messages.append(message)
            return messages
        cached, skipped = self._skip_by_prefix.get, 0
        for chunk in frames:
            skip = cached(chunk[:_PREFIX])
            if skip is None:
                skip = self._skips(chunk, wanted)
            if skip:
                skipped += 1
                continue
            message = parse(chunk)
            if message is not None:
                messages.append(message)
        self.skipped += skipped
        return messages

    def _skips(self, chunk: bytes, wanted: frozenset[bytes]) -> bool:
        if not chunk.startswith(b"Event: "):
            return False
        end = chunk.find(_EOL)
        name = chunk[7 : end if end >= 0 else None]
        # List terminators ("...Complete") always pass: they close what a caller waits for.
        skip = name not in wanted and not name.endswith(b"Complete")
        if 0 <= end < _PREFIX and len(self._skip_by_prefix) < _MAX_CACHED_PREFIXES:
            # The prefix holds the whole name: every frame starting so gets the same answer.
            self._skip_by_prefix[chunk[:_PREFIX]] = skip
        return skip

    def parse_frame(self, chunk: bytes) -> Message | None:
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            text = chunk.decode("utf-8", "replace")
            self.problems.append(ParseProblem("invalid UTF-8 replaced", text[:80]))
        lines = text.split("\r\n")
        try:
            # Fast path for the well-formed frame: every line "Key: value", no key repeated.
            message = Message(map(_split, lines, _HEADER_SEP, _ONCE))
        except ValueError:
            return self._parse_lines(lines, text)
        if len(message) == len(lines):
            return message
        return self._parse_lines(lines, text)

    def _parse_lines(self, lines: list[str], text: str) -> Message | None:
        message = Message()
        for line in lines:
            key, sep, value = line.partition(": ")
            if not sep:
                key, sep, value = line.partition(":")
                if not sep:
                    if line.strip():
                        self.problems.append(ParseProblem("line without a header name", line[:80]))
                    continue
                value = value.lstrip()
            if key in message:
                message[key] += "\n" + value
            else:
                message[key] = value
        if not message:
            if text.strip():
                self.problems.append(ParseProblem("frame without headers", text[:80]))
            return None
        return message

    def take_problems(self) -> list[ParseProblem]:
        problems, self.problems = self.problems, []
        return problems

    @property
    def pending_bytes(self) -> int:
        return len(self._carry) + len(self._line)
