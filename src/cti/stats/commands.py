"""`cti stats`: historical reports in the terminal, from the configured database."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from cti.config import Settings

if TYPE_CHECKING:
    from cti.stats.history import Report

# The reports' names, for the parser: stats.history (and SQLAlchemy with it) is imported only when
# a report runs, not by every `cti` command that builds the parser (tests check the two agree).
REPORT_NAMES = ("agents", "ivr", "outbound", "queues")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stats = sub.add_parser(
        "stats",
        help="SVI/ACD statistics over a period (QS, service level, DMC, DMT, ...)",
        description="Historical statistics from the stored calls (docs/metrics.md). "
        "Default: today, by hour, every queue.",
    )
    stats.add_argument("--report", choices=REPORT_NAMES, default="queues")
    stats.add_argument("--from", dest="start", help="date or date-time (ISO 8601), or today/yesterday")
    stats.add_argument("--to", dest="end", help="exclusive end; a bare date means through that day")
    stats.add_argument("--interval", default="hour", help="15m, hour or day (default: hour)")
    stats.add_argument("--queue", action="append", default=[], help="only this queue; repeatable")
    stats.add_argument("--agent", action="append", default=[], help="agents report: member name or interface")
    stats.add_argument("--campaign", action="append", default=[], help="outbound report: campaign")
    stats.add_argument("--menu", action="append", default=[], help="ivr report: menu node")
    stats.add_argument("--tz", help="time zone of the intervals (default: the machine's)")
    stats.add_argument("--format", choices=("table", "json", "csv"), default="table")
    stats.add_argument("--service-level", type=float, metavar="SECONDS", help="T (default: settings)")
    stats.add_argument("--short-abandon", type=float, metavar="SECONDS", help="default: settings")
    stats.add_argument("--config")
    stats.add_argument("--url", help="database URL (default: from settings)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from cti.stats.history import StatsQueryError, build_query
    from cti.stats.metrics import ThresholdSet

    tracker = settings.tracker
    thresholds = ThresholdSet.build(
        args.service_level if args.service_level is not None else tracker.service_level_s,
        args.short_abandon if args.short_abandon is not None else tracker.short_abandon_s,
        settings.stats.queues,
    )
    try:
        query = build_query(
            args.start,
            args.end,
            args.interval,
            args.tz,
            now=time.time(),
            queues=args.queue,
            agents=args.agent,
            campaigns=args.campaign,
            menus=args.menu,
            thresholds=thresholds,
        )
    except StatsQueryError as exc:
        print(f"cti stats: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(_report(args.url or settings.database.url, args.report, query))
    sys.stdout.write(_render(report, args.format))
    return 0


async def _report(url: str, kind: str, query: Any) -> Report:
    from sqlalchemy.pool import NullPool

    from cti.db.engine import create_engine
    from cti.db.migrate import upgrade_async
    from cti.stats.history import REPORTS

    engine = create_engine(url, poolclass=NullPool)
    try:
        await upgrade_async(engine)
        return await REPORTS[kind](engine, query)
    finally:
        await engine.dispose()


def _render(report: Report, fmt: str) -> str:
    from cti.stats.export import to_csv, to_table

    if fmt == "json":
        return json.dumps(report.to_json(), ensure_ascii=False, indent=1) + "\n"
    if fmt == "csv":
        return to_csv(report)
    return to_table(report)
