"""A raw trace of what one Asterisk server sends, for bug reports (`[[asterisk]] trace_dir`).

Each AMI connection's bytes, exactly as the link read them (before parsing), go to files of their
own, `<trace_dir>/<server>-<UTC time>-<n>.ami`, which `cti replay` reads like any capture. Only
what Asterisk sends is traced, never what cti sends: the AMI secret is not in it.

The event loop only hands each chunk to a queue bounded in bytes; one thread per connection
writes the files. When that thread falls behind (a slow or stalled disk), chunks are dropped and
counted rather than slowing the link: the trace has a gap, logged with its place in the file.
A disk error (full, no permission) turns the trace off for that connection, logged once: the
link, the tracker and the daemon go on as if tracing had never been asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cti.ami.parser import MAX_BANNER_BYTES, MAX_FRAME_BYTES
from cti.config import AsteriskServer

# Bytes waiting for the writer thread, per connection, before chunks are dropped: seconds of a
# busy Asterisk's traffic (a few MB/s at most), so a disk that hiccups loses nothing.
QUEUE_BYTES = 16 << 20
_FRAME_END = b"\r\n\r\n"
_UNSAFE = re.compile(r"[^\w.-]")


def file_stem(server: str) -> str:
    """The server's name as it starts its trace files (a name is free text; a file name is not)."""
    return _UNSAFE.sub("_", server) or "_"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True)
class _Gap:
    """Chunks dropped while the writer was behind: where they were missing is logged."""

    chunks: int
    size: int


@dataclass(frozen=True)
class TracePlan:
    """Where one server's traces go, and how much of them is kept."""

    directory: Path
    stem: str
    max_bytes: int
    keep: int

    @classmethod
    def for_server(cls, server: AsteriskServer) -> TracePlan | None:
        if not server.trace_dir:
            return None
        return cls(Path(server.trace_dir), file_stem(server.name), server.trace_max_bytes, server.trace_files)

    def path(self, number: int) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return self.directory / f"{self.stem}-{stamp}-{number:04d}.ami"

    def files(self) -> list[Path]:
        """This server's trace files, oldest first (by their names' time, then number)."""
        pattern = re.compile(rf"^{re.escape(self.stem)}-(\d{{8}}T\d{{6}}Z)-(\d+)\.ami$")
        found = []
        for path in self.directory.iterdir():
            match = pattern.match(path.name)
            if match:
                found.append(((match.group(1), int(match.group(2))), path))
        return [path for _, path in sorted(found)]


class _TraceFiles:
    """The writer thread's side: the connection's current file, cut and rotated by size.

    A file ends at the first message boundary past `max_bytes`, so each one parses on its own;
    the next starts with a copy of the connection's banner line, as `cti replay` expects one."""

    def __init__(self, plan: TracePlan, numbers: Iterator[int]) -> None:
        self.plan = plan
        self._numbers = numbers
        self.path: Path | None = None
        self.size = 0
        self._fd: int | None = None
        # The last 4 bytes written: a message end may straddle two chunks, or end the last one
        # (then the next file starts with the next chunk).
        self._tail = b""
        self._head = b""  # the connection's first bytes, until its banner line is whole
        self.banner: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.banner is None:
            self._note_banner(data)
        if self._fd is None:
            self._open(b"")
        while (cut := self._cut(data)) is not None:
            self._put(data[:cut])
            self._open(self.banner or b"")
            data = data[cut:]
        self._put(data)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _note_banner(self, data: bytes) -> None:
        self._head += data[: MAX_BANNER_BYTES + 2]
        end = self._head.find(b"\r\n")
        if end >= 0:
            self.banner = self._head[: end + 2]
        elif len(self._head) > MAX_BANNER_BYTES:
            self.banner = b""  # not AMI: continuation files start bare
        if self.banner is not None:
            self._head = b""

    def _cut(self, data: bytes) -> int | None:
        """Where in `data` this file ends: after the first message end at or past `max_bytes`
        (it may straddle the previous chunk, or have ended it: 0). None: not in this chunk."""
        need = self.plan.max_bytes - self.size
        tail = self._tail
        at = (tail + data).find(_FRAME_END, max(0, need + len(tail) - len(_FRAME_END)))
        if at >= 0:
            return at + len(_FRAME_END) - len(tail)
        if self.size + len(data) >= self.plan.max_bytes + MAX_FRAME_BYTES:
            # No message end for longer than a message may be: not AMI, cut anyway.
            return max(0, need + MAX_FRAME_BYTES)
        return None

    def _put(self, data: bytes) -> None:
        if not data or self._fd is None:
            return
        _write_all(self._fd, data)
        self.size += len(data)
        self._tail = (self._tail + data)[-len(_FRAME_END) :]

    def _open(self, first: bytes) -> None:
        self.close()
        self.plan.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            path = self.plan.path(next(self._numbers))
            try:
                # 0600 from the start: callers' numbers must never be readable by others, not
                # even for the instant a chmod would come too late.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue  # a daemon restarted within the second: take the next number
            break
        os.fchmod(fd, 0o600)  # whatever the umask
        self._fd, self.path, self.size, self._tail = fd, path, 0, b""
        self._put(first)
        self._prune()

    def _prune(self) -> None:
        for old in self.plan.files()[: -self.plan.keep]:
            with suppress(FileNotFoundError):  # another connection's writer got there first
                old.unlink()


class TraceCounters:
    """Totals over a link's connections, for /metrics."""

    def __init__(self) -> None:
        self.dropped_bytes = 0  # changed on the event loop only
        self.dropped_chunks = 0
        self._errors = 0
        self._lock = threading.Lock()

    @property
    def errors(self) -> int:
        return self._errors

    def error(self) -> None:
        with self._lock:  # writer threads of two connections may fail together
            self._errors += 1


class ConnectionTrace:
    """One connection's trace. `write` and `close` are called on the event loop and never block."""

    def __init__(self, plan: TracePlan, numbers: Iterator[int], counters: TraceCounters, log: Any) -> None:
        self._files = _TraceFiles(plan, numbers)
        self._counters = counters
        self.log = log
        self.limit = QUEUE_BYTES
        self._queue: queue.SimpleQueue[bytes | _Gap | None] = queue.SimpleQueue()
        # Each counted by one side only (queued: the loop; written: the thread): no lock needed.
        self._queued = 0
        self._written = 0
        self._burst: _Gap | None = None
        self._closed = False
        self.failed = False  # set by the thread on a disk error
        loop = asyncio.get_running_loop()
        # Done once the thread has ended (its file closed), whatever the reason.
        self.finished: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name=f"ami-trace:{plan.stem}", daemon=True
        )
        self._thread.start()

    @property
    def path(self) -> Path | None:
        """The file being written (None before the first byte)."""
        return self._files.path

    def write(self, data: bytes) -> None:
        if self._closed or self.failed:
            return
        if self._queued - self._written + len(data) > self.limit:
            self._drop(len(data))
            return
        if self._burst is not None:
            self._queue.put(self._burst)  # the writer logs where the gap falls in the file
            self._burst = None
        self._queued += len(data)
        self._queue.put(data)

    def close(self) -> None:
        """No more bytes: the thread writes what is queued, closes the file and ends."""
        if self._closed:
            return
        self._closed = True
        if self._burst is not None:
            self._queue.put(self._burst)
            self._burst = None
        self._queue.put(None)

    def _drop(self, size: int) -> None:
        self._counters.dropped_bytes += size
        self._counters.dropped_chunks += 1
        if self._burst is None:
            # Once per burst: the reader must not pay a log line per chunk while the disk is slow.
            self.log.warning(
                "AMI trace behind the link: dropping bytes, the trace will have a gap",
                file=str(self.path),
                waiting_bytes=self._queued - self._written,
            )
            self._burst = _Gap(0, 0)
        self._burst = _Gap(self._burst.chunks + 1, self._burst.size + size)

    # ----- the writer thread -----

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._write_queued()
        except OSError as exc:
            self.failed = True
            self._counters.error()
            self.log.error(
                "AMI trace cannot be written: tracing off for this connection (the link goes on)",
                directory=str(self._files.plan.directory),
                file=str(self.path),
                error=str(exc) or type(exc).__name__,
            )
        except Exception:
            self.failed = True  # a bug of ours: the trace stops, never the link
            self._counters.error()
            self.log.exception("AMI trace writer failed: tracing off for this connection")
        finally:
            with suppress(OSError):
                self._files.close()
            with suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(_settle, self.finished)

    def _write_queued(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, _Gap):
                self.log.info(
                    "AMI trace gap: bytes dropped here",
                    file=str(self.path),
                    at_byte=self._files.size,
                    dropped_bytes=item.size,
                    dropped_chunks=item.chunks,
                )
                continue
            self._files.write(item)
            self._written += len(item)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AmiTrace:
    """One server's tracing: a `ConnectionTrace` per connection, numbered files, shared totals."""

    def __init__(self, plan: TracePlan, log: Any) -> None:
        self.plan = plan
        self.log = log.bind(trace_dir=str(plan.directory))
        self.counters = TraceCounters()
        self._numbers = itertools.count(1)  # next() is atomic: the writer threads share it
        self._live: set[ConnectionTrace] = set()

    @classmethod
    def for_server(cls, server: AsteriskServer, log: Any) -> AmiTrace | None:
        plan = TracePlan.for_server(server)
        return None if plan is None else cls(plan, log)

    def connection(self) -> ConnectionTrace:
        trace = ConnectionTrace(self.plan, self._numbers, self.counters, self.log)
        self._live = {t for t in self._live if not t.finished.done()} | {trace}
        return trace

    async def wait_closed(self, timeout: float) -> None:  # noqa: ASYNC109 - a bounded wait, not a deadline
        """Let the writers of closed connections finish (bounded: a stalled disk cannot hold
        up the daemon's shutdown; their threads are daemon threads)."""
        live, self._live = self._live, set()
        for trace in live:
            trace.close()
        if live:
            await asyncio.wait([t.finished for t in live], timeout=timeout)
