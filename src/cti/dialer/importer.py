"""`cti campaign import`: a contact list into a campaign, all accepted rows or none.

Two passes over the file keep memory flat whatever its size. The first validates every row and
keeps only each accepted row's number, as an integer in a compact array (8 bytes a row), so that
duplicates inside the file, numbers already in the campaign and do-not-call numbers are found
without holding the rows. The second reads the file again, writes the rejected rows to the errors
file and inserts the accepted ones in chunks, inside one transaction.
"""

from __future__ import annotations

import csv
import json
from array import array
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cti.db.models import DialerContact
from cti.dialer.csv_import import (
    ContactRow,
    ImportFileError,
    Layout,
    NumberCheck,
    RowError,
    layout_of,
    open_rows,
    read_row,
    records,
    sniff_encoding,
)
from cti.dialer.store import GLOBAL_DNC, dnc_numbers, get_campaign, utcnow

CHUNK = 10_000
KEEP_REASONS = 1000  # rejected rows listed in the report; all of them go to the errors file
Progress = Callable[[str, int], None]
_COLUMNS = ("campaign_id", "phone_e164", "phone_raw", "fields", "timezone", "country", "subdivision",
            "consent", "priority", "status", "attempts", "line", "updated_at")  # fmt: skip


@dataclass
class ImportReport:
    campaign: str
    dry_run: bool
    encoding: str = ""
    delimiter: str = ""
    fields: list[str] = field(default_factory=list)
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would be imported" if self.dry_run else "imported"
        shown = "\\t" if self.delimiter == "\t" else self.delimiter
        lines = [f"read {self.rows} rows ({self.encoding}, '{shown}' delimited)"]
        if self.fields:
            lines.append(f"contact fields kept: {', '.join(self.fields)}")
        lines += [f"line {line}: {reason}" for line, reason in self.reasons]
        if self.rejected > len(self.reasons):
            lines.append(f"... and {self.rejected - len(self.reasons)} more rejected rows (see --errors)")
        lines.append(
            f"campaign {self.campaign}: {self.accepted} contacts {verb}; {self.rejected} rows rejected"
        )
        if self.dry_run:
            lines.append("dry run: nothing was written")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "reasons": [{"line": line, "reason": reason} for line, reason in self.reasons],
        }


@dataclass
class _FirstPass:
    layout: Layout
    numbers: array[int]  # per data row: the E.164 number as an integer, 0 when rejected
    lines: array[int]
    rejected: dict[int, str]  # data row index -> reason


async def import_contacts(
    engine: AsyncEngine,
    path: str | Path,
    campaign_name: str,
    *,
    dry_run: bool = False,
    errors_path: str | Path | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Raises ImportFileError for a file that cannot be read as a contact list at all."""
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"no such file: {path}")
    campaign = await get_campaign(engine, campaign_name)
    report = ImportReport(campaign.name, dry_run)
    checker = NumberCheck(campaign.region)
    first = _first_pass(path, checker, progress)
    report.encoding, report.delimiter = first.layout.encoding, first.layout.delimiter
    report.fields = [name for _, name in first.layout.extra]
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await _reject_known(conn, first, campaign.id, campaign.name)
            await _second_pass(conn, path, first, campaign.id, checker, report, errors_path, progress)
        except BaseException:
            await transaction.rollback()
            raise
        if dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()
    return report


# ----------------------------------------------------------------------------------- pass 1
def _first_pass(path: Path, checker: NumberCheck, progress: Progress | None) -> _FirstPass:
    encoding = sniff_encoding(path)
    handle, delimiter, skipped = open_rows(path, encoding)
    with handle:
        rows = records(handle, delimiter, skipped)
        header = next(rows, None)
        if header is None:
            raise ImportFileError("the file is empty")
        first = _FirstPass(layout_of(header[1], encoding, delimiter), array("q"), array("l"), {})
        for index, (line, cells) in enumerate(rows):
            first.lines.append(line)
            try:
                row = read_row(line, cells, first.layout, checker)
            except RowError as exc:
                first.numbers.append(0)
                first.rejected[index] = str(exc)
            else:
                first.numbers.append(int(row.e164[1:]))
            if progress is not None and index % 50_000 == 0:
                progress("checking", index)
    _reject_duplicates(first)
    return first


def _reject_duplicates(first: _FirstPass) -> None:
    ordered = sorted(first.numbers)
    repeated = {a for a, b in pairwise(ordered) if a == b and a != 0}
    del ordered
    if not repeated:
        return
    seen: dict[int, int] = {}
    for index, number in enumerate(first.numbers):
        if number not in repeated:
            continue
        if number in seen:
            first.rejected[index] = f"duplicate of line {seen[number]} (+{number})"
            first.numbers[index] = 0
        else:
            seen[number] = first.lines[index]


async def _reject_known(conn: AsyncConnection, first: _FirstPass, campaign_id: int, name: str) -> None:
    """Numbers already in the campaign or on its or the global do-not-call list."""
    in_campaign = await _campaign_numbers(conn, campaign_id)
    dnc_global = await dnc_numbers(conn, [GLOBAL_DNC])
    dnc_campaign = await dnc_numbers(conn, [name])
    if not (in_campaign or dnc_global or dnc_campaign):
        return
    for index, number in enumerate(first.numbers):
        if number == 0:
            continue
        reason = (
            "on the global do-not-call list"
            if number in dnc_global
            else "on the campaign's do-not-call list"
            if number in dnc_campaign
            else "already in the campaign"
            if number in in_campaign
            else None
        )
        if reason is not None:
            first.rejected[index] = f"+{number} {reason}"
            first.numbers[index] = 0


async def _campaign_numbers(conn: AsyncConnection, campaign_id: int) -> set[int]:
    result = await conn.stream(
        select(DialerContact.phone_e164).where(DialerContact.campaign_id == campaign_id)
    )
    return {int(number[1:]) async for (number,) in result}


# ----------------------------------------------------------------------------------- pass 2
async def _second_pass(
    conn: AsyncConnection,
    path: Path,
    first: _FirstPass,
    campaign_id: int,
    checker: NumberCheck,
    report: ImportReport,
    errors_path: str | Path | None,
    progress: Progress | None,
) -> None:
    layout = first.layout
    writer = _ContactWriter(conn, campaign_id, dry_run=report.dry_run)
    with ExitStack() as stack:
        errors = _errors_file(stack, errors_path, layout.header)
        handle, delimiter, skipped = open_rows(path, layout.encoding)
        stack.enter_context(handle)
        rows = records(handle, delimiter, skipped)
        next(rows)
        for index, (line, cells) in enumerate(rows):
            report.rows += 1
            reason = first.rejected.get(index)
            if reason is not None:
                _reject(report, errors, line, reason, cells)
                continue
            number = first.numbers[index]
            row = read_row(line, cells, layout, checker, e164=f"+{number}")
            await writer.add(row)
            report.accepted += 1
            if progress is not None and index % 50_000 == 0:
                progress("writing", index)
        await writer.flush()


def _errors_file(stack: ExitStack, errors_path: str | Path | None, header: tuple[str, ...]) -> Any:
    if errors_path is None:
        return None
    handle: IO[str] = stack.enter_context(open(errors_path, "w", encoding="utf-8-sig", newline=""))  # noqa: SIM115
    writer = csv.writer(handle, delimiter=";")
    writer.writerow(["line", "reason", *header])
    return writer


def _reject(report: ImportReport, errors: Any, line: int, reason: str, cells: list[str]) -> None:
    report.rejected += 1
    if len(report.reasons) < KEEP_REASONS:
        report.reasons.append((line, reason))
    if errors is not None:
        errors.writerow([line, reason, *cells])


class _ContactWriter:
    """Inserts contacts by chunks on the import's connection: COPY on PostgreSQL, executemany of
    plain tuples on SQLite (no ORM objects: a million rows must not cost a million objects)."""

    def __init__(self, conn: AsyncConnection, campaign_id: int, dry_run: bool) -> None:
        self.conn = conn
        self.campaign_id = campaign_id
        self.dry_run = dry_run
        self.now = utcnow()
        self.pending: list[tuple[Any, ...]] = []
        self.postgres = conn.dialect.name == "postgresql"

    async def add(self, row: ContactRow) -> None:
        self.pending.append(self._values(row))
        if len(self.pending) >= CHUNK:
            await self.flush()

    def _values(self, row: ContactRow) -> tuple[Any, ...]:
        fields = json.dumps(row.fields, ensure_ascii=False, separators=(",", ":"))
        # SQLite stores our UTC timestamps as text (what UTCDateTime writes through the ORM).
        stamp = self.now if self.postgres else self.now.strftime("%Y-%m-%d %H:%M:%S.%f")
        return (self.campaign_id, row.e164, row.raw, fields, row.timezone, row.country, row.subdivision,
                row.consent, row.priority, "pending", 0, row.line, stamp)  # fmt: skip

    async def flush(self) -> None:
        rows, self.pending = self.pending, []
        if not rows or self.dry_run:
            return
        raw = await self.conn.get_raw_connection()
        driver: Any = raw.driver_connection
        if self.postgres:
            await driver.copy_records_to_table("dialer_contacts", records=rows, columns=_COLUMNS)
            return
        placeholders = ", ".join("?" for _ in _COLUMNS)
        sql = f"INSERT INTO dialer_contacts ({', '.join(_COLUMNS)}) VALUES ({placeholders})"
        await driver.executemany(sql, rows)
