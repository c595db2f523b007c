"""Historical reports in SQL, on SQLite and PostgreSQL: the dictionary's SQL side equals its
Python side, the stored day equals the live day, intervals follow the local clock, filters are
checked."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.calls.records import CallRecord, IvrStep, QueueSegment
from cti.db.calls_store import CallStore
from cti.db.engine import create_engine
from cti.db.migrate import upgrade_async
from cti.stats.agents import Span
from cti.stats.export import to_csv, to_table
from cti.stats.history import (
    SEGMENTS,
    StatsQueryError,
    agent_report,
    build_query,
    ivr_report,
    outbound_report,
    queue_report,
)
from cti.stats.live import replay_live
from cti.stats.metrics import ThresholdSet, queue_figures, queue_tallies
from cti.stats.store import SPANS, SpanWriter, save_spans
from test_db import backend, db_url, engine, migrated_url, pg_admin  # noqa: F401 - fixtures

CAPTURES = Path(__file__).resolve().parent / "captures" / "lab"
PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=PARIS).timestamp()


def _record(n: int, start: float, segments: list[QueueSegment], **kw: Any) -> CallRecord:
    return CallRecord(
        "pbx1",
        f"{int(start)}.{n}",
        kw.pop("direction", "inbound"),
        start,
        start + 60,
        segments=segments,
        **kw,
    )


def _edge_segments() -> list[CallRecord]:
    """Every branch of the queue counters: thresholds hit exactly, unknown values, refusals."""
    seg = QueueSegment
    rows = [
        seg("support", T0 + 1, outcome="answered", wait_s=20.0, talk_s=30.0, interface="PJSIP/1", agent="A1"),
        seg(
            "support", T0 + 2, outcome="answered", wait_s=20.001, talk_s=None, interface="PJSIP/1", agent="A1"
        ),
        seg("support", T0 + 3, outcome="answered", wait_s=None, talk_s=5.0, completed_by="transfer"),
        seg("support", T0 + 4, outcome="abandoned", wait_s=4.999),
        seg("support", T0 + 5, outcome="abandoned", wait_s=5.0),
        seg("support", T0 + 6, outcome="abandoned", wait_s=None),
        seg("support", T0 + 7, outcome="timeout", wait_s=20.0),
        seg("support", T0 + 8, outcome="leaveempty", wait_s=61.0),
        seg("support", T0 + 9, outcome="joinempty", wait_s=0.0),
        seg("support", T0 + 10, outcome=None, wait_s=3.0),
        seg("sales", T0 + 11, outcome="answered", wait_s=29.0, talk_s=12.5, interface="PJSIP/2", agent="A2"),
        seg("sales", T0 + 12, outcome="abandoned", wait_s=7.0),
        seg("sales", T0 + 3700, outcome="continue", wait_s=1.0),
    ]
    return [_record(i, s.joined_at, [s]) for i, s in enumerate(rows)]


# Per-queue thresholds: the SQL side becomes a CASE on the queue.
THRESHOLDS = ThresholdSet.build(per_queue={"sales": {"service_level_s": 30, "short_abandon_s": 8}})


async def test_sql_counters_equal_python_counters(engine: AsyncEngine) -> None:  # noqa: F811
    records = _edge_segments()
    await CallStore(engine).save(records)
    q = build_query("2026-11-23", None, "day", "Europe/Paris", now=T0, thresholds=THRESHOLDS)
    report = await queue_report(engine, q)
    python = queue_tallies((s for r in records for s in r.segments), THRESHOLDS)
    sql = {t["queue"]: t for t in report.totals}
    assert set(sql) == set(python) == {"support", "sales"}
    for queue, tally in python.items():
        want = queue_figures(tally)
        got = {k: sql[queue][k] for k in want}
        assert got == pytest.approx(want), queue
    # Spot checks written from the rows above, not from either side's output.
    s = sql["support"]
    assert (s["presented"], s["answered"], s["answered_within_sl"]) == (9, 3, 2)
    assert (s["abandoned"], s["short_abandoned"], s["timed_out"], s["timed_out_within_sl"]) == (3, 2, 2, 1)
    assert (s["talked"], s["transferred_out"], s["max_wait_s"]) == (2, 1, 61.0)
    assert (sql["sales"]["answered_within_sl"], sql["sales"]["short_abandoned"]) == (1, 1)


async def test_hour_rows_and_filters(engine: AsyncEngine) -> None:  # noqa: F811
    await CallStore(engine).save(_edge_segments())
    q = build_query("2026-11-23", None, "hour", "Europe/Paris", now=T0, queues="sales")
    report = await queue_report(engine, q)
    assert [(r["interval_start"], r["queue"], r["presented"]) for r in report.rows] == [
        ("2026-11-23T09:00:00+01:00", "sales", 2),
        ("2026-11-23T10:00:00+01:00", "sales", 1),
    ]
    agents = await agent_report(engine, build_query("2026-11-23", None, "day", "Europe/Paris", now=T0))
    assert [(t["interface"], t["agent"], t["handled"], t["talk_s"]) for t in agents.totals] == [
        ("PJSIP/1", "A1", 2, 30),
        ("PJSIP/2", "A2", 1, 12.5),
    ]


async def test_local_days_across_the_dst_change(engine: AsyncEngine) -> None:  # noqa: F811
    """29 March 2026 in Paris has 23 hours: 00:30 and 23:30 local are the same day, 23 h apart."""
    early = datetime(2026, 3, 29, 0, 30, tzinfo=PARIS).timestamp()
    late = datetime(2026, 3, 29, 23, 30, tzinfo=PARIS).timestamp()
    after = datetime(2026, 3, 30, 0, 30, tzinfo=PARIS).timestamp()
    assert late - early == 22 * 3600
    records = [
        _record(i, at, [QueueSegment("support", at, outcome="answered", wait_s=1.0, talk_s=1.0)])
        for i, at in enumerate((early, late, after))
    ]
    await CallStore(engine).save(records)
    q = build_query("2026-03-29", "2026-03-30", "day", "Europe/Paris", now=after)
    report = await queue_report(engine, q)
    assert [(r["interval_start"], r["presented"]) for r in report.rows] == [
        ("2026-03-29T00:00:00+01:00", 2),
        ("2026-03-30T00:00:00+02:00", 1),
    ]
    hours = await queue_report(engine, build_query("2026-03-29", None, "hour", "Europe/Paris", now=after))
    assert [r["interval_start"] for r in hours.rows] == [
        "2026-03-29T00:00:00+01:00",
        "2026-03-29T23:00:00+02:00",
    ]


async def test_stored_day_equals_the_live_day(engine: AsyncEngine) -> None:  # noqa: F811
    """mixed_seed1 replayed live, its calls and agent-state spans stored: every report's totals
    over the day equal the live figures."""
    if not CAPTURES.is_dir():
        pytest.skip("tests/captures/lab is missing")
    spans: list[Span] = []
    stats, last = replay_live([CAPTURES / "mixed_seed1.ami"], None, ZoneInfo("UTC"), on_spans=spans.extend)
    live = stats.snapshot(last + 10)
    stats.close(last + 10)
    records = [c.record for c in stats._calls.values()]  # nothing left open
    assert records == []
    from cti.replay import replay_files

    await CallStore(engine).save(replay_files([CAPTURES / "mixed_seed1.ami"]).records)
    await save_spans(engine, spans)
    q = build_query("2026-11-22", "2026-11-24", "day", "UTC", now=last)
    queues = {t["queue"]: t for t in (await queue_report(engine, q)).totals}
    for row in live["queues"]:
        if row["presented"]:
            for key in ("presented", "answered", "abandoned", "timed_out", "qs", "service_level", "dmc_s"):
                assert queues[row["queue"]][key] == pytest.approx(row[key], abs=0.006), (row["queue"], key)
    agents = {t["interface"]: t for t in (await agent_report(engine, q)).totals}
    for row in live["agents"]:
        got = agents[row["interface"]]
        assert got["handled"] == row["handled"]
        for key in ("talk_s", "logged_in_s", "acd_s", "outbound_s", "ringing_s", "available_s"):
            assert got[key] == pytest.approx(row[key], abs=0.01), (row["interface"], key)
    [menu] = (await ivr_report(engine, q)).totals
    live_menu = live["ivr"]["menus"][0]
    for key in ("entries", "visits", "choices", "invalid", "timeouts", "hangups", "contained", "containment"):
        assert menu[key] == live_menu[key], key
    assert menu["choices_by_key"] == live_menu["choices_by_key"]
    outbound = {t["campaign"]: t for t in (await outbound_report(engine, q)).totals}
    for row in live["outbound"]:
        for key in ("attempts", "connects", "dropped", "contact_rate", "drop_rate"):
            assert outbound[row["campaign"]][key] == row[key], key


async def test_span_writer_cuts_at_quarter_hours_and_survives_an_outage(engine: AsyncEngine) -> None:  # noqa: F811
    writer = SpanWriter(engine, flush_interval_s=0.05)
    start = datetime(2026, 11, 23, 9, 10, tzinfo=UTC).timestamp()
    writer.submit([Span("pbx1", "PJSIP/1", "A1", "paused", "lunch", None, start, start + 1800)])
    writer.submit([Span("pbx1", "PJSIP/1", "A1", "acd", None, "support", 0.0, 5.0)])  # undated: dropped
    assert await writer.flush()
    q = build_query("2026-11-23", None, "15m", "UTC", now=start)
    [row_a, row_b, row_c] = (await agent_report(engine, q)).rows
    assert [r["paused_s"] for r in (row_a, row_b, row_c)] == [300, 900, 600]
    assert row_a["pause_by_reason"] == {"lunch": 300}
    async with engine.begin() as conn:
        assert (await conn.execute(SEGMENTS.select())).all() == []
    await writer.close()


async def test_two_trackers_of_one_pbx_store_each_span_once(engine: AsyncEngine, migrated_url: str) -> None:  # noqa: F811
    """Two daemons tracking the same PBX write the same agent-state spans, at the same time and
    again later: each piece is stored once (unique server, interface, start; ON CONFLICT DO
    NOTHING), and the agents' report is the one a single writer gives."""
    if not CAPTURES.is_dir():
        pytest.skip("tests/captures/lab is missing")
    spans: list[Span] = []
    stats, last = replay_live([CAPTURES / "mixed_seed1.ami"], None, ZoneInfo("UTC"), on_spans=spans.extend)
    stats.close(last + 10)
    pieces = await save_spans(engine, spans[: len(spans) // 2])
    other = create_engine(migrated_url)
    try:
        counts = await asyncio.gather(save_spans(engine, spans), save_spans(other, spans))
    finally:
        await other.dispose()
    assert counts[0] == counts[1] > pieces > 0
    async with engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(SPANS))).scalar()
    assert stored == counts[0]
    q = build_query("2026-11-22", "2026-11-24", "day", "UTC", now=last)
    once = create_engine("sqlite://")
    try:
        await upgrade_async(once)
        await save_spans(once, spans)
        assert (await agent_report(engine, q)).totals == (await agent_report(once, q)).totals
    finally:
        await once.dispose()


def test_filters_are_checked() -> None:
    now = T0
    with pytest.raises(StatsQueryError, match="interval") as e:
        build_query(interval="week", now=now)
    assert e.value.details == {"field": "interval"}
    with pytest.raises(StatsQueryError, match="ISO 8601"):
        build_query("23/11/2026", now=now)
    with pytest.raises(StatsQueryError, match="after"):
        build_query("2026-11-23", "2026-11-22T00:00", now=now)
    with pytest.raises(StatsQueryError, match="at most 62 days"):
        build_query("2026-01-01", "2026-06-01", "15m", now=now)
    with pytest.raises(StatsQueryError, match="time zone"):
        build_query(tz="Mars/Olympus", now=now)
    with pytest.raises(StatsQueryError, match="at most 50"):
        build_query(queues=[f"q{i}" for i in range(51)], now=now)
    # A day given as a word is a bare date: through that day (--from today --to today is today).
    today = build_query("today", "today", "day", "Europe/Paris", now=now)
    assert (today.end - today.start).total_seconds() == 86400
    q = build_query("yesterday", "yesterday", "day", "Europe/Paris", now=now, queues="support, sales")
    assert (q.start.isoformat(), q.end.isoformat(), q.queues) == (
        "2026-11-21T23:00:00+00:00",
        "2026-11-22T23:00:00+00:00",
        ("sales", "support"),
    )
    default = build_query(now=now, tz="Europe/Paris")
    assert (default.interval, default.end - default.start) == ("hour", default.end - default.start)
    assert (default.end - default.start).total_seconds() == 86400


async def test_csv_and_table(engine: AsyncEngine) -> None:  # noqa: F811
    await CallStore(engine).save(_edge_segments())
    report = await queue_report(
        engine, build_query("2026-11-23", None, "day", "Europe/Paris", now=time.time())
    )
    lines = to_csv(report).splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["interval_start", "queue", "presented"]
    assert lines[1].startswith("2026-11-23T00:00:00+01:00,sales,")
    assert lines[-1].startswith("total,support,9,")
    table = to_table(report)
    assert "QS" in table and "DMC" in table and "support" in table


async def test_ivr_steps_and_outbound_in_sql(engine: AsyncEngine) -> None:  # noqa: F811
    steps = [IvrStep(T0, "main", "enter", "enter"), IvrStep(T0 + 1, "main", "choice", "7")]
    sub = [*steps, IvrStep(T0 + 2, "billing", "enter", "enter"), IvrStep(T0 + 8, "billing", "timeout", "yes")]
    records = [
        _record(1, T0, [], ivr_path=list(steps), hangup_by="system", outcome="ivr_only"),
        _record(2, T0, [], ivr_path=sub, hangup_by="caller", outcome="ivr_only"),
        _record(3, T0, [QueueSegment("support", T0 + 2, outcome="answered", wait_s=1.0)],
                ivr_path=list(steps)),
        _record(4, T0, [], direction="outbound", outcome="outbound_busy", campaign="c9"),
        _record(5, T0, [QueueSegment("outbound", T0, outcome="answered", wait_s=3.0)], direction="outbound",
                outcome="outbound_answered", campaign="c9", contact="7", answered_at=T0 + 3, wait_s=3.0),
    ]  # fmt: skip
    await CallStore(engine).save(records)
    q = build_query("2026-11-23", None, "day", "Europe/Paris", now=T0)
    menus = {t["menu"]: t for t in (await ivr_report(engine, q)).totals}
    assert {k: menus["main"][k] for k in ("entries", "visits", "choices", "contained", "hangups")} == {
        "entries": 3,
        "visits": 3,
        "choices": 3,
        "contained": 2,
        "hangups": 0,
    }
    assert menus["main"]["choices_by_key"] == {"7": 3}
    assert menus["main"]["containment"] == round(2 / 3, 4)
    assert {k: menus["billing"][k] for k in ("entries", "visits", "timeouts", "hangups")} == {
        "entries": 0,
        "visits": 1,
        "timeouts": 1,
        "hangups": 1,
    }
    [c9] = (await outbound_report(engine, q)).totals
    assert (c9["attempts"], c9["connects"], c9["dropped"], c9["contact_rate"], c9["drop_rate"]) == (
        2,
        1,
        1,  # reached an agent after 3 s > drop_s 2 s
        0.5,
        1.0,
    )
    assert (c9["abandoned"], c9["late_connects"]) == (0, 1)  # a late connect, not an abandon
    assert c9["conversion_rate"] is None


async def test_insert_helper_for_static_check(engine: AsyncEngine) -> None:  # noqa: F811
    """The spans table accepts a plain insert (what other tools would write)."""
    from cti.stats.store import SPANS, span_row

    at = datetime(2026, 11, 23, 9, tzinfo=UTC).timestamp()
    async with engine.begin() as conn:
        await conn.execute(
            insert(SPANS), [span_row(Span("pbx1", "PJSIP/9", None, "available", None, None, at, at + 60))]
        )
    rows = (await agent_report(engine, build_query("2026-11-23", None, "day", "UTC", now=at))).totals
    assert [(r["interface"], r["available_s"], r["logged_in_s"]) for r in rows] == [("PJSIP/9", 60, 60)]


def test_the_command_line_offers_every_report_and_only_those() -> None:
    from cti.stats.commands import REPORT_NAMES
    from cti.stats.history import REPORTS

    assert sorted(REPORT_NAMES) == sorted(REPORTS)


def test_building_the_command_line_does_not_load_the_database_layer() -> None:
    # Every `cti` command builds the whole parser; SQLAlchemy costs ~0.5 s to import.
    code = "import sys; from cti.cli import build_parser; build_parser(); print('sqlalchemy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
