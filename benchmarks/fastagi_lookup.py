"""FastAGI caller lookup: session time as Asterisk sees it, from its connect() to the server's
close (when AGI() returns and the dialplan goes on), over real sockets on 127.0.0.1.

By default a whole daemon (`cti serve`'s `Daemon`, [agi] on an ephemeral port, no AMI server)
is started in a second process, on a SQLite file or a throwaway PostgreSQL database holding
`--customers` customers, so that the load generator never shares the daemon's event loop. With
`--connect HOST:PORT` the sessions go to a daemon already running instead (its directory as it
is: callers are then mostly misses).

Sessions play Asterisk 22's side as res_agi.c does (environment block line by line, then one
`200 result=1` per command) and arrive as a Poisson process at `--rate` per second; the caller
mix is 60 % customers (one in ten VIP), 30 % unknown numbers, 10 % withheld.

    python benchmarks/fastagi_lookup.py [--sessions 2000] [--rate 100] [--database sqlite|postgresql]
        [--customers 20000] [--seed 1] [--connect HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "test"}


def customer_number(i: int) -> str:
    return f"+336{10_000_000 + i:08d}"


def callers(sessions: int, customers: int, seed: int) -> list[tuple[str, str]]:
    """(caller number as the trunk sends it, the CTI_LOOKUP expected)."""
    rng = random.Random(seed)
    drawn = []
    for _ in range(sessions):
        kind = rng.random()
        if kind < 0.6:
            drawn.append((customer_number(rng.randrange(customers)).replace("+33", "0"), "hit"))
        elif kind < 0.9:
            drawn.append((f"07{rng.randrange(10**8):08d}", "miss"))
        else:
            drawn.append(("anonymous", "withheld"))
    return drawn


# -- the daemon (child process) ----------------------------------------------------------------


async def fill(engine: Any, customers: int) -> None:
    from sqlalchemy import insert

    from cti.db.models import Customer, CustomerPhone

    async with engine.begin() as conn:
        for start in range(0, customers, 2000):
            ids = range(start + 1, min(start + 2000, customers) + 1)
            await conn.execute(
                insert(Customer),
                [
                    {"id": i, "name": f"Client {i}", "vip": i % 10 == 0, "queue_priority": 5 * (i % 10 == 0)}
                    for i in ids
                ],
            )
            await conn.execute(
                insert(CustomerPhone),
                [{"id": i, "customer_id": i, "e164": customer_number(i - 1), "label": "mobile"} for i in ids],
            )
    if engine.dialect.name == "postgresql":
        from sqlalchemy import text

        # As `cti customers import` does after a load: without statistics the planner walks the
        # whole (customer_id, e164) index for each lookup (about 4 ms at 20,000 customers).
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE customers, customer_phones"))


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 1 ms sleep wakes up: the longest step the loop took meanwhile (what a screen
    pop arriving then would have waited)."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append((time.perf_counter() - before) * 1000 - 1.0)


async def serve_main(url: str, customers: int) -> None:
    from cti.app import Daemon
    from cti.config import AgiSettings, DatabaseSettings, LogSettings, Settings, WebSettings
    from cti.logs import configure_logging

    configure_logging("error", "json")
    settings = Settings(
        asterisk=(),
        database=DatabaseSettings(url=url),
        log=LogSettings(level="error", format="json"),
        web=WebSettings(port=0),
        agi=AgiSettings(host="127.0.0.1", port=0),
    )
    daemon = Daemon(settings)
    await daemon.start()
    await fill(daemon.engine, customers)
    assert daemon.agi is not None
    print(daemon.agi.port, flush=True)
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "measure":
        samples: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.create_task(loop_lag(samples, stop))
        await loop.run_in_executor(None, sys.stdin.readline)  # the run is over
        stop.set()
        await probe
        samples.sort()
        lag = {"p99_ms": round(samples[int(len(samples) * 0.99)], 2), "max_ms": round(samples[-1], 2)}
        print(json.dumps(lag), flush=True)
    await daemon.shutdown()


# -- Asterisk's side (this process) ------------------------------------------------------------


def environment(port: int, caller: str, n: int) -> list[bytes]:
    fields = [
        ("agi_network", "yes"),
        ("agi_network_script", "lookup"),
        ("agi_request", f"agi://127.0.0.1:{port}/lookup"),
        ("agi_channel", f"PJSIP/trunk-{n:08x}"),
        ("agi_language", "fr"),
        ("agi_type", "PJSIP"),
        ("agi_uniqueid", f"1800000000.{n}"),
        ("agi_version", "22.10.1"),
        ("agi_callerid", caller),
        ("agi_calleridname", "unknown"),
        ("agi_callingpres", "0"),
        ("agi_callingani2", "0"),
        ("agi_callington", "0"),
        ("agi_callingtns", "0"),
        ("agi_dnid", "0187654321"),
        ("agi_rdnis", "unknown"),
        ("agi_context", "cti-inbound"),
        ("agi_extension", "s"),
        ("agi_priority", "3"),
        ("agi_enhanced", "0.0"),
        ("agi_accountcode", ""),
        ("agi_threadid", "140160127329984"),
        ("agi_arg_1", "FR"),
    ]
    return [f"{k}: {v}\n".encode() for k, v in fields] + [b"\n"]


async def one_session(host: str, port: int, caller: str, n: int) -> tuple[float, str]:
    """Session time in ms, and the CTI_LOOKUP set ("" when none)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    status = ""
    try:
        for line in environment(port, caller, n):  # one write per line, as ast_agi_send does
            writer.write(line)
        while line := await asyncio.wait_for(reader.readline(), 10):
            if line.startswith(b'SET VARIABLE "CTI_LOOKUP"'):
                status = line.split(b'"')[3].decode()
            elif line.startswith(b"EXEC MSet ") and b"CTI_LOOKUP=" in line:  # the values in one command
                status = line.split(b"CTI_LOOKUP=", 1)[1].split(b",")[0].strip(b'"\n').decode()
            writer.write(b"200 result=1\n")
    finally:
        elapsed = (time.monotonic() - started) * 1000
        writer.close()
    return elapsed, status


async def load(host: str, port: int, drawn: list[tuple[str, str]], rate: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed + 1)
    tasks = []
    start = time.monotonic()
    due = 0.0
    for n, (caller, _) in enumerate(drawn):
        due += rng.expovariate(rate)
        delay = start + due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_session(host, port, caller, n)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    times = sorted(r[0] for r in results if isinstance(r, tuple))
    wrong = sum(
        1 for r, (_, want) in zip(results, drawn, strict=True) if not isinstance(r, tuple) or r[1] != want
    )
    q = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else [0.0] * 99
    return {
        "sessions": len(drawn),
        "rate_per_s": rate,
        "failed_or_unexpected": wrong,
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(times[-1], 2) if times else None,
    }


async def pg_database() -> tuple[str, str]:
    import asyncpg

    name = f"cti_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(**PG_ADMIN, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name, f"postgresql+asyncpg://{PG_ADMIN['user']}@{PG_ADMIN['host']}:{PG_ADMIN['port']}/{name}"


async def pg_drop(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(**PG_ADMIN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    drawn = callers(args.sessions, args.customers, args.seed)
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        result = await load(host, int(port), drawn, args.rate, args.seed)
        return {"target": args.connect, **result}
    pg_name = None
    if args.database == "postgresql":
        pg_name, url = await pg_database()
    else:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        url,
        str(args.customers),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert daemon.stdin is not None and daemon.stdout is not None
    try:
        port = int((await daemon.stdout.readline()).decode())
        await load("127.0.0.1", port, drawn[: min(200, len(drawn))], args.rate, args.seed + 7)  # warm-up
        daemon.stdin.write(b"measure\n")
        await daemon.stdin.drain()
        result = await load("127.0.0.1", port, drawn, args.rate, args.seed)
        daemon.stdin.write(b"\n")
        await daemon.stdin.drain()
        result["daemon_loop_lag"] = json.loads(await daemon.stdout.readline())
    finally:
        daemon.stdin.write(b"\n")
        await daemon.communicate()
        if pg_name:
            await pg_drop(pg_name)
    return {
        "database": args.database,
        "customers": args.customers,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **result,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="mean new sessions per second")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connect", help="HOST:PORT of a running daemon's FastAGI server")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_main(args.serve[0], int(args.serve[1])))
        return 0
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
