"""`cti customers ...`: the command-line side of the directory (argument parsing is in cti.cli).

Exit status of `import`: 0 every row imported, 1 some rows rejected (the others are imported),
2 the file or the arguments are unusable, 3 the database failed (nothing written either way).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import phonenumbers
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from cti.config import DirectorySettings, redact_url
from cti.db.engine import create_engine
from cti.directory.csv_import import CustomerCsv, ImportFileError, read_customers_csv
from cti.directory.importer import ImportReport, import_customers, write_errors
from cti.directory.lookup import CustomerDirectory
from cti.progress import Bar

EXIT_REJECTED = 1
EXIT_BAD_INPUT = 2
EXIT_DATABASE = 3


def check_region(region: str) -> str:
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ImportFileError(f"unknown region {region!r}: use a two-letter country code such as FR or MA")
    return code


def run_import(
    path: str,
    *,
    url: str,
    region: str,
    dry_run: bool = False,
    errors_path: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    from cti.db.migrate import upgrade

    try:
        # The file is read and checked before the database is touched: a wrong file must not
        # even migrate the schema.
        with Bar(err, "reading", None, "chars") as reading:
            source = read_customers_csv(
                path,
                check_region(region),
                lambda rows, done, total: reading.update(done, rows, total),
            )
    except ImportFileError as exc:
        print(f"cti customers import: {exc}", file=err)
        return EXIT_BAD_INPUT
    try:
        upgrade(url)
        with Bar(err, "saving", len(source.rows), "rows", then="committing") as saving:
            report = asyncio.run(_import(url, source, region.upper(), dry_run, saving.update))
    except (SQLAlchemyError, OSError) as exc:
        print(f"cti customers import: database error ({redact_url(url)}): {_reason(exc)}", file=err)
        print("nothing was written", file=err)
        return EXIT_DATABASE
    if errors_path:
        write_errors(errors_path, source, report.rejected)
    print(report.summary(), file=out)
    if errors_path:
        print(f"rejected rows written to {Path(errors_path)}", file=out)
    return EXIT_REJECTED if report.rejected else 0


async def _import(
    url: str, source: CustomerCsv, region: str, dry_run: bool, progress: Callable[[int], None]
) -> ImportReport:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return await import_customers(engine, source, region, dry_run=dry_run, progress=progress)
    finally:
        await engine.dispose()


def _reason(exc: BaseException) -> str:
    # SQLAlchemy's message carries the SQL and a help link; the driver's first line is the news.
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


def run_lookup(
    number: str, *, url: str, settings: DirectorySettings, as_json: bool = False, out: TextIO = sys.stdout
) -> int:
    """Who the desktop would pop for `number`: the same lookup, from a shell."""
    doc = asyncio.run(_lookup(url, settings, number))
    if as_json:
        json.dump(doc, out, ensure_ascii=False, indent=1)
        out.write("\n")
        return 0
    shown = doc["number"]["display"] or "-"
    print(f"{number!r} -> {doc['number']['e164'] or '-'} ({shown}): {doc['status']}", file=out)
    for customer in doc["customers"]:
        vip = " VIP" if customer["vip"] else ""
        ref = customer["id"] if customer["id"] is not None else customer["source"]
        print(f"  [{ref}] {customer['name']}{vip} account={customer['account'] or '-'}", file=out)
    return 0


async def _lookup(url: str, settings: DirectorySettings, number: str) -> dict[str, Any]:
    engine = create_engine(url, poolclass=NullPool)
    directory = CustomerDirectory.from_settings(engine, settings)
    try:
        return await directory.lookup_json(number)
    finally:
        await directory.close()
        await engine.dispose()
