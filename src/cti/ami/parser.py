"""Incremental AMI wire parser: bytes in, `Message`s out. No I/O.

Frames are cut on the raw bytes and only whole frames are decoded, so a UTF-8 character split
across two TCP reads is never lost (panoramisk decodes each chunk on its own with
``errors='ignore'`` and drops it). Invalid UTF-8 is replaced, never dropped silently, and a frame
that is not AMI is counted and reported, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import methodcaller

from cti.ami.message import Message

_FRAME_END = b"\r\n\r\n"
_split_header = methodcaller("split", ": ", 1)
# A peer that never ends a frame must not make us buffer without bound.
MAX_FRAME_BYTES = 1 << 20


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
    """

    expect_banner: bool = True
    events: frozenset[str] | None = None
    banner: str | None = None
    problems: list[ParseProblem] = field(default_factory=list)
    skipped: int = 0
    _buffer: bytes = b""
    _wanted: frozenset[bytes] | None = None

    def __post_init__(self) -> None:
        if self.events is not None:
            self._wanted = frozenset(name.encode() for name in self.events)

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer + data if self._buffer else data
        if self.expect_banner:
            end = buffer.find(b"\r\n")
            if end < 0:
                self._buffer = buffer
                return []
            self.banner = buffer[:end].decode("utf-8", "replace")
            self.expect_banner = False
            buffer = buffer[end + 2 :]
        chunks = buffer.split(_FRAME_END)
        rest = chunks.pop()
        if len(rest) > MAX_FRAME_BYTES:
            self.problems.append(
                ParseProblem("frame too long, discarded", rest[:80].decode("utf-8", "replace"))
            )
            rest = b""
        self._buffer = rest
        messages = []
        wanted, parse = self._wanted, self.parse_frame
        for chunk in chunks:
            if wanted is not None and chunk.startswith(b"Event: "):
                end = chunk.find(b"\r\n")
                name = chunk[7 : end if end >= 0 else None]
                # List terminators ("...Complete") always pass: they close what a caller waits for.
                if name not in wanted and not name.endswith(b"Complete"):
                    self.skipped += 1
                    continue
            message = parse(chunk)
            if message is not None:
                messages.append(message)
        return messages

    def parse_frame(self, chunk: bytes) -> Message | None:
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            text = chunk.decode("utf-8", "replace")
            self.problems.append(ParseProblem("invalid UTF-8 replaced", text[:80]))
        lines = text.split("\r\n")
        try:
            # Fast path for the well-formed frame: every line "Key: value", no key repeated.
            message = Message(map(_split_header, lines))
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
        return len(self._buffer)
