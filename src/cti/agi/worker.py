"""The FastAGI caller lookup in a process of its own, started and watched by `cti serve`.

Why a process: Asterisk's channel thread waits, in the inbound dialplan, for the lookup's last
reply before the caller hears the first menu, and the daemon's event loop is busy with
everything else (the AMI reader, the call writer's batches, statistics, desktops): on the real
PBX, an answer that waited behind a few milliseconds of that work made the lookup's tail (docs/
benchmarks.md). The worker has its own interpreter, event loop and connection to the customer
directory, and nothing else to do.

What crosses the process boundary (a `multiprocessing` pipe, the child spawned, not forked: a
fork of a running event loop with threads and database connections is unsafe):

- parent → child: `("stop", grace_s)` (finish sessions in progress, then exit) and
  `("forget",)` (a customer changed: no answer shared from before it; `CustomerDirectory`);
- child → parent: `("listening", addresses)` or `("failed", reason)` once, at start; then
  `("counters", {...})` a moment after sessions end, for the metrics
  (`cti_agi_sessions_total`...), which the parent serves as if the server were its own.

The worker exits when its parent does (the pipe reads end-of-file: a `kill -9` of the daemon
must not leave the port taken, or the daemon restarted after it could not listen); it ignores
SIGINT (a Ctrl-C in a terminal reaches the whole process group, and the daemon stops it in
order: calls in the IVR get their answer) and stops on SIGTERM as on `("stop", 1.0)`. When it
dies anyway, the parent logs it and starts another (back-off from 1 to 30 s); meanwhile
Asterisk's connections are refused and the dialplan goes on without the lookup.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import structlog

from cti.config import Settings
from cti.latency import LatencyHistogram

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 60.0  # a cold interpreter, phonenumbers' metadata and the directory's connection
COUNTERS_EVERY_S = 0.05  # counters follow a session's end by about this much
RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0
STOP_MARGIN_S = 5.0  # past the sessions' grace, the worker is killed


@dataclass
class ProblemCounts:
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class LookupCounts:
    """The worker's `MeasuredLookup` counters, as the metrics read them."""

    outcomes: Counter[str] = field(default_factory=Counter)
    histogram: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(()))


class AgiWorker:
    """The parent's handle: starts the worker, restarts it if it dies, stops it, and holds its
    latest counters (`sessions_served`, `active`, `problems`, `lookup`) for the metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.addresses: list[tuple[str, int]] = []
        self.sessions_served = 0
        self.active = 0
        self.problems = ProblemCounts()
        self.lookup = LookupCounts()
        self.restarts = 0
        self._base = _Counters()  # what workers that died had counted: the series never go back
        self._latest = _Counters()
        # A worker started again listens where the first one did (even when settings said 0).
        self._port = settings.agi.port
        self._process: Any = None
        self._conn: Connection | None = None
        self._started: asyncio.Future[list[tuple[str, int]]] | None = None
        self._gone: asyncio.Event = asyncio.Event()
        self._closing = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    async def start(self) -> None:
        """Start the worker and wait until it listens; raises OSError when it cannot."""
        self.addresses = await self._spawn()
        self._port = self.port
        self._watch = asyncio.get_running_loop().create_task(self._supervise(), name="fastagi-worker")

    async def _spawn(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=worker_main, args=(self.settings, child, self._port), name="cti-fastagi", daemon=True
        )
        process.start()
        child.close()  # only the worker holds it now: its death reads as end-of-file here
        self._process, self._conn = process, parent
        self._gone = asyncio.Event()
        self._started = loop.create_future()
        loop.add_reader(parent.fileno(), self._readable)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                return await self._started
        except BaseException:
            await self._reap(kill=True)
            raise

    def _readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            message = conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            self._gone.set()
            if self._started is not None and not self._started.done():
                self._started.set_exception(OSError("the FastAGI worker exited before listening"))
            return
        kind = message[0]
        if kind == "counters":
            self._take(_Counters.from_wire(message[1]))
        elif kind == "listening" and self._started is not None and not self._started.done():
            self._started.set_result([tuple(address) for address in message[1]])
        elif kind == "failed" and self._started is not None and not self._started.done():
            self._started.set_exception(OSError(message[1]))

    def _take(self, latest: _Counters) -> None:
        total = self._base.plus(latest)
        self.sessions_served, self.active = total.served, latest.active
        self.problems.counts = dict(total.problems)
        self.lookup.outcomes = Counter(total.outcomes)
        self.lookup.histogram = total.histogram
        self._latest = latest

    async def _supervise(self) -> None:
        delay = RESTART_MIN_S
        while True:
            await self._gone.wait()
            if self._closing:
                return
            code = await self._reap(kill=False)
            self._base = self._base.plus(self._latest)
            self._latest = _Counters()
            self.active = 0
            log.error("FastAGI worker died: caller lookups are refused until it is back", exitcode=code)
            while True:
                await asyncio.sleep(delay)
                if self._stopped():
                    return
                try:
                    self.addresses = await self._spawn()
                except OSError as exc:
                    log.error("FastAGI worker could not start again", error=str(exc), retry_s=delay)
                    delay = min(delay * 2, RESTART_MAX_S)
                    continue
                self.restarts += 1
                log.info("FastAGI worker started again", addresses=[f"{h}:{p}" for h, p in self.addresses])
                delay = RESTART_MIN_S
                break

    def _stopped(self) -> bool:
        return self._closing  # read after an await: close() may have run meanwhile

    def forget(self) -> None:
        """A customer changed: the worker's directory shares no answer from before."""
        self._send(("forget",))

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._conn is not None and not self._gone.is_set():
            with suppress(OSError, ValueError):
                self._conn.send(message)

    async def close(self, grace_s: float = 1.0) -> None:
        """Sessions in progress get `grace_s` to finish; then the worker exits (or is killed)."""
        self._closing = True
        self._send(("stop", grace_s))
        with suppress(TimeoutError):
            async with asyncio.timeout(grace_s + STOP_MARGIN_S):
                await self._gone.wait()
        await self._reap(kill=not self._gone.is_set())
        if self._watch is not None:
            self._watch.cancel()
            with suppress(asyncio.CancelledError):
                await self._watch

    async def _reap(self, kill: bool) -> int | None:
        process, conn = self._process, self._conn
        if conn is not None:
            with suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            conn.close()
            self._conn = None
        if process is None:
            return None
        if kill and process.is_alive():
            process.kill()
        await asyncio.to_thread(process.join, STOP_MARGIN_S)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, STOP_MARGIN_S)
        code = process.exitcode
        process.close()
        self._process = None
        return int(code) if code is not None else None


@dataclass
class _Counters:
    served: int = 0
    active: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    histogram: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(()))

    def to_wire(self) -> dict[str, Any]:
        h = self.histogram
        return {
            "served": self.served,
            "active": self.active,
            "problems": dict(self.problems),
            "outcomes": dict(self.outcomes),
            "bounds": list(h.bounds),
            "counts": list(h.counts),
            "sum": h.sum,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> _Counters:
        histogram = LatencyHistogram(wire["bounds"])
        histogram.counts = list(wire["counts"])
        histogram.sum = float(wire["sum"])
        histogram.count = sum(histogram.counts)
        return cls(
            int(wire["served"]),
            int(wire["active"]),
            Counter(wire["problems"]),
            Counter(wire["outcomes"]),
            histogram,
        )

    def plus(self, other: _Counters) -> _Counters:
        bounds: Sequence[float] = other.histogram.bounds or self.histogram.bounds
        histogram = LatencyHistogram(bounds)
        for part in (self.histogram, other.histogram):
            if part.bounds == histogram.bounds:
                histogram.counts = [a + b for a, b in zip(histogram.counts, part.counts, strict=True)]
                histogram.sum += part.sum
                histogram.count += part.count
        return _Counters(
            self.served + other.served,
            other.active,
            self.problems + other.problems,
            self.outcomes + other.outcomes,
            histogram,
        )


# -- the worker process -----------------------------------------------------------------------


def worker_main(settings: Settings, conn: Connection, port: int) -> None:
    """The worker's entry point (spawned by `AgiWorker`)."""
    from cti.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon stops us in order
    configure_logging(settings.log.level, settings.log.format, settings.secrets())
    structlog.contextvars.bind_contextvars(process="fastagi")
    if settings.agi.realtime:
        _ask_realtime()
    try:
        asyncio.run(_serve(settings, conn, port))
    finally:
        conn.close()


# SCHED_RR at this priority: above every normal process, below Asterisk's own threads when it
# runs with `highpriority = yes` (asterisk.conf; SCHED_RR 10), whose media must not wait for us.
REALTIME_PRIORITY = 5


def _ask_realtime() -> None:
    """On a busy host the lookup's tail was the scheduler's: the worker woken by Asterisk's
    connection waited its turn behind whatever ran (docs/benchmarks.md). The worker's own CPU
    per session is a fraction of a millisecond, and every session is bounded in time."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(REALTIME_PRIORITY))
    except (PermissionError, OSError, AttributeError) as exc:
        log.warning(
            "FastAGI worker at normal priority: real-time scheduling refused "
            "(give cti CAP_SYS_NICE, or set [agi] realtime = false)",
            error=str(exc),
        )
    else:
        log.debug("FastAGI worker at real-time priority", policy="SCHED_RR", priority=REALTIME_PRIORITY)


async def _serve(settings: Settings, conn: Connection, port: int) -> None:
    import phonenumbers

    from cti.agi.lookup import MeasuredLookup
    from cti.agi.server import FastAgiServer
    from cti.db.engine import create_engine
    from cti.directory.lookup import CustomerDirectory

    loop = asyncio.get_running_loop()
    # phonenumbers loads each country's metadata on first use (a second or more): not on a call.
    await asyncio.to_thread(phonenumbers.PhoneMetadata.load_all)
    engine = create_engine(settings.database.url)
    # The worker's loop has nothing else to do: SQLite is read on it, not in a thread.
    directory = CustomerDirectory.from_settings(engine, settings.directory, sqlite_inline=True)
    agi = settings.agi
    lookup = MeasuredLookup(directory, settings.directory.region, agi.timeout_s)
    server = FastAgiServer(
        {"lookup": lookup}, session_timeout_s=agi.session_timeout_s, max_sessions=agi.max_sessions
    )
    try:
        await server.start(agi.host, port)
    except OSError as exc:
        conn.send(("failed", f"FastAGI cannot listen on {agi.host}:{port}: {exc}"))
        await directory.close()
        await engine.dispose()
        return
    conn.send(("listening", server.addresses))
    stopping = asyncio.Event()
    grace = [1.0]

    def readable() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the daemon is gone: so are we
            loop.remove_reader(conn.fileno())
            grace[0] = 0.0
            stopping.set()
            return
        if message[0] == "stop":
            grace[0] = float(message[1])
            stopping.set()
        elif message[0] == "forget":
            directory.forget_lookups()

    loop.add_reader(conn.fileno(), readable)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    reporter = loop.create_task(_report(server, lookup, conn), name="fastagi-counters")
    try:
        await stopping.wait()
        await server.close(grace[0])
    finally:
        reporter.cancel()
        with suppress(asyncio.CancelledError):
            await reporter
        _send_counters(server, lookup, conn)
        await directory.close()
        await engine.dispose()


async def _report(server: Any, lookup: Any, conn: Connection) -> None:
    """The counters, a moment after they change (several sessions' ends in one message)."""
    sent = (-1, -1)
    while True:
        await asyncio.sleep(COUNTERS_EVERY_S)
        now = (server.sessions_served, server.active)
        if now != sent:
            _send_counters(server, lookup, conn)
            sent = now


def _send_counters(server: Any, lookup: Any, conn: Connection) -> None:
    problems: Counter[str] = Counter()
    for kind, count in server.problems.counts.items():
        problems[kind.split(":", 1)[0]] += count  # the metric's label: "route", not the script's error
    counters = _Counters(
        server.sessions_served, server.active, problems, Counter(lookup.outcomes), lookup.histogram
    )
    with suppress(OSError, ValueError):
        conn.send(("counters", counters.to_wire()))
