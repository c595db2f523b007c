"""Live statistics after a restart: how long the stats service takes to rebuild a busy day from
the database, and the longest the event loop waited meanwhile (what a screen pop arriving during
the rebuild would have waited).

A day of a large site (default 20,000 calls, 100 agents) is written through the daemon's own
writers (`CallStore.save`, `save_spans`: rows exactly as production stores them) into SQLite and
a throwaway PostgreSQL database; then a `StatsService` starts on it, as `cti serve` does, and
the time until its figures are ready is measured while a probe sleeps 1 ms at a time and
records how late it wakes, and every loop step is timed (wall and CPU).

    python benchmarks/stats_rebuild.py [--calls 20000] [--agents 100] [--repeat 3]
                                       [--pg-admin URL] [--skip-sqlite] [--skip-pg] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from cti import gc_policy
from cti.calls.records import CallRecord, IvrStep, QueueSegment
from cti.db.calls_store import CallStore
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.stats.agents import Span
from cti.stats.service import StatsService
from cti.stats.store import save_spans

TZ = "Europe/Paris"
DAY_START = datetime(2026, 11, 23, 8, 0, tzinfo=ZoneInfo(TZ)).timestamp()
DAY_S = 11 * 3600  # 08:00-19:00
NOW = DAY_START + DAY_S + 600
QUEUES = ("support", "sales", "billing", "hotline")


def day_of_calls(n_calls: int, n_agents: int, seed: int = 5) -> tuple[list[CallRecord], list[Span]]:
    """A day's calls (inbound through an IVR, 15 % campaign calls) and the agents' spans."""
    r = random.Random(seed)
    calls: list[CallRecord] = []
    busy: dict[int, list[tuple[float, float, float, str]]] = {a: [] for a in range(n_agents)}
    for i in range(n_calls):
        start = DAY_START + DAY_S * i / n_calls
        outbound = r.random() < 0.15
        record = CallRecord("pbx1", f"{int(start)}.{i}", "outbound" if outbound else "inbound", start)
        if outbound:
            record.campaign, record.outcome = "c1", "outbound_no_answer"
        else:
            record.ivr_path = [
                IvrStep(start + 0.5, "main", "enter", "enter"),
                IvrStep(start + 4, "main", "choice", r.choice("1245")),
            ]
        joined = start + 5
        if outbound and r.random() < 0.6:
            record.ended_at = start + 25
            calls.append(record)
            continue
        queue = "outbound" if outbound else r.choice(QUEUES)
        wait = r.expovariate(1 / 20)
        roll = r.random()
        segment = QueueSegment(queue, joined, joined + wait, wait_s=round(wait, 3), position=1)
        if roll < 0.85:
            agent = r.randrange(n_agents)
            talk = r.expovariate(1 / 180)
            segment.outcome, segment.agent, segment.interface = "answered", f"Agent{agent}", f"PJSIP/{agent}"
            segment.ring_s, segment.talk_s, segment.completed_by = 2.0, round(talk, 3), "caller"
            record.answered_at, record.talk_s = joined + wait, talk
            busy[agent].append((joined + wait - 2, joined + wait, joined + wait + talk, queue))
            record.outcome = "outbound_answered" if outbound else "answered"
            if outbound:
                record.contact = "C1"
        else:
            segment.outcome = "abandoned" if roll < 0.96 else "timeout"
            record.outcome = segment.outcome
        record.segments.append(segment)
        record.wait_s = segment.wait_s
        record.ended_at = joined + wait + (segment.talk_s or 0.5)
        calls.append(record)
    return calls, agent_spans(busy, r)


def agent_spans(busy: dict[int, list[tuple[float, float, float, str]]], r: random.Random) -> list[Span]:
    spans: list[Span] = []
    for agent, rings in busy.items():
        interface, name = f"PJSIP/{agent}", f"Agent{agent}"
        at = DAY_START

        def span(
            state: str,
            end: float,
            queue: str | None = None,
            reason: str | None = None,
            interface: str = interface,
            name: str = name,
        ) -> None:
            nonlocal at
            if end > at:
                spans.append(Span("pbx1", interface, name, state, reason, queue, at, end))
                at = end

        for ring, answer, hangup, queue in sorted(rings):
            if ring < at:  # overlapping in this synthetic day: skip the call's states
                continue
            if r.random() < 0.05:
                span("paused", ring - 1, reason="pause")
            span("available", ring)
            span("ringing", answer, queue)
            span("acd", hangup, queue)
            span("wrapup", hangup + 10, queue)
        span("available", DAY_START + DAY_S)
    return spans


async def fill(engine: AsyncEngine, calls: list[CallRecord], spans: list[Span]) -> None:
    await upgrade_async(engine)
    store = CallStore(engine)
    for i in range(0, len(calls), 1000):
        await store.save(calls[i : i + 1000])
    for i in range(0, len(spans), 5000):
        await save_spans(engine, spans[i : i + 5000])


async def probe(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 1 ms sleep wakes up: the longest step the loop took meanwhile."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append((time.perf_counter() - before) * 1000 - 1.0)


class StepTimer:
    """Times every callback the loop runs (wall and this thread's CPU): the longest step is what
    a screen pop arriving then waits at worst; CPU apart from wall tells the loop's own work from
    the machine's (another process, the database server, a thread holding the GIL)."""

    def __init__(self) -> None:
        self.longest = (0.0, 0.0)  # wall, CPU (ms)
        self.longest_cpu = 0.0
        self.longest_gc = (0.0, -1)  # ms, generation
        self._run = asyncio.events.Handle._run
        self._gc_started = 0.0

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = (time.perf_counter() - self._gc_started) * 1000
            if pause > self.longest_gc[0]:
                self.longest_gc = (pause, info["generation"])

    def __enter__(self) -> StepTimer:
        timer, run = self, self._run

        def timed(handle: asyncio.events.Handle) -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            run(handle)
            wall, cpu = (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000
            if wall > timer.longest[0]:
                timer.longest = (wall, cpu)
            timer.longest_cpu = max(timer.longest_cpu, cpu)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.events.Handle._run = self._run  # type: ignore[method-assign]
        gc.callbacks.remove(self._gc)


async def rebuild_once(engine: AsyncEngine) -> dict[str, Any]:
    samples: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(probe(samples, stop))
    await asyncio.sleep(0.01)
    service = StatsService(engine, None, tz=TZ, clock=lambda: NOW)
    with StepTimer() as steps:
        started = time.perf_counter()
        service.start()
        ready = await service.wait_ready(600)
        elapsed = time.perf_counter() - started
    stop.set()
    await watcher
    assert ready and service.restored is not None
    presented = sum(q["presented"] for q in service.live.floor(NOW)["queues"])
    await service.close()
    samples.sort()
    return {
        "seconds": round(elapsed, 3),
        "calls": service.restored.calls,
        "span_groups": service.restored.span_groups,
        "presented": presented,
        "lag_p99_ms": round(samples[int(len(samples) * 0.99)], 2),
        "lag_max_ms": round(samples[-1], 2),
        "longest_step_ms": round(steps.longest[0], 2),
        "longest_step_cpu_ms": round(steps.longest[1], 2),
        "most_cpu_step_ms": round(steps.longest_cpu, 2),
        "longest_gc_ms": round(steps.longest_gc[0], 2),
        "longest_gc_generation": steps.longest_gc[1],
    }


async def idle_lag(seconds: float) -> dict[str, float]:
    """The probe on an idle loop for as long: this machine's own noise."""
    samples: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(probe(samples, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await watcher
    samples.sort()
    return {"lag_p99_ms": round(samples[int(len(samples) * 0.99)], 2), "lag_max_ms": round(samples[-1], 2)}


async def bench(
    url: str, label: str, calls: list[CallRecord], spans: list[Span], repeat: int
) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        await fill(engine, calls, spans)
        fill_s = time.perf_counter() - started
        runs = [await rebuild_once(engine) for _ in range(repeat)]
    finally:
        await engine.dispose()
    seconds = statistics.median(r["seconds"] for r in runs)
    return {
        "database": label,
        "calls": len(calls),
        "spans": len(spans),
        "fill_s": round(fill_s, 1),
        "rebuild_s_median": seconds,
        "lag_max_ms": max(r["lag_max_ms"] for r in runs),
        "lag_p99_ms": max(r["lag_p99_ms"] for r in runs),
        "longest_step_ms": max(r["longest_step_ms"] for r in runs),
        "most_cpu_step_ms": max(r["most_cpu_step_ms"] for r in runs),
        "longest_gc_ms": max(r["longest_gc_ms"] for r in runs),
        "idle": await idle_lag(seconds),
        "runs": runs,
    }


async def bench_pg(admin_url: str, calls: list[CallRecord], spans: list[Span], repeat: int) -> dict[str, Any]:
    import asyncpg

    name = f"cti_rebuild_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        return await bench(url, "postgresql", calls, spans, repeat)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from cti.logs import configure_logging

    configure_logging("error", "json")
    calls, spans = day_of_calls(args.calls, args.agents)
    gc_policy.after_startup()  # as `cti serve` does at the end of its start
    results = []
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "cti.db"
            results.append(await bench(f"sqlite+aiosqlite:///{db}", "sqlite", calls, spans, args.repeat))
    if not args.skip_pg:
        results.append(await bench_pg(args.pg_admin, calls, spans, args.repeat))
    for result in results:
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"{result['database']:>10}: {result['calls']} calls, {result['spans']} spans: rebuilt in "
                f"{result['rebuild_s_median']} s (median of {len(result['runs'])}), loop lag "
                f"p99 {result['lag_p99_ms']} ms, max {result['lag_max_ms']} ms; longest step "
                f"{result['longest_step_ms']} ms, most CPU in one step {result['most_cpu_step_ms']} ms, "
                f"longest GC pass {result['longest_gc_ms']} ms "
                f"(idle loop: p99 "
                f"{result['idle']['lag_p99_ms']} ms, max {result['idle']['lag_max_ms']} ms; "
                f"fill {result['fill_s']} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
