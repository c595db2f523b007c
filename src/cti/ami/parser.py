"""Incremental AMI wire parser: bytes in, `Message`s out. No I/O.

Frames are cut on the raw bytes and only whole frames are decoded, so a UTF-8 character split
across two TCP reads is never lost (panoramisk decodes each chunk on its own with
``errors='ignore'`` and drops it). Invalid UTF-8 is replaced, never dropped silently, and a frame
that is not AMI is counted and reported, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cti.ami.message import Message

_FRAME_END = b"\r\n\r\n"
# A peer that never ends a frame must not make us buffer without bound.
MAX_FRAME_BYTES = 1 << 20


@dataclass
class ParseProblem:
    reason: str
    sample: str


@dataclass
class AmiParser:
    """Feed it the byte stream; it returns the complete messages seen so far."""

    expect_banner: bool = True
    banner: str | None = None
    problems: list[ParseProblem] = field(default_factory=list)
    _buffer: bytes = b""

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
            self.problems.append(ParseProblem("frame too long, discarded", rest[:80].decode("utf-8", "replace")))
            rest = b""
        self._buffer = rest
        messages = []
        for chunk in chunks:
            message = self.parse_frame(chunk)
            if message is not None:
                messages.append(message)
        return messages

    def parse_frame(self, chunk: bytes) -> Message | None:
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            text = chunk.decode("utf-8", "replace")
            self.problems.append(ParseProblem("invalid UTF-8 replaced", text[:80]))
        message = Message()
        for line in text.split("\r\n"):
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
