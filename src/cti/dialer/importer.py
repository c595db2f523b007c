"""`cti campaign import`: a contact list into a campaign, all accepted rows or none.

One pass over the file, in constant memory, with the database working beside it: each row is
checked (number, time zone, consent...) and, when good, goes into the current chunk; a full chunk
is inserted while the next one is read (aiosqlite's thread, PostgreSQL's own process), all in
one transaction. Duplicates are left to the unique (campaign, number) index: an insert that
conflicts is skipped, the first spelling in the file wins, and at the end the skipped rows are
found by line number and reported as a duplicate of an earlier line or as a number the campaign
already had. Do-not-call numbers are checked in memory (the lists, not the file, are held). What
is kept per accepted row is its line and its number (12 bytes), to find the skipped ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import heapq
import tempfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cti.db.models import DialerContact
from cti.dialer.campaigns import resolve_rules
from cti.dialer.csv_import import (
    ImportFileError,
    Layout,
    NumberCheck,
    RowError,
    bytes_read,
    checked_values,
    layout_of,
    open_rows,
    records,
    sniff_encoding,
)
from cti.dialer.store import GLOBAL_DNC, dnc_numbers, get_campaign, utcnow
from cti.humanize import plural

CHUNK = 10_000
KEEP_REASONS = 1000  # rejected rows listed in the report; all of them go to the errors file
# Told (rows read, bytes of the file read) every PROGRESS_EVERY rows: the caller draws a bar.
Progress = Callable[[int, int], None]
PROGRESS_EVERY = 2048
# The order `csv_import.checked_values` builds rows in, between the campaign and the constants.
_COLUMNS = ("campaign_id", "phone_e164", "phone_raw", "fields", "timezone", "country", "subdivision",
            "consent", "priority", "line", "status", "attempts", "updated_at")  # fmt: skip
_NAMES = ", ".join(_COLUMNS)
_SQLITE_INSERT = (
    f"INSERT INTO dialer_contacts ({_NAMES}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    "ON CONFLICT (campaign_id, phone_e164) DO NOTHING"
)
_PG_STAGE = "cti_import_stage"
# The first line of the file wins a duplicate: rows go in line order.
_PG_INSERT = (
    f"INSERT INTO dialer_contacts ({_NAMES}) SELECT {_NAMES} FROM {_PG_STAGE} ORDER BY line "
    "ON CONFLICT (campaign_id, phone_e164) DO NOTHING"
)


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
    # Accepted rows whose number was read otherwise than written (+33 6 92… → +262 692…).
    notes: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would be imported" if self.dry_run else "imported"
        shown = "\\t" if self.delimiter == "\t" else self.delimiter
        lines = [f"read {plural(self.rows, 'row')} ({self.encoding}, '{shown}' delimited)"]
        if self.fields:
            lines.append(f"contact fields kept: {', '.join(self.fields)}")
        told = sorted([*self.reasons, *((line, f"note: {note}") for line, note in self.notes)])
        lines += [f"line {line}: {text}" for line, text in told]
        if self.rejected > len(self.reasons):
            more = self.rejected - len(self.reasons)
            lines.append(f"... and {plural(more, 'more rejected row')} (see --errors)")
        lines.append(
            f"campaign {self.campaign}: {plural(self.accepted, 'contact')} {verb}; "
            f"{plural(self.rejected, 'row')} rejected"
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
            "notes": [{"line": line, "note": note} for line, note in self.notes],
        }


@dataclass
class _Rejections:
    """Rejected rows: counted, the first ones kept for the report, every one spooled (line order)
    for the errors file."""

    report: ImportReport
    spool: IO[str] | None
    writer: Any = None

    def __post_init__(self) -> None:
        if self.spool is not None:
            self.writer = csv.writer(self.spool, delimiter=";")

    def add(self, line: int, reason: str, cells: list[str]) -> None:
        self.report.rejected += 1
        self.report.reasons.append((line, reason))
        if len(self.report.reasons) > 2 * KEEP_REASONS:
            self._trim()
        if self.writer is not None:
            self.writer.writerow([line, reason, *cells])

    def _trim(self) -> None:
        self.report.reasons = sorted(self.report.reasons)[:KEEP_REASONS]


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
    checker = NumberCheck(campaign.region, resolve_rules(campaign.ruleset, campaign.ruleset_toml))
    encoding = sniff_encoding(path)
    with contextlib.ExitStack() as stack:
        spool = (
            stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8", newline=""))
            if errors_path
            else None
        )
        rejections = _Rejections(report, spool)
        async with engine.connect() as conn:
            transaction = await conn.begin()
            try:
                layout, skipped_rows = await _load(
                    conn, path, encoding, campaign, checker, rejections, progress
                )
                dropped = await _dropped(conn, campaign.id, skipped_rows)
            except BaseException:
                await transaction.rollback()
                raise
            await (transaction.rollback() if dry_run else transaction.commit())
        report.encoding, report.delimiter = layout.encoding, layout.delimiter
        report.fields = [name for _, name in layout.extra]
        for line, reason in dropped:
            report.accepted -= 1
            report.rejected += 1
            report.reasons.append((line, reason))
        report.reasons = sorted(report.reasons)[:KEEP_REASONS]
        if errors_path is not None and spool is not None:
            _write_errors(Path(errors_path), path, layout, spool, dropped)
    return report


@dataclass
class _Accepted:
    """Per accepted row, its line and number (E.164 as an integer): 12 bytes a row."""

    lines: array[int] = field(default_factory=lambda: array("l"))
    numbers: array[int] = field(default_factory=lambda: array("q"))
    max_id_before: int = 0


async def _load(
    conn: AsyncConnection,
    path: Path,
    encoding: str,
    campaign: Any,
    checker: NumberCheck,
    rejections: _Rejections,
    progress: Progress | None,
) -> tuple[Layout, _Accepted]:
    accepted = _Accepted(max_id_before=int(await conn.scalar(select(func.max(DialerContact.id))) or 0))
    dnc_global = await dnc_numbers(conn, [GLOBAL_DNC])
    dnc_campaign = await dnc_numbers(conn, [campaign.name])
    writer = _ContactWriter(conn, campaign.id)
    await writer.prepare()
    notes = rejections.report.notes
    handle, delimiter, skipped = open_rows(path, encoding)
    try:
        with handle:
            rows = records(handle, delimiter, skipped)
            header = next(rows, None)
            if header is None:
                raise ImportFileError("the file is empty")
            layout = layout_of(header[1], encoding, delimiter)
            for count, (line, cells) in enumerate(rows, 1):
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress(count, bytes_read(handle))
                try:
                    values = checked_values(line, cells, layout, checker, notes)
                except RowError as exc:
                    rejections.add(line, str(exc), cells)
                    continue
                number = int(values[0][1:])
                if number in dnc_global or number in dnc_campaign:
                    which = "global" if number in dnc_global else "campaign's"
                    rejections.add(line, f"{values[0]} on the {which} do-not-call list", cells)
                    if notes and notes[-1][0] == line:
                        notes.pop()
                    continue
                accepted.lines.append(line)
                accepted.numbers.append(number)
                if len(notes) > 2 * KEEP_REASONS:
                    del notes[KEEP_REASONS:]
                await writer.add(values)
            if progress is not None:
                progress(rejections.report.rejected + len(accepted.lines), bytes_read(handle))
            await writer.flush()
    except BaseException:
        await writer.abort()
        raise
    rejections.report.rows = len(accepted.lines) + rejections.report.rejected
    rejections.report.accepted = len(accepted.lines)
    return layout, accepted


async def _dropped(conn: AsyncConnection, campaign_id: int, accepted: _Accepted) -> list[tuple[int, str]]:
    """Accepted rows the unique index skipped: (line, why), in line order."""
    query = (
        select(DialerContact.line)
        .where(DialerContact.campaign_id == campaign_id, DialerContact.id > accepted.max_id_before)
        .order_by(DialerContact.line)
    )
    inserted = select(func.count()).where(
        DialerContact.campaign_id == campaign_id, DialerContact.id > accepted.max_id_before
    )
    if await conn.scalar(inserted) == len(accepted.lines):
        return []
    missing: list[int] = []  # indexes into accepted
    position = 0
    stored = await conn.stream(query)
    async for part in stored.partitions(20_000):  # row by row, the async bridge costs more than the rest
        for (line,) in part:
            while accepted.lines[position] != line:
                missing.append(position)
                position += 1
            position += 1
    missing.extend(range(position, len(accepted.lines)))
    return await _why_dropped(conn, campaign_id, accepted, missing)


async def _why_dropped(
    conn: AsyncConnection, campaign_id: int, accepted: _Accepted, missing: list[int]
) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for start in range(0, len(missing), 500):
        chunk = missing[start : start + 500]
        numbers = sorted({f"+{accepted.numbers[i]}" for i in chunk})
        holders = {
            phone: (line, contact_id)
            for phone, line, contact_id in (
                await conn.execute(
                    select(DialerContact.phone_e164, DialerContact.line, DialerContact.id).where(
                        DialerContact.campaign_id == campaign_id, DialerContact.phone_e164.in_(numbers)
                    )
                )
            ).all()
        }
        for index in chunk:
            phone = f"+{accepted.numbers[index]}"
            line, contact_id = holders[phone]
            mine = contact_id > accepted.max_id_before
            out.append(
                (
                    accepted.lines[index],
                    f"duplicate of line {line} ({phone})" if mine else f"{phone} already in the campaign",
                )
            )
    return out


def _write_errors(
    target: Path, source: Path, layout: Layout, spool: IO[str], dropped: list[tuple[int, str]]
) -> None:
    """The errors file: rejected rows with their line and reason, in line order (the rows the
    index skipped are read again from the file)."""
    reasons = dict(dropped)
    spool.seek(0)
    early = ((int(r[0]), r) for r in csv.reader(spool, delimiter=";"))
    with open(target, "w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(["line", "reason", *layout.header])
        late = (
            (line, [str(line), reasons[line], *cells]) for line, cells in _rows_at(source, layout, reasons)
        )
        for _, row in heapq.merge(early, late, key=lambda item: item[0]):
            writer.writerow(row)


def _rows_at(source: Path, layout: Layout, wanted: dict[int, str]) -> Iterator[tuple[int, list[str]]]:
    if not wanted:
        return
    handle, delimiter, skipped = open_rows(source, layout.encoding)
    with handle:
        for line, cells in records(handle, delimiter, skipped):
            if line in wanted:
                yield line, cells


class _ContactWriter:
    """Inserts contacts by chunks on the import's connection, one chunk being written while the
    next is read. SQLite: executemany of plain tuples, skipping conflicts. PostgreSQL: COPY into
    a staging table, then one INSERT ... SELECT that skips conflicts (COPY itself cannot)."""

    def __init__(self, conn: AsyncConnection, campaign_id: int) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        now = utcnow()
        # SQLite stores our UTC timestamps as text (what UTCDateTime writes through the ORM).
        stamp: Any = now if self.postgres else now.strftime("%Y-%m-%d %H:%M:%S.%f")
        self.head = (campaign_id,)
        self.tail = ("pending", 0, stamp)
        self.pending: list[tuple[Any, ...]] = []
        self.writing: asyncio.Task[None] | None = None

    async def _driver(self) -> Any:
        raw = await self.conn.get_raw_connection()
        return raw.driver_connection

    async def prepare(self) -> None:
        if self.postgres:
            driver = await self._driver()
            await driver.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {_PG_STAGE} "
                f"(LIKE dialer_contacts INCLUDING DEFAULTS) ON COMMIT DROP"
            )

    async def add(self, values: tuple[Any, ...]) -> None:
        self.pending.append(self.head + values + self.tail)
        if len(self.pending) >= CHUNK:
            await self._start()

    async def _start(self) -> None:
        rows, self.pending = self.pending, []
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing
        if rows:
            self.writing = asyncio.create_task(self._write(rows))

    async def flush(self) -> None:
        await self._start()
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    async def abort(self) -> None:
        if self.writing is not None:
            self.writing.cancel()
            with contextlib.suppress(BaseException):
                await self.writing

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        driver = await self._driver()
        if not self.postgres:
            await driver.executemany(_SQLITE_INSERT, rows)
            return
        await driver.copy_records_to_table(_PG_STAGE, records=rows, columns=_COLUMNS)
        await driver.execute(_PG_INSERT)
        await driver.execute(f"DELETE FROM {_PG_STAGE}")
