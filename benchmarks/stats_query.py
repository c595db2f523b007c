"""Historical statistics on a year of traffic: 1,000,000 calls (+ queue segments and agent-state
spans) generated straight into SQLite and PostgreSQL, then the reports of `cti stats` timed.

The data goes in through the driver's bulk path (SQLite: one `executemany` transaction;
PostgreSQL: `COPY`), into a schema built by our own migrations, so the indexes the reports use
are the production ones. The reports are the ones `/api/stats/...` and `cti stats` run.

    python benchmarks/stats_query.py [--calls 1000000] [--sqlite FILE] [--pg-admin URL]
                                     [--skip-sqlite] [--skip-pg] [--repeat 5] [--json]

PostgreSQL: a throwaway database is created through `--pg-admin` (default
postgresql://postgres@127.0.0.1:5432/test) and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.stats.history import REPORTS, ReportQuery, build_query

TZ = ZoneInfo("Europe/Paris")
YEAR_START = datetime(2025, 1, 1, tzinfo=TZ)
QUEUES = ("support", "sales", "billing", "hotline", "outbound")
AGENTS = tuple(f"Agent{i}" for i in range(1, 21))
CHUNK = 20_000
SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"


@dataclass
class Batch:
    calls: list[tuple[Any, ...]]
    segments: list[tuple[Any, ...]]


class Traffic:
    """A deterministic year of calls: office hours, inbound through an IVR, some outbound."""

    def __init__(self, n_calls: int, seed: int = 7) -> None:
        self.n = n_calls
        self.rnd = random.Random(seed)
        self.day_seconds = 12 * 3600  # 08:00-20:00 local
        self.per_day = n_calls / 365

    def _start(self, i: int) -> datetime:
        day = int(i / self.per_day)
        local = YEAR_START + timedelta(days=day)
        local = datetime(local.year, local.month, local.day, 8, tzinfo=TZ)
        return (local + timedelta(seconds=self.rnd.random() * self.day_seconds)).astimezone(UTC)

    def batches(self) -> Iterator[Batch]:
        seg_id = 0
        for first in range(0, self.n, CHUNK):
            batch = Batch([], [])
            for i in range(first, min(first + CHUNK, self.n)):
                seg_id = self._call(i + 1, batch, seg_id)
            yield batch

    def _call(self, call_id: int, batch: Batch, seg_id: int) -> int:
        r = self.rnd
        start = self._start(call_id - 1)
        if r.random() < 0.15:
            return self._outbound(call_id, start, batch, seg_id)
        ivr = [{"at": start.timestamp() + 0.5, "menu": "main", "kind": "enter", "value": "enter"}]
        choice = r.choice("1111222244593")
        kind = "choice" if choice in "1245" else ("invalid" if choice == "9" else "choice")
        ivr.append({"at": start.timestamp() + 3, "menu": "main", "kind": kind, "value": choice})
        if choice in ("3", "9"):
            end = start + timedelta(seconds=8 + r.random() * 20)
            row = self._row(call_id, "inbound", start, end, "ivr_only", r.choice(("system", "caller")), ivr)
            batch.calls.append(row)
            return seg_id
        queue = {"1": "support", "2": "sales", "4": "billing", "5": "hotline"}[choice]
        joined = start + timedelta(seconds=3)
        wait = r.expovariate(1 / 25)
        roll = r.random()
        outcome = "answered" if roll < 0.85 else ("abandoned" if roll < 0.96 else "timeout")
        agent = r.choice(AGENTS) if outcome == "answered" else None
        talk = r.expovariate(1 / 180) if agent else None
        left = joined + timedelta(seconds=wait)
        end = left + timedelta(seconds=talk or 0.5)
        seg_id += 1
        batch.segments.append(
            (seg_id, call_id, 0, queue, joined, left, outcome, agent,
             f"Local/{agent.lower()}@agents/n" if agent else None, round(wait, 3),
             2.0 if agent else None, round(talk, 3) if talk else None,
             r.choice(("caller", "agent")) if agent else None, 1, 1, 0)
        )  # fmt: skip
        row = self._row(
            call_id, "inbound", start, end, outcome, "caller", ivr, queue, agent, wait, talk, left
        )
        batch.calls.append(row)
        return seg_id

    def _outbound(self, call_id: int, start: datetime, batch: Batch, seg_id: int) -> int:
        r = self.rnd
        roll = r.random()
        if roll > 0.4:
            outcome = r.choice(("outbound_busy", "outbound_no_answer", "outbound_congestion"))
            end = start + timedelta(seconds=20)
            batch.calls.append(
                self._row(call_id, "outbound", start, end, outcome, "system", [], campaign="c1")
            )
            return seg_id
        wait = r.random() * 4
        talk = r.expovariate(1 / 120)
        joined = start + timedelta(seconds=5)
        left = joined + timedelta(seconds=wait)
        end = left + timedelta(seconds=talk)
        agent = r.choice(AGENTS)
        seg_id += 1
        batch.segments.append(
            (seg_id, call_id, 0, "outbound", joined, left, "answered", agent,
             f"Local/{agent.lower()}@agents/n", round(wait, 3), 1.0, round(talk, 3), "caller", 1, 1, 0)
        )  # fmt: skip
        batch.calls.append(
            self._row(
                call_id, "outbound", start, end, "outbound_answered", "caller", [], "outbound", agent,
                wait, talk, left, campaign=r.choice(("c1", "c2")),
            )
        )  # fmt: skip
        return seg_id

    @staticmethod
    def _row(
        call_id: int,
        direction: str,
        start: datetime,
        end: datetime,
        outcome: str,
        hangup_by: str,
        ivr: list[dict[str, Any]],
        queue: str | None = None,
        agent: str | None = None,
        wait: float | None = None,
        talk: float | None = None,
        answered: datetime | None = None,
        campaign: str | None = None,
    ) -> tuple[Any, ...]:
        return (
            call_id, "pbx1", f"{int(start.timestamp())}.{call_id}", direction, start, end,
            answered if agent else None, "+33612345678", "+33612345678", None, None, outcome, hangup_by,
            16, queue, agent, f"Local/{agent.lower()}@agents/n" if agent else None,
            None if wait is None else round(wait, 3), 2.0 if agent else None,
            None if talk is None else round(talk, 3), 0, "[]", None, campaign, None, "events",
            json.dumps(ivr),
        )  # fmt: skip


CALL_COLUMNS = (
    "id", "server", "linkedid", "direction", "started_at", "ended_at", "answered_at", "caller_raw",
    "caller_e164", "caller_name", "called", "outcome", "hangup_by", "hangup_cause", "queue", "agent",
    "agent_interface", "wait_s", "ring_s", "talk_s", "transfers", "transferred_to", "originate_reason",
    "campaign", "contact", "closed_by", "ivr_path",
)  # fmt: skip
SEGMENT_COLUMNS = (
    "id", "call_id", "seq", "queue", "joined_at", "left_at", "outcome", "agent", "interface", "wait_s",
    "ring_s", "talk_s", "completed_by", "position", "ring_attempts", "ring_no_answer",
)  # fmt: skip
SPAN_COLUMNS = (
    "id", "server", "interface", "agent", "state", "reason", "queue", "started_at", "ended_at", "duration_s",
)  # fmt: skip


def spans(seed: int = 11) -> Iterator[list[tuple[Any, ...]]]:
    """Every agent, every office quarter hour of the year: a few states summing to 900 s."""
    r = random.Random(seed)
    span_id = 0
    batch: list[tuple[Any, ...]] = []
    for day in range(365):
        local = YEAR_START + timedelta(days=day)
        base = datetime(local.year, local.month, local.day, 8, tzinfo=TZ).astimezone(UTC)
        for quarter in range(48):
            q_start = base + timedelta(seconds=900 * quarter)
            for agent in AGENTS:
                cut = sorted(r.random() * 900 for _ in range(3))
                parts = zip(("available", "acd", "wrapup", "paused"), [0.0, *cut], [*cut, 900.0], strict=True)
                for state, a, b in parts:
                    span_id += 1
                    reason = "lunch" if state == "paused" else None
                    queue = "support" if state in ("acd", "wrapup") else None
                    batch.append(
                        (span_id, "pbx1", f"Local/{agent.lower()}@agents/n", agent, state, reason, queue,
                         q_start + timedelta(seconds=a), q_start + timedelta(seconds=b), round(b - a, 3))
                    )  # fmt: skip
                if len(batch) >= CHUNK:
                    yield batch
                    batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------ loading
def _sqlite_value(v: Any) -> Any:
    return v.astimezone(UTC).strftime(SQLITE_TS) if isinstance(v, datetime) else v


def load_sqlite(path: Path, n_calls: int) -> dict[str, float]:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=WAL")
    started = time.perf_counter()
    counts = {"calls": 0, "segments": 0, "spans": 0}
    with conn:
        for batch in Traffic(n_calls).batches():
            conn.executemany(
                _insert("calls", CALL_COLUMNS), [tuple(map(_sqlite_value, c)) for c in batch.calls]
            )
            conn.executemany(
                _insert("call_segments", SEGMENT_COLUMNS),
                [tuple(map(_sqlite_value, s)) for s in batch.segments],
            )
            counts["calls"] += len(batch.calls)
            counts["segments"] += len(batch.segments)
        for rows in spans():
            conn.executemany(
                _insert("agent_state_spans", SPAN_COLUMNS), [tuple(map(_sqlite_value, s)) for s in rows]
            )
            counts["spans"] += len(rows)
    conn.execute("ANALYZE")
    conn.close()
    return {**counts, "load_s": round(time.perf_counter() - started, 1)}


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


async def load_pg(url: str, n_calls: int) -> dict[str, float]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    started = time.perf_counter()
    counts = {"calls": 0, "segments": 0, "spans": 0}
    try:
        for batch in Traffic(n_calls).batches():
            await conn.copy_records_to_table("calls", records=batch.calls, columns=list(CALL_COLUMNS))
            await conn.copy_records_to_table(
                "call_segments", records=batch.segments, columns=list(SEGMENT_COLUMNS)
            )
            counts["calls"] += len(batch.calls)
            counts["segments"] += len(batch.segments)
        for rows in spans():
            await conn.copy_records_to_table("agent_state_spans", records=rows, columns=list(SPAN_COLUMNS))
            counts["spans"] += len(rows)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return {**counts, "load_s": round(time.perf_counter() - started, 1)}


# ------------------------------------------------------------------------ timing
CASES: tuple[tuple[str, str, str, str, str], ...] = (
    # (label, report, from, to, interval)
    ("queues: a day by hour", "queues", "2025-06-17", "2025-06-17", "hour"),
    ("agents: a day by hour", "agents", "2025-06-17", "2025-06-17", "hour"),
    ("ivr: a day by hour", "ivr", "2025-06-17", "2025-06-17", "hour"),
    ("outbound: a day by hour", "outbound", "2025-06-17", "2025-06-17", "hour"),
    ("queues: a day by 15 min", "queues", "2025-06-17", "2025-06-17", "15m"),
    ("queues: a month by day", "queues", "2025-06-01", "2025-06-30", "day"),
    ("queues: the year by day", "queues", "2025-01-01", "2025-12-31", "day"),
)


async def _time(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float, Any]:
    first_start = time.perf_counter()
    result = await fn()
    first = time.perf_counter() - first_start
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = await fn()
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs) if runs else first, result


async def time_reports(engine: AsyncEngine, repeat: int) -> list[dict[str, Any]]:
    out = []
    for label, kind, start, end, interval in CASES:
        q: ReportQuery = build_query(start, end, interval, TZ.key, now=time.time())
        first, median, report = await _time(lambda q=q, kind=kind: REPORTS[kind](engine, q), repeat)
        out.append(
            {
                "case": label,
                "first_s": round(first, 4),
                "median_s": round(median, 4),
                "rows": len(report.rows),
                "check": report.overall.get(
                    "presented", report.overall.get("attempts", report.overall.get("entries"))
                ),
            }
        )
    return out


async def bench_sqlite(path: Path, n_calls: int, repeat: int) -> dict[str, Any]:
    await asyncio.to_thread(path.unlink, missing_ok=True)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade_async(engine)
        await engine.dispose()
        load = await asyncio.to_thread(load_sqlite, path, n_calls)
        return {"backend": "sqlite", "load": load, "reports": await time_reports(engine, repeat)}
    finally:
        await engine.dispose()


async def bench_pg(admin_url: str, n_calls: int, repeat: int) -> dict[str, Any]:
    import asyncpg

    name = f"cti_stats_bench_{os.getpid()}"
    admin = await asyncpg.connect(admin_url, timeout=5)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    engine = create_engine(url)
    try:
        await upgrade_async(engine)
        load = await load_pg(url, n_calls)
        return {"backend": "postgresql", "load": load, "reports": await time_reports(engine, repeat)}
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _print(result: dict[str, Any]) -> None:
    load = result["load"]
    print(
        f"\n{result['backend']}: {load['calls']:,} calls, {load['segments']:,} segments, "
        f"{load['spans']:,} agent-state spans loaded in {load['load_s']} s"
    )
    print(f"  {'report':<28} {'first':>9} {'median':>9} {'rows':>6}")
    for r in result["reports"]:
        print(
            f"  {r['case']:<28} {r['first_s'] * 1000:>7.1f}ms {r['median_s'] * 1000:>7.1f}ms {r['rows']:>6}"
        )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--sqlite", type=Path, help="database file (default: a temporary one)")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_sqlite:
            results.append(await bench_sqlite(args.sqlite or Path(tmp) / "stats.db", args.calls, args.repeat))
        if not args.skip_pg:
            results.append(await bench_pg(args.pg_admin, args.calls, args.repeat))
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
    else:
        for result in results:
            _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
