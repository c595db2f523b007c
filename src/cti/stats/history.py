"""Historical reports, computed in SQL from stored calls, segments and agent-state spans.

Each report is one or two `GROUP BY` statements over UTC buckets (whole epoch seconds, so the
same statement runs on SQLite and PostgreSQL); the database scans and sums the rows, Python only
rolls the summed buckets up into local intervals (a local day is 23, 24 or 25 hours) and applies
the dictionary's ratios. Counter definitions come from `stats/metrics.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Table,
    and_,
    func,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.db.models import AgentStateSpan, Call, CallSegment
from cti.humanize import default_timezone, parse_until, parse_when
from cti.stats.metrics import (
    AGENT_METRICS,
    IVR_METRICS,
    OUTBOUND_METRICS,
    QUEUE_METRICS,
    REFUSED,
    SPAN_STATES,
    SegmentColumns,
    Tally,
    ThresholdSet,
    add_tally,
    apply_metrics,
    ivr_sql_columns,
    ivr_step_tally,
    outbound_sql_columns,
    sql_counter_columns,
)
from cti.stats.sqlfuncs import epoch_seconds, json_array_len, json_field, json_item_field

CALLS: Table = Call.__table__  # type: ignore[assignment]
SEGMENTS: Table = CallSegment.__table__  # type: ignore[assignment]
SPANS: Table = AgentStateSpan.__table__  # type: ignore[assignment]

INTERVALS = {"15m": 900, "hour": 3600, "day": 86400}
_ALIASES = {
    "15m": "15m",
    "15min": "15m",
    "quarter": "15m",
    "hour": "hour",
    "1h": "hour",
    "h": "hour",
    "day": "day",
    "1d": "day",
    "d": "day",
}
# Bounds the size of an answer (and of the scan) rather than the database's patience.
MAX_RANGE = {"15m": timedelta(days=62), "hour": timedelta(days=400), "day": timedelta(days=1100)}
MAX_FILTER_VALUES = 50


class StatsQueryError(ValueError):
    """A report filter is unusable; rendered by the web layer as 400 `bad-filter`."""

    status = 400
    error_id = "bad-filter"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.details = {"field": field}


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or default_timezone())
    except (ZoneInfoNotFoundError, ValueError):
        raise StatsQueryError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)", "tz"
        ) from None


@dataclass(frozen=True)
class ReportQuery:
    start: datetime
    end: datetime
    interval: str = "hour"
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    queues: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    campaigns: tuple[str, ...] = ()
    menus: tuple[str, ...] = ()
    thresholds: ThresholdSet = field(default_factory=ThresholdSet)


def _parse_instant(value: str, tz: ZoneInfo, name: str, today: date) -> datetime:
    try:
        return parse_when(value, tz, today, f"'{name}'")
    except ValueError as exc:
        raise StatsQueryError(str(exc), name) from None


def _values(raw: Iterable[str] | str | None, name: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else list(raw)
    values = tuple(sorted({v.strip() for item in items for v in item.split(",") if v.strip()}))
    if len(values) > MAX_FILTER_VALUES:
        raise StatsQueryError(f"at most {MAX_FILTER_VALUES} values for '{name}'", name)
    if any(len(v) > 200 for v in values):
        raise StatsQueryError(f"a '{name}' value is longer than 200 characters", name)
    return values


def build_query(
    start: str | None = None,
    end: str | None = None,
    interval: str | None = None,
    tz: str | None = None,
    *,
    now: float,
    queues: Iterable[str] | str | None = None,
    agents: Iterable[str] | str | None = None,
    campaigns: Iterable[str] | str | None = None,
    menus: Iterable[str] | str | None = None,
    thresholds: ThresholdSet | None = None,
) -> ReportQuery:
    """Check and normalise report filters (CLI and REST); `end` is exclusive; a bare date `end`
    means the end of that day. Default: today, by hour."""
    zone_ = zone(tz)
    name = _ALIASES.get((interval or "hour").strip().lower())
    if name is None:
        raise StatsQueryError(f"'interval' must be one of 15m, hour, day; got {interval!r}", "interval")
    today = datetime.fromtimestamp(now, zone_).date()
    begin = (
        _parse_instant(start, zone_, "from", today)
        if start
        else _parse_instant("today", zone_, "from", today)
    )
    if end:
        # A day, not an instant, means through that day (--from today --to today is today).
        try:
            finish = parse_until(end, zone_, today, "'to'")
        except ValueError as exc:
            raise StatsQueryError(str(exc), "to") from None
    else:
        finish = _parse_instant(
            (begin.astimezone(zone_).date() + timedelta(days=1)).isoformat(), zone_, "to", today
        )
    if finish <= begin:
        raise StatsQueryError("'to' must be after 'from'", "to")
    if finish - begin > MAX_RANGE[name]:
        raise StatsQueryError(
            f"at most {MAX_RANGE[name].days} days by {name}: choose a coarser interval or a shorter range",
            "to",
        )
    return ReportQuery(
        begin.astimezone(UTC),
        finish.astimezone(UTC),
        name,
        zone_,
        _values(queues, "queue"),
        _values(agents, "agent"),
        _values(campaigns, "campaign"),
        _values(menus, "menu"),
        thresholds or ThresholdSet(),
    )


# ------------------------------------------------------------------------ buckets
def sql_width(q: ReportQuery) -> int:
    """The UTC bucket the database groups by: an hour, unless the interval or the zone's offset
    (India, Newfoundland...) needs quarter hours."""
    if q.interval == "15m":
        return 900
    offsets = {q.start.astimezone(q.tz).utcoffset(), q.end.astimezone(q.tz).utcoffset()}
    whole_hours = all(o is not None and o.total_seconds() % 3600 == 0 for o in offsets)
    return 3600 if whole_hours else 900


def bucket_of(column: ColumnElement[Any], width: int) -> ColumnElement[int]:
    # Inline literals: a bound parameter would make the SELECT and GROUP BY expressions differ
    # for PostgreSQL.
    w = literal_column(str(int(width)), BigInteger)
    return (epoch_seconds(column) // w * w).label("bucket")


def local_start(epoch: int, interval: str, tz: ZoneInfo) -> int:
    """Start (epoch) of the local interval holding `epoch`."""
    t = datetime.fromtimestamp(epoch, tz)
    if interval == "15m":
        t = t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)
    elif interval == "hour":
        t = t.replace(minute=0, second=0, microsecond=0)
    else:
        t = datetime(t.year, t.month, t.day, tzinfo=tz)
    return int(t.timestamp())


class Rollup:
    """Summed counters per (local interval, key)."""

    def __init__(self, q: ReportQuery) -> None:
        self.q = q
        self.cells: dict[tuple[int, str | None], Tally] = {}
        self.names: dict[str | None, str | None] = {}

    def add(self, bucket: int, key: str | None, values: Mapping[str, Any]) -> None:
        cell = self.cells.setdefault((local_start(int(bucket), self.q.interval, self.q.tz), key), {})
        add_tally(cell, {k: float(v or 0) for k, v in values.items()})

    def totals(self) -> dict[str | None, Tally]:
        out: dict[str | None, Tally] = {}
        for (_, key), tally in self.cells.items():
            add_tally(out.setdefault(key, {}), tally)
        return out

    def iso(self, epoch: int) -> str:
        return datetime.fromtimestamp(epoch, self.q.tz).isoformat()


@dataclass
class Report:
    kind: str  # queues / agents / ivr / outbound
    key: str  # the dimension column: queue / interface / menu / campaign
    query: ReportQuery
    rows: list[dict[str, Any]]
    totals: list[dict[str, Any]]
    overall: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # report-specific sections

    def to_json(self) -> dict[str, Any]:
        q = self.query
        return {
            "report": self.kind,
            "from": q.start.astimezone(q.tz).isoformat(),
            "to": q.end.astimezone(q.tz).isoformat(),
            "interval": q.interval,
            "tz": q.tz.key,
            "rows": self.rows,
            "totals": self.totals,
            "overall": self.overall,
            **self.extra,
        }


def _report(
    kind: str,
    key: str,
    rollup: Rollup,
    figures: Any,
) -> Report:
    rows = [
        {"interval_start": rollup.iso(start), key: k, **figures(tally, k)}
        for (start, k), tally in sorted(rollup.cells.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]
    totals_by_key = rollup.totals()
    totals = [{key: k, **figures(t, k)} for k, t in sorted(totals_by_key.items(), key=lambda i: i[0] or "")]
    overall: Tally = {}
    for t in totals_by_key.values():
        add_tally(overall, t)
    return Report(kind, key, rollup.q, rows, totals, figures(overall, None))


def _in(column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    return column.in_(values) if values else true()


# ------------------------------------------------------------------------ queues
def _segment_columns() -> SegmentColumns:
    s = SEGMENTS.c
    return SegmentColumns(s.queue, s.outcome, s.wait_s, s.talk_s, s.completed_by)


def _segments_in(q: ReportQuery) -> ColumnElement[bool]:
    s = SEGMENTS.c
    return and_(
        s.joined_at >= q.start,
        s.joined_at < q.end,
        or_(s.outcome.is_(None), not_(s.outcome.in_(sorted(REFUSED)))),
    )


def queue_segments_statement(q: ReportQuery, width: int) -> Select[Any]:
    s = SEGMENTS.c
    bucket = bucket_of(s.joined_at, width)
    return (
        select(bucket, s.queue, *sql_counter_columns(_segment_columns(), q.thresholds))
        .where(_segments_in(q), _in(s.queue, q.queues))
        .group_by(bucket, s.queue)
    )


def _spans_in(q: ReportQuery) -> ColumnElement[bool]:
    return and_(SPANS.c.started_at >= q.start, SPANS.c.started_at < q.end)


def wrapup_statement(q: ReportQuery, width: int) -> Select[Any]:
    p = SPANS.c
    bucket = bucket_of(p.started_at, width)
    return (
        select(bucket, p.queue, func.sum(p.duration_s).label("wrapup_s"))
        .where(_spans_in(q), p.state == "wrapup", p.queue.is_not(None), _in(p.queue, q.queues))
        .group_by(bucket, p.queue)
    )


async def queue_report(engine: AsyncEngine, q: ReportQuery) -> Report:
    width = sql_width(q)
    rollup = Rollup(q)
    async with engine.connect() as conn:
        for row in await conn.execute(queue_segments_statement(q, width)):
            values = row._asdict()
            rollup.add(values.pop("bucket"), values.pop("queue"), values)
        for row in await conn.execute(wrapup_statement(q, width)):
            rollup.add(row.bucket, row.queue, {"wrapup_s": row.wrapup_s})
    return _report("queues", "queue", rollup, lambda t, _k: apply_metrics(t, QUEUE_METRICS))


# ------------------------------------------------------------------------ agents
AGENT_COUNTERS = ("answered", "talk_s", "talked", "transferred_out", "wait_answered_s")


def agent_segments_statement(q: ReportQuery, width: int) -> Select[Any]:
    s = SEGMENTS.c
    bucket = bucket_of(s.joined_at, width)
    counters = [c for c in sql_counter_columns(_segment_columns(), q.thresholds) if c.name in AGENT_COUNTERS]
    agent_filter = or_(s.interface.in_(q.agents), s.agent.in_(q.agents)) if q.agents else true()
    return (
        select(bucket, s.interface, func.max(s.agent).label("agent"), *counters)
        .where(_segments_in(q), s.interface.is_not(None), agent_filter, _in(s.queue, q.queues))
        .group_by(bucket, s.interface)
    )


def agent_spans_statement(q: ReportQuery, width: int) -> Select[Any]:
    p = SPANS.c
    bucket = bucket_of(p.started_at, width)
    agent_filter = or_(p.interface.in_(q.agents), p.agent.in_(q.agents)) if q.agents else true()
    return (
        select(
            bucket,
            p.interface,
            p.state,
            p.reason,
            func.max(p.agent).label("agent"),
            func.sum(p.duration_s).label("duration_s"),
        )
        .where(_spans_in(q), agent_filter)
        .group_by(bucket, p.interface, p.state, p.reason)
    )


def span_tally(state: str, reason: str | None, seconds: float) -> Tally:
    """What one span adds to its agent's counters (shared with the live view)."""
    out = {f"{state}_s": seconds, "logged_in_s": seconds}
    if state == "paused":
        out[f"pause:{reason or ''}"] = seconds
    return out


def agent_figures(tally: Mapping[str, float], name: str | None = None) -> dict[str, Any]:
    base = {k: v for k, v in tally.items() if not k.startswith("pause:")}
    for counter in (*AGENT_COUNTERS, "logged_in_s", *(f"{s}_s" for s in SPAN_STATES)):
        base.setdefault(counter, 0.0)
    out = apply_metrics(base, AGENT_METRICS)
    out["handled"] = out["answered"]
    out["pause_by_reason"] = {k[6:]: round(v, 3) for k, v in sorted(tally.items()) if k.startswith("pause:")}
    if name is not None:
        out["agent"] = name
    return out


async def agent_report(engine: AsyncEngine, q: ReportQuery) -> Report:
    width = sql_width(q)
    rollup = Rollup(q)
    async with engine.connect() as conn:
        for row in await conn.execute(agent_segments_statement(q, width)):
            values = row._asdict()
            bucket, interface = values.pop("bucket"), values.pop("interface")
            rollup.names[interface] = values.pop("agent") or rollup.names.get(interface)
            rollup.add(bucket, interface, values)
        for row in await conn.execute(agent_spans_statement(q, width)):
            rollup.names.setdefault(row.interface, row.agent)
            rollup.add(row.bucket, row.interface, span_tally(row.state, row.reason, row.duration_s))
    return _report("agents", "interface", rollup, lambda t, k: agent_figures(t, rollup.names.get(k)))


# ------------------------------------------------------------------------ IVR
def ivr_calls_statement(q: ReportQuery, width: int) -> Select[Any]:
    c = CALLS.c
    bucket = bucket_of(c.started_at, width)
    first = json_item_field(c.ivr_path, 0, "menu").label("first_menu")
    last = json_item_field(c.ivr_path, -1, "menu").label("last_menu")
    steps = json_array_len(c.ivr_path)
    return (
        select(bucket, first, last, *ivr_sql_columns(c.queue, c.hangup_by, steps))
        .where(c.started_at >= q.start, c.started_at < q.end, steps > 0)
        .group_by(bucket, first, last)
    )


def ivr_steps_statement(q: ReportQuery, width: int, dialect: str) -> Select[Any]:
    c = CALLS.c
    bucket = bucket_of(c.started_at, width)
    # One row per IVR step: SQLite's json_each and PostgreSQL's json_array_elements both give a
    # `value` column (PostgreSQL needs the column list spelt out).
    unnest = func.json_each if dialect == "sqlite" else func.json_array_elements
    step = unnest(c.ivr_path).table_valued("value")
    step = step.render_derived(name="step") if dialect != "sqlite" else step.alias("step")
    menu = json_field(step.c.value, "menu").label("menu")
    kind = json_field(step.c.value, "kind").label("kind")
    value = json_field(step.c.value, "value").label("value")
    columns: list[ColumnElement[Any]] = [bucket, menu, kind, value, func.count().label("n")]
    stmt: Select[Any] = (
        select(*columns)
        .select_from(CALLS.join(step, true()))
        .where(c.started_at >= q.start, c.started_at < q.end)
        .group_by(bucket, menu, kind, value)
    )
    return stmt


async def ivr_report(engine: AsyncEngine, q: ReportQuery) -> Report:
    width = sql_width(q)
    rollup = Rollup(q)
    async with engine.connect() as conn:
        for row in await conn.execute(ivr_calls_statement(q, width)):
            rollup.add(row.bucket, row.first_menu, {"entries": row.entries, "contained": row.contained})
            rollup.add(row.bucket, row.last_menu, {"hangups": row.hangups})
        for row in await conn.execute(ivr_steps_statement(q, width, engine.dialect.name)):
            tally = ivr_step_tally(row.kind or "", row.value or "")
            rollup.add(row.bucket, row.menu, {k: v * row.n for k, v in tally.items()})
    if q.menus:
        rollup.cells = {k: v for k, v in rollup.cells.items() if k[1] in q.menus}
    return _report("ivr", "menu", rollup, lambda t, _k: ivr_figures(t))


IVR_MENU_COUNTERS = ("entries", "visits", "choices", "invalid", "timeouts", "hangups", "contained")


def ivr_figures(tally: Mapping[str, float]) -> dict[str, Any]:
    base = {k: tally.get(k, 0.0) for k in IVR_MENU_COUNTERS}
    out = apply_metrics(base, IVR_METRICS)
    out["choices_by_key"] = {k[7:]: int(v) for k, v in sorted(tally.items()) if k.startswith("choice:")}
    return out


# ------------------------------------------------------------------------ outbound
def outbound_statement(q: ReportQuery, width: int) -> Select[Any]:
    c = CALLS.c
    bucket = bucket_of(c.started_at, width)
    columns = outbound_sql_columns(
        c.campaign, c.contact, c.outcome, c.answered_at, c.wait_s, q.thresholds.default
    )
    return (
        select(bucket, c.campaign, *columns)
        .where(
            c.started_at >= q.start,
            c.started_at < q.end,
            c.direction == "outbound",
            _in(c.campaign, q.campaigns),
        )
        .group_by(bucket, c.campaign)
    )


OUTBOUND_CALL_COUNTERS = ("attempts", "connects", "abandoned", "late_connects", "dropped")


def outbound_figures(tally: Mapping[str, float], campaign: bool = True) -> dict[str, Any]:
    """A campaign's figures (`kind: campaign`), or those of the outbound calls of no campaign
    (`kind: manual`: click-to-call, manual or test Originates), which are never drops."""
    base: dict[str, float | None] = {k: tally.get(k, 0.0) for k in OUTBOUND_CALL_COUNTERS}
    # Dispositions are the dialer's (`cti campaign show`), not in the calls table: unknown here.
    base.update(contacts_argued=None, sales=None)
    out = apply_metrics(base, OUTBOUND_METRICS)
    out["kind"] = "campaign" if campaign else "manual"
    if not campaign:
        out["drop_rate"] = None
    return out


async def outbound_report(engine: AsyncEngine, q: ReportQuery) -> Report:
    """One row per campaign, and one (`campaign: null`, `kind: manual`) for the outbound calls
    of no campaign; `overall` sums the campaigns only, `manual` is that other row's total."""
    width = sql_width(q)
    rollup = Rollup(q)
    async with engine.connect() as conn:
        for row in await conn.execute(outbound_statement(q, width)):
            values = row._asdict()
            rollup.add(values.pop("bucket"), values.pop("campaign"), values)
    report = _report("outbound", "campaign", rollup, lambda t, k: outbound_figures(t, k is not None))
    campaigns: Tally = {}
    by_key = rollup.totals()
    for key, tally in by_key.items():
        if key is not None:
            add_tally(campaigns, tally)
    report.overall = outbound_figures(campaigns)
    report.extra["manual"] = outbound_figures(by_key.get(None, {}), campaign=False)
    return report


REPORTS = {
    "queues": queue_report,
    "agents": agent_report,
    "ivr": ivr_report,
    "outbound": outbound_report,
}
