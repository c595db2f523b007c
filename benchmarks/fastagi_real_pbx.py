"""The caller lookup as a real Asterisk 22 sees it: from `AGI(agi://…/lookup)` starting to the
dialplan's next step, for N inbound calls into the shipped `cti-inbound`, against `cti serve`.

    .venv/bin/python benchmarks/fastagi_real_pbx.py --calls 300 --rate 20 --customers 20000

Uses the real-PBX tier's harness (tests/pbx: the cached Asterisk build, the shipped
configuration, `cti serve` as a process). Calls are Local channels originated over AMI with a
caller ID (a known customer for half of them); each plays the SVI for a second and hangs up.
Times are Asterisk's own millisecond log stamps (logger.conf `dateformat = %F %T.%3q`), so they
include the TCP connect, the AGI environment, the daemon's directory lookup and every command.
"""

from __future__ import annotations

import argparse
import asyncio
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


def lookups(log: Path) -> list[float]:
    started: dict[str, float] = {}
    out: list[float] = []
    for line in log.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if not match:
            continue
        stamp, call, app = match.groups()
        at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + float("0" + stamp[19:])
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
    pbx = Asterisk(prefix, new_run_dir(), Ports.pick(), pgsql=target)
    pbx.prepare()
    pbx.start()
    cti = CtiDaemon(pbx, pbx.run / "cti", log_level="info")
    try:
        cti.write_config()
        cti.cli("customers", "import", "/dev/stdin", stdin=customers_csv(args.customers))
        cti.start()
        pbx.cli("logger add channel bench.log verbose(3)")
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
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
