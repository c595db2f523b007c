"""The FastAGI wire, without I/O: Asterisk's environment block, our commands, Asterisk's replies.

What Asterisk 22 does (res/res_agi.c, read for 22.10.1):

- `launch_netscript` connects, writes `agi_network: yes` and, when the URL has a path,
  `agi_network_script: <the path after host[:port]/>`; `setup_env` then writes `agi_request:
  <the URL>`, the channel's fields (`agi_uniqueid`, `agi_callerid`, `agi_calleridname`...),
  `agi_arg_N: <value>` for each argument after the URL, and an empty line. Every line is
  `"%s: %s\\n"`; values are the channel's bytes, in no declared encoding.
- A command is one line. Asterisk reads at most 8,192 bytes of it (AGI_BUF_LEN) and splits it like
  a shell (`parse_args`): blanks separate words, double quotes group, a backslash makes the next
  character literal.
- Replies: `200 result=N[ (data)]`, `510 Invalid or unknown command`, `511 Command Not Permitted
  on a dead channel or intercept routine`, and for a usage error `520-Invalid command syntax.
  Proper usage follows:`, the usage text (several lines), `520 End of proper usage.`.
- `HANGUP` alone on a line when the channel hangs up (unless AGISIGHUP=no). It comes *between*
  replies, not instead of one: the command in flight still gets its own reply after it. SET
  VARIABLE and VERBOSE are allowed on a dead channel, so they keep answering 200.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

# Asterisk's own command buffer; nothing it sends us is longer in practice (a caller name is
# at most 80 bytes, an argument is the dialplan's).
MAX_LINE: Final = 8192
# agi_network, agi_network_script, the 20 fields of setup_env and up to 127 arguments (MAX_ARGS).
MAX_ENVIRONMENT_LINES: Final = 160
# A 520 usage text is a few lines; a reply that never ends is not Asterisk.
MAX_REPLY_LINES: Final = 64

_REPLY = re.compile(r"^(\d{3})([ -])(.*)$")
_RESULT = re.compile(r"^result=(\S*)(?: \((.*)\))?")
_KEY = re.compile(r"^agi_[a-z0-9_]+$")


class AgiProtocolError(Exception):
    """The peer does not speak FastAGI as Asterisk does (or sent more than we accept)."""


class LineTooLong(AgiProtocolError):
    pass


def sample(line: str) -> str:
    """A bad line, fit for a WARNING: its start, digits masked (it may hold a caller's number)."""
    return re.sub(r"\d", "#", line[:40])


def decode(line: bytes) -> str:
    """One whole line as text. Asterisk sends channel bytes as they are: a Latin-1 caller name from
    a carrier must cost its accents, not the lookup."""
    return line.decode("utf-8", errors="replace").removesuffix("\r")


class LineReader:
    """Cuts a byte stream into lines. Lines are cut on bytes and decoded whole, so a character
    split across two reads survives; no line (finished or not) may exceed `max_line` bytes."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._partial += data
        lines: list[str] = []
        start = 0
        while (end := self._partial.find(b"\n", start)) >= 0:
            if end - start > self.max_line:
                raise LineTooLong(f"a line of {end - start} bytes (at most {self.max_line})")
            lines.append(decode(bytes(self._partial[start:end])))
            start = end + 1
        del self._partial[:start]
        if len(self._partial) > self.max_line:
            raise LineTooLong(f"more than {self.max_line} bytes without a line break")
        return lines

    @property
    def pending(self) -> int:
        """Bytes of a line not finished yet."""
        return len(self._partial)


@dataclass(frozen=True)
class AgiEnvironment:
    """The environment block Asterisk sends first, as `agi_*` fields."""

    values: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def script(self) -> str:
        """The path after agi://host[:port]/, without a query string: the route."""
        return self.get("agi_network_script").split("?", 1)[0].strip("/")

    @property
    def args(self) -> tuple[str, ...]:
        """The AGI() arguments after the URL (agi_arg_1, agi_arg_2... up to the first gap)."""
        found: list[str] = []
        while f"agi_arg_{len(found) + 1}" in self.values:
            found.append(self.values[f"agi_arg_{len(found) + 1}"])
        return tuple(found)

    @property
    def uniqueid(self) -> str:
        return self.get("agi_uniqueid")

    @property
    def caller_number(self) -> str:
        return self.get("agi_callerid")

    @property
    def caller_name(self) -> str:
        return self.get("agi_calleridname")


def parse_environment(lines: Iterable[str]) -> AgiEnvironment:
    """The fields of an environment block (its lines without the closing empty one)."""
    values: dict[str, str] = {}
    for count, line in enumerate(lines, 1):
        if count > MAX_ENVIRONMENT_LINES:
            raise AgiProtocolError(f"more than {MAX_ENVIRONMENT_LINES} environment lines")
        key, colon, value = line.partition(":")
        if not colon or not _KEY.match(key):
            raise AgiProtocolError(f"not an AGI environment line: {sample(line)!r}")
        values[key] = value[1:] if value.startswith(" ") else value
    if values.get("agi_network") != "yes":
        raise AgiProtocolError("no 'agi_network: yes': not a FastAGI client")
    return AgiEnvironment(values)


# -- commands -------------------------------------------------------------------------------


def one_line(text: str, limit: int) -> str:
    """Text fit for one command argument: control characters (a line break would end the
    command) become spaces; at most `limit` characters."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return flat[:limit]


def quote(text: str) -> str:
    """One argument for Asterisk's parse_args: quoted, with backslashes and quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_variable(name: str, value: str) -> str:
    return f"SET VARIABLE {quote(one_line(name, 80))} {quote(one_line(value, 1024))}"


def exec_mset(assignments: Sequence[str]) -> str:
    """One EXEC of MSet for `NAME=value` pairs whose names and values need no escaping (the
    caller checks: MSet splits on commas and `=`)."""
    return f"EXEC MSet {quote(','.join(assignments))}"


def verbose(message: str, level: int) -> str:
    return f"VERBOSE {quote(one_line(message, 1024))} {level}"


# -- replies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgiReply:
    code: int
    text: str  # after the code; for a 520, the whole usage text
    result: str | None = None  # 200 only: the value of result=
    data: str | None = None  # 200 only: the text in parentheses

    @property
    def ok(self) -> bool:
        return self.code == 200


class ReplyParser:
    """Reassembles one reply from lines: `HANGUP` lines are noted and skipped, a 520 usage text
    is read to its end. `feed(line)` returns the reply once it is complete, else None."""

    def __init__(self) -> None:
        self.hung_up = False
        self._usage: list[str] | None = None

    def feed(self, line: str) -> AgiReply | None:
        if line == "HANGUP":
            self.hung_up = True
            return None
        if self._usage is not None:
            return self._continue_usage(line)
        match = _REPLY.match(line)
        if match is None:
            raise AgiProtocolError(f"not an AGI reply: {sample(line)!r}")
        code, dash, text = int(match.group(1)), match.group(2), match.group(3)
        if dash == "-":
            self._usage = [text]
            return None
        if code == 100:  # "100 result=0 Trying...": the real reply follows
            return None
        if code == 200:
            result = _RESULT.match(text)
            if result is None:
                return AgiReply(code, text)
            return AgiReply(code, text, result.group(1), result.group(2))
        return AgiReply(code, text)

    def _continue_usage(self, line: str) -> AgiReply | None:
        assert self._usage is not None
        match = _REPLY.match(line)
        if match is not None and match.group(2) == " ":
            self._usage.append(match.group(3))
            reply = AgiReply(int(match.group(1)), "\n".join(self._usage))
            self._usage = None
            return reply
        if len(self._usage) >= MAX_REPLY_LINES:
            raise AgiProtocolError(f"a reply of more than {MAX_REPLY_LINES} lines")
        self._usage.append(line)
        return None
