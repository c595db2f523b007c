"""`cti campaign import` at scale: a generated contact list of 1,000,000 rows imported into a new
campaign, on SQLite and on PostgreSQL, with the import's wall time and peak memory.

Each import runs in a fresh child process, so its peak resident memory is its own; importing a
tenth of the rows as well shows whether memory grows with the file (it should not, beyond the
8-16 bytes per row the duplicate check keeps).

    python benchmarks/import.py [--rows 1000000] [--skip-sqlite] [--skip-pg] [--pg-admin URL] [--messy]
                                [--progress]

The file looks like a French call-centre export: `;`-delimited UTF-8 with a BOM, numbers in
mixed spellings (06 12 34 56 78, +33 6..., 0033..., dotted), two extra columns, ~1 % bad numbers
and ~1 % duplicates, imported into an `fr` campaign.

`--messy` makes it a real French CRM export instead: Windows-1252, an address, a postal code, a
city and a country column checked against each number, ~8 % overseas numbers in national format
(0692…, 0639…, 0690…, 0696…, 0694…, 0262…) with their territory's postal code, ~0.5 % of them
written +33 (read, and noted), ~0.5 % premium-rate and foreign numbers (rejected), imported into an
`auto` campaign limited to FR and MA.

`--progress` draws the progress bar `cti campaign import` shows on a terminal (into memory), so
its cost is measured with the import.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def generate(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    styles = (
        lambda d: d,
        lambda d: " ".join(d[i : i + 2] for i in range(0, 10, 2)),
        lambda d: "+33 " + d[1] + " " + d[2:],
        lambda d: "0033" + d[1:],
        lambda d: ".".join(d[i : i + 2] for i in range(0, 10, 2)),
    )
    seen: list[str] = []
    with open(path, "w", encoding="utf-8-sig", newline="") as out:
        out.write("nom;prenom;telephone;ville;consentement\r\n")
        for i in range(rows):
            roll = rng.random()
            if roll < 0.01 and seen:
                digits = rng.choice(seen)  # a duplicate
            elif roll < 0.02:
                digits = "0" + "".join(rng.choice("0123456789") for _ in range(rng.choice((6, 8, 12))))
            else:
                digits = f"06{i:08d}" if i % 2 else f"07{rng.choice('56789')}{i:07d}"
                if len(seen) < 10_000:
                    seen.append(digits)
            phone = rng.choice(styles)(digits) if len(digits) == 10 else digits
            out.write(f"Client{i};Prénom{i % 97};{phone};Ville{i % 500};{'oui' if i % 3 == 0 else ''}\r\n")


# (national prefix, digits to add, postal code, country column) of valid overseas blocks.
OVERSEAS = (
    ("0692", 6, "97400", "La Réunion"),
    ("06392", 5, "97600", "Mayotte"),
    ("0690", 6, "97110", "Guadeloupe"),
    ("0696", 6, "97200", "Martinique"),
    ("06940", 5, "97300", "Guyane"),
    ("0262", 6, "97490", "La Réunion"),
)
ODD = ("08 99 12 34 56", "+1 212 736 5000", "+49 30 12345678", "0810 12 34 56")


def generate_messy(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="cp1252", newline="") as out:
        out.write("Civilité;Nom;Prénom;Adresse;Code postal;Ville;Pays;Téléphone;Consentement\r\n")
        for i in range(rows):
            roll = rng.random()
            postal, country = f"{75001 + i % 20}", "France"
            if roll < 0.08:
                prefix, more, postal, country = rng.choice(OVERSEAS)
                digits = prefix + "".join(rng.choice("0123456789") for _ in range(more))
                phone = " ".join(digits[j : j + 2] for j in range(0, 10, 2))
                if roll < 0.005:
                    phone = "+33 " + phone[1:]
            elif roll < 0.085:
                phone = rng.choice(ODD)
            elif roll < 0.095:
                phone = "0" + "".join(rng.choice("0123456789") for _ in range(rng.choice((6, 8, 12))))
            else:
                last = rng.randrange(100)
                phone = f"07 {60 + i % 40:02d} {i // 40 % 100:02d} {i // 4000 % 100:02d} {last:02d}"
            out.write(
                f"M.;Client{i};Prénom{i % 97};{i % 200} rue de la Paix;{postal};Ville{i % 500};{country};"
                f"{phone};{'oui' if i % 3 == 0 else ''}\r\n"
            )


async def _child(url: str, path: str, messy: bool = False, progress: int | None = None) -> dict[str, Any]:
    """`progress`: the file's size, to draw the progress bar (into memory); None: no bar."""
    from cti.db.engine import create_engine
    from cti.db.migrate import upgrade_async
    from cti.dialer import store
    from cti.dialer.importer import import_contacts

    engine = create_engine(url)
    try:
        await upgrade_async(engine)
        rules = {"ruleset": "auto", "countries": ["FR", "MA"]} if messy else {"ruleset": "fr"}
        await store.create_campaign(engine, "bench", rules)
        started, cpu = time.perf_counter(), time.process_time()
        if progress is not None:
            from cti.progress import Bar

            with Bar(io.StringIO(), "reading", progress, then="saving", force=True) as bar:
                report = await import_contacts(
                    engine, path, "bench", progress=lambda rows, done: bar.update(done, rows)
                )
        else:
            report = await import_contacts(engine, path, "bench")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # CPU time of this process (its threads included; not the PostgreSQL server's): steadier than
    # the wall time on a machine shared with other work.
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "accepted": report.accepted,
            "rejected": report.rejected, "peak_rss_mb": round(peak, 1)}  # fmt: skip


def run_child(url: str, path: Path, progress: bool = False) -> dict[str, Any]:
    flags = ["--messy"] if path.name.startswith("messy") else []
    flags += ["--progress"] if progress else []
    command = [sys.executable, __file__, "--child", url, str(path), *flags]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def sqlite_case(work: Path, path: Path, tag: str, progress: bool = False) -> dict[str, Any]:
    db = work / f"import-{tag}.db"
    db.unlink(missing_ok=True)
    return run_child(f"sqlite+aiosqlite:///{db}", path, progress)


async def _pg_db(admin_url: str, name: str, create: bool) -> None:
    import asyncpg

    admin = await asyncpg.connect(admin_url, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def pg_case(admin_url: str, path: Path, tag: str, progress: bool = False) -> dict[str, Any]:
    name = f"cti_import_bench_{os.getpid()}_{tag}"
    asyncio.run(_pg_db(admin_url, name, create=True))
    try:
        url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
        return run_child(url, path, progress)
    finally:
        asyncio.run(_pg_db(admin_url, name, create=False))


def main() -> int:
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        flags = set(sys.argv[4:])
        size = os.path.getsize(sys.argv[3]) if "--progress" in flags else None
        result = _child(sys.argv[2], sys.argv[3], "--messy" in flags, size)
        print(json.dumps(asyncio.run(result)))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--pg-admin", default=ADMIN)
    parser.add_argument("--messy", action="store_true", help="a cp1252 CRM export with overseas numbers")
    parser.add_argument(
        "--progress", action="store_true", help="draw the import's progress bar (into memory)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stem, make = ("messy", generate_messy) if args.messy else ("", generate)
        files = {"full": work / f"{stem}full.csv", "tenth": work / f"{stem}tenth.csv"}
        make(files["full"], args.rows)
        make(files["tenth"], args.rows // 10)
        size = files["full"].stat().st_size / 1e6
        print(f"{args.rows:,} rows, {size:.0f} MB; {os.cpu_count()} CPUs")
        for backend, skip in (("sqlite", args.skip_sqlite), ("postgresql", args.skip_pg)):
            if skip:
                continue
            for tag, path in files.items():
                case = (
                    sqlite_case(work, path, tag, args.progress)
                    if backend == "sqlite"
                    else pg_case(args.pg_admin, path, tag, args.progress)
                )
                rows = case["accepted"] + case["rejected"]
                rate = rows / case["seconds"] if case["seconds"] else 0
                print(
                    f"{backend:<10} {rows:>9,} rows: {case['seconds']:>6.2f} s ({rate:,.0f} rows/s, "
                    f"CPU {case['cpu_s']:.2f} s), "
                    f"{case['accepted']:,} imported, {case['rejected']:,} rejected, "
                    f"peak RSS {case['peak_rss_mb']} MB"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
