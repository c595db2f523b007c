"""The caller lookup as a real Asterisk 22 sees it: from `AGI(agi://…/lookup)` starting to the
dialplan's next step, for N inbound calls into the shipped `cti-inbound`, against `cti serve`.

    .venv/bin/python benchmarks/fastagi_real_pbx.py --calls 300 --rate 20 --customers 20000

Uses the real-PBX tier's harness (tests/pbx: the cached Asterisk build, the shipped
configuration, `cti serve` as a process). Calls are Local channels originated over AMI with a
caller ID (a known customer for half of them); each plays the SVI for a second and hangs up.
Times are Asterisk's own millisecond log stamps (logger.conf `dateformat = %F %T.%3q`), so they
include the TCP connect, the AGI environment, the daemon's directory lookup and every command.

`--breakdown` also turns on Asterisk's `agi set debug on` and splits each lookup, by the same
stamps, into Asterisk's connect and environment (to the environment's last line sent), the
daemon's answer (to the first command received) and the rest (the commands and the close, to
"AGI Script ... completed"): where a slow lookup spent its time. The debug lines cost Asterisk
a little: compare totals without it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pbx"))

from daemon import CtiDaemon
from lab import (
    Asterisk,
    Ports,
    asterisk_prefix,
    create_records_database,
    drop_records_database,
    new_run_dir,
)

LINE = re.compile(
    r"^\[(\S+ \S+)\] VERBOSE\[\d+\]\[(C-[0-9a-f]+)\] pbx\.c: Executing \[s@cti-inbound:\d+\] (\w+)\("
)


def customers_csv(count: int) -> str:
    rows = ["name,phone"] + [f"Client {i},+3361{i:07d}" for i in range(count)]
    return "\n".join(rows) + "\n"


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


DEBUG_LINE = re.compile(r"^\[(\S+ \S+)\] VERBOSE\[\d+\]\[(C-[0-9a-f]+)\] res_agi\.c: (.*)$")


def _stamp(text: str) -> float:
    return time.mktime(time.strptime(text[:19], "%Y-%m-%d %H:%M:%S")) + float("0" + text[19:])


def breakdown(log: Path) -> dict[str, list[float]]:
    """Per lookup, ms: Asterisk's connect + environment, the daemon's answer, commands + close."""
    marks: dict[str, dict[str, float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if match:
            stamp, call, app = match.groups()
            if app == "AGI":
                marks[call] = {"start": _stamp(stamp)}
            continue
        match = DEBUG_LINE.match(line)
        if not match or match.group(2) not in marks:
            continue
        stamp, call, text = match.groups()
        mark = marks[call]
        if text.endswith("AGI Tx >> ") and "env" not in mark:
            mark["env"] = _stamp(stamp)
        elif "AGI Rx << " in text and "env" in mark and "answer" not in mark:
            mark["answer"] = _stamp(stamp)
        elif "AGI Script" in text and "completed" in text and "answer" in mark and "done" not in mark:
            mark["done"] = _stamp(stamp)
    parts: dict[str, list[float]] = {
        "asterisk connect + environment": [],
        "daemon's answer": [],
        "commands + close": [],
    }
    for mark in marks.values():
        if "done" in mark:
            spans = (("start", "env"), ("env", "answer"), ("answer", "done"))
            for values, (a, b) in zip(parts.values(), spans, strict=True):
                values.append((mark[b] - mark[a]) * 1000)
    return parts


def lookups(log: Path) -> list[float]:
    started: dict[str, float] = {}
    out: list[float] = []
    for line in log.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if not match:
            continue
        stamp, call, app = match.groups()
        at = _stamp(stamp)
        if app == "AGI":
            started[call] = at
        elif app == "UserEvent" and call in started:
            out.append((at - started.pop(call)) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second")
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-records-db",
        action="store_true",
        help="give Asterisk no database for its CEL and queue_log (a site that skipped that step: "
        "cel_pgsql then fails a connection for every channel event)",
    )
    parser.add_argument("--breakdown", action="store_true", help="split each lookup (agi set debug on)")
    parser.add_argument(
        "--normal-priority",
        action="store_true",
        help="Asterisk without asterisk.conf's highpriority = yes (deploy step 8 sets it: real-time "
        "scheduling, as asterisk -p), as Asterisk's sample file ships",
    )
    parser.add_argument("--cti-log", default="info", help="the daemon's log level (debug: every session)")
    args = parser.parse_args()
    prefix = asterisk_prefix()
    if prefix is None:
        print("no Asterisk build: run scripts/build-asterisk first", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    # As deployed (docs/asterisk.md): Asterisk writes its CEL and queue_log to PostgreSQL.
    target = None if args.no_records_db else asyncio.run(create_records_database("cti_bench"))
    if target is None and not args.no_records_db:
        print("no PostgreSQL for Asterisk's records: start it, or pass --no-records-db", file=sys.stderr)
        return 2
    pbx = Asterisk(prefix, new_run_dir(), Ports.pick(), pgsql=target, highpriority=not args.normal_priority)
    pbx.prepare()
    pbx.start()
    cti = CtiDaemon(pbx, pbx.run / "cti", log_level=args.cti_log)
    try:
        cti.write_config()
        cti.cli("customers", "import", "/dev/stdin", stdin=customers_csv(args.customers))
        cti.start()
        pbx.cli("logger add channel bench.log verbose(3)")
        if args.breakdown:
            pbx.cli("agi set debug on")
        for i in range(args.calls):
            known = rng.random() < 0.5
            number = f"+3361{rng.randrange(args.customers):07d}" if known else f"+3362{i:07d}"
            response = pbx.ami(
                "Originate", Channel="Local/0180000000@cti-inbound/n", Application="Wait", Data="1",
                CallerID=f'"" <{number}>', Async="true",
            )  # fmt: skip
            if "Success" not in response:
                print(f"originate refused: {response}", file=sys.stderr)
            time.sleep(rng.expovariate(args.rate))
        time.sleep(5)
        times = lookups(pbx.log_dir / "bench.log")
        parts = breakdown(pbx.log_dir / "bench.log") if args.breakdown else {}
    finally:
        cti.stop()
        pbx.stop()
        if target is not None:
            asyncio.run(drop_records_database(target))
        print(f"logs: {pbx.run}", file=sys.stderr)
    if len(times) < 2:
        print(f"only {len(times)} lookups seen; see {pbx.run}", file=sys.stderr)
        return 1
    print(
        f"{len(times)} lookups on a real Asterisk 22, {args.customers} customers, {args.rate:g} calls/s: "
        f"p50 {statistics.median(times):.1f} ms, p99 {quantile(times, 0.99):.1f} ms, max {max(times):.1f} ms"
        f" (load average {os.getloadavg()[0]:.2f})"
    )
    for name, values in parts.items():
        if len(values) >= 2:
            print(
                f"  {name}: p50 {statistics.median(values):.1f} ms, p90 {quantile(values, 0.9):.1f} ms, "
                f"p99 {quantile(values, 0.99):.1f} ms, max {max(values):.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
