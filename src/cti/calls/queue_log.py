"""Asterisk's queue_log: `epoch|callid|queue|agent|verb|data1|data2|...`, one line per queue fact.

Read after an AMI reconnect to learn how the calls that ended during the gap really ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class QueueLogEntry:
    at: float
    callid: str
    queue: str
    agent: str | None
    verb: str
    fields: tuple[str, ...]

    def data(self, index: int) -> str | None:
        return self.fields[index] if index < len(self.fields) else None


def parse_line(line: str) -> QueueLogEntry | None:
    parts = line.rstrip("\r\n").split("|")
    if len(parts) < 5:
        return None
    try:
        at = float(parts[0])
    except ValueError:
        return None
    callid, queue, agent, verb = parts[1], parts[2], parts[3], parts[4]
    if callid in ("", "NONE") or queue in ("", "NONE"):
        return None  # member-level lines (ADDMEMBER, PAUSE, QUEUESTART...) are not call facts
    return QueueLogEntry(at, callid, queue, None if agent in ("", "NONE") else agent, verb, tuple(parts[5:]))


def parse_lines(lines: Iterable[str], since: float | None = None) -> Iterator[QueueLogEntry]:
    for line in lines:
        entry = parse_line(line)
        if entry is not None and (since is None or entry.at >= since):
            yield entry


def read_since(path: str | Path, since: float, max_bytes: int = 64 << 20) -> list[QueueLogEntry]:
    """Entries at or after `since` (epoch seconds). Reads at most the last `max_bytes` of the file,
    which covers any realistic outage without scanning a year of history."""
    file = Path(path)
    with file.open("rb") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - max_bytes)
        handle.seek(start)
        raw = handle.read()
    if start:
        raw = raw.split(b"\n", 1)[-1]
    # The whole queue_log is whole-second precise; one second of margin catches boundary lines.
    return list(parse_lines(raw.decode("utf-8", "replace").splitlines(), since - 1.0))
