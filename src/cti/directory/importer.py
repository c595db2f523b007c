"""Writing an imported customer list: one transaction, idempotent, nothing kept on a dry run.

A row is matched to an existing customer by `account` when it has one, else (or when no customer
has that account yet) by exact name plus one shared number. Matched customers are updated with
the row's non-empty cells (an empty cell never erases what the desktop or an earlier import
stored); their numbers are added, never duplicated, and numbers stored in a national spelling by
older imports are rewritten in E.164 rather than doubled.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cti.db.engine import session_factory
from cti.db.models import Customer, CustomerPhone
from cti.directory.csv_import import CsvRow, CustomerCsv, Rejected
from cti.directory.numbers import normalize, stored_forms
from cti.humanize import count, plural

# About twenty French and Moroccan customers in mixed number formats, for `cti demo`.
SAMPLE_CUSTOMERS = Path(__file__).with_name("sample_customers.csv")

Outcome = Literal["created", "updated", "unchanged"]
_CHUNK = 500
_INSERT_SLICE = 5000
T = TypeVar("T")


@dataclass
class ImportReport:
    source: CustomerCsv
    dry_run: bool
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would be" if self.dry_run else "were"
        lines = [
            f"read {plural(len(self.source.rows) + len(self.source.rejected), 'row')} "
            f"({self.source.encoding}, '{_show(self.source.delimiter)}' delimited)",
        ]
        if self.source.ignored_columns:
            lines.append(f"ignored columns: {', '.join(self.source.ignored_columns)}")
        lines += [f"line {r.line}: {r.reason}" for r in self.rejected]
        lines.append(
            f"customers {verb}: {count(self.created)} created, {count(self.updated)} updated, "
            f"{count(self.unchanged)} unchanged; {plural(len(self.rejected), 'row')} rejected"
        )
        if self.dry_run:
            lines.append("dry run: nothing was written")
        return "\n".join(lines)


def _show(delimiter: str) -> str:
    return "\\t" if delimiter == "\t" else delimiter


class _Existing:
    """The customers an import may touch, loaded once and indexed in memory: a 10,000-row file
    costs a few IN queries, not three per row."""

    def __init__(self, customers: Iterable[Customer], phones: Iterable[CustomerPhone], region: str) -> None:
        self.customers = {c.id: c for c in customers}
        self.phones: dict[int, list[CustomerPhone]] = defaultdict(list)
        self.by_account: dict[str, list[int]] = defaultdict(list)
        self.by_number: dict[str, set[int]] = defaultdict(set)
        for customer in self.customers.values():
            if customer.account:
                self.by_account[customer.account].append(customer.id)
        for phone in phones:
            self.phones[phone.customer_id].append(phone)
            e164 = normalize(phone.e164, region).e164
            if e164 is not None:
                self.by_number[e164].add(phone.customer_id)

    def match(self, row: CsvRow) -> list[int]:
        if row.account and self.by_account.get(row.account):
            return self.by_account[row.account]
        holders = set().union(*(self.by_number.get(p.e164, set()) for p in row.phones))
        return sorted(
            cid
            for cid in holders
            if self.customers[cid].name == row.name
            # A customer with another account is someone else, whatever their name.
            and not (row.account and self.customers[cid].account not in (None, row.account))
        )


async def import_customers(
    engine: AsyncEngine,
    source: CustomerCsv,
    region: str,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Apply `source` in one transaction; rolled back on a dry run or any failure. `progress`
    is told how many rows are written so far, a few times along the way."""
    report = ImportReport(source, dry_run, rejected=list(source.rejected))
    async with session_factory(engine)() as session:
        transaction = await session.begin()
        try:
            existing = await _load(session, source.rows, region)
            await _apply(session, existing, source.rows, region, report, progress)
        except BaseException:
            await transaction.rollback()
            raise
        if dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()
    if not dry_run and report.created + report.updated and engine.dialect.name == "postgresql":
        await _analyze(engine)
    report.rejected.sort(key=lambda r: r.line)
    return report


async def _analyze(engine: AsyncEngine) -> None:
    """Fresh planner statistics: right after a large first import PostgreSQL still believes the
    tables are empty and scans them sequentially, which made lookups 5x slower until autovacuum
    came by."""
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE customers, customer_phones"))


async def _load(session: AsyncSession, rows: Sequence[CsvRow], region: str) -> _Existing:
    accounts = sorted({r.account for r in rows if r.account})
    # Spelling out every number's old forms costs more than the import itself on a large file:
    # only worth it when some row was stored in another spelling than E.164.
    spell = stored_forms if await _has_legacy_spellings(session) else lambda e164, _region: [e164]
    forms = sorted({f for r in rows for p in r.phones for f in spell(p.e164, region)})
    ids: set[int] = set()
    for accounts_chunk in _chunks(accounts):
        by_account = select(Customer.id).where(Customer.account.in_(accounts_chunk))
        ids.update((await session.scalars(by_account)).all())
    for forms_chunk in _chunks(forms):
        by_phone = select(CustomerPhone.customer_id).where(CustomerPhone.e164.in_(forms_chunk))
        ids.update((await session.scalars(by_phone)).all())
    customers: list[Customer] = []
    phones: list[CustomerPhone] = []
    for ids_chunk in _chunks(sorted(ids)):
        customers += (await session.scalars(select(Customer).where(Customer.id.in_(ids_chunk)))).all()
        their_phones = select(CustomerPhone).where(CustomerPhone.customer_id.in_(ids_chunk))
        phones += (await session.scalars(their_phones.order_by(CustomerPhone.id))).all()
    return _Existing(customers, phones, region)


async def _has_legacy_spellings(session: AsyncSession) -> bool:
    column = CustomerPhone.e164
    odd = or_(~column.startswith("+"), *(column.contains(c) for c in (" ", "-", ".", "/", "(")))
    return (await session.scalar(select(CustomerPhone.id).where(odd).limit(1))) is not None


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


async def _apply(
    session: AsyncSession,
    existing: _Existing,
    rows: Sequence[CsvRow],
    region: str,
    report: ImportReport,
    progress: Callable[[int], None] | None = None,
) -> None:
    claimed: dict[int, int] = {}  # customer id -> the line that matched it
    created: list[CsvRow] = []
    for row in rows:
        matches = existing.match(row)
        if len(matches) > 1:
            ids = ", ".join(str(i) for i in matches)
            report.rejected.append(Rejected(row.line, f"matches {len(matches)} customers ({ids})", row.cells))
        elif matches and matches[0] in claimed:
            reason = f"same customer as line {claimed[matches[0]]}"
            report.rejected.append(Rejected(row.line, reason, row.cells))
        elif matches:
            claimed[matches[0]] = row.line
            outcome = _update(session, existing, matches[0], row, region)
            setattr(report, outcome, getattr(report, outcome) + 1)
        else:
            created.append(row)
    await session.flush()
    done = len(rows) - len(created)
    # New customers by slices, for the progress bar: each slice is still one batched INSERT.
    for start in range(0, len(created), _INSERT_SLICE):
        if progress is not None:
            progress(done + start)
        await _insert(session, created[start : start + _INSERT_SLICE])
    if progress is not None:
        progress(len(rows))
    report.created += len(created)


def _new_customer(row: CsvRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "account": row.account,
        "address": row.address,
        "notes": row.notes,
        "vip": bool(row.vip),
        "queue_priority": row.queue_priority or 0,
    }


async def _insert(session: AsyncSession, created: Sequence[CsvRow]) -> None:
    """New customers, then their phones, as two batched INSERTs: through the ORM's unit of work
    a 20,000-row file cost one statement per object."""
    if not created:
        return
    returning = insert(Customer).returning(Customer.id, sort_by_parameter_order=True)
    ids = (await session.scalars(returning, [_new_customer(row) for row in created])).all()
    phones = [
        {"customer_id": customer_id, "e164": phone.e164, "label": phone.label}
        for customer_id, row in zip(ids, created, strict=True)
        for phone in row.phones
    ]
    await session.execute(insert(CustomerPhone), phones)


def _update(
    session: AsyncSession, existing: _Existing, customer_id: int, row: CsvRow, region: str
) -> Outcome:
    customer = existing.customers[customer_id]
    changed = False
    wanted = {
        "name": row.name,
        "account": row.account,
        "address": row.address,
        "notes": row.notes,
        "vip": row.vip,
        "queue_priority": row.queue_priority,
    }
    for attribute, value in wanted.items():
        if value is not None and getattr(customer, attribute) != value:
            setattr(customer, attribute, value)
            changed = True
    changed = _merge_phones(session, existing.phones[customer_id], customer_id, row, region) or changed
    return "updated" if changed else "unchanged"


def _merge_phones(
    session: AsyncSession, stored: list[CustomerPhone], customer_id: int, row: CsvRow, region: str
) -> bool:
    by_e164: dict[str | None, CustomerPhone] = {}
    for stored_phone in stored:
        key = normalize(stored_phone.e164, region).e164
        # A customer may hold both spellings already: keep the E.164 row, leave the twin alone
        # (rewriting it would collide with the unique (customer, e164) pair).
        if key not in by_e164 or stored_phone.e164 == key:
            by_e164[key] = stored_phone
    changed = False
    for phone in row.phones:
        current = by_e164.get(phone.e164)
        if current is None:
            session.add(CustomerPhone(customer_id=customer_id, e164=phone.e164, label=phone.label))
            changed = True
            continue
        if current.e164 != phone.e164:
            current.e164 = phone.e164  # an old national spelling: rewrite, don't add a twin
            changed = True
        if phone.label is not None and current.label != phone.label:
            current.label = phone.label
            changed = True
    return changed


async def import_sample(engine: AsyncEngine, region: str = "FR") -> ImportReport:
    """Load the sample customers (idempotent: a second demo start changes nothing)."""
    from cti.directory.csv_import import read_customers_csv

    return await import_customers(engine, read_customers_csv(SAMPLE_CUSTOMERS, region), region)


def write_errors(path: str | Path, source: CustomerCsv, rejected: Sequence[Rejected]) -> None:
    """The rejected rows as CSV (line, reason, then the original columns), in UTF-8 with a BOM
    and the input's delimiter so that the same spreadsheet opens it with accents intact."""
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, delimiter=source.delimiter)
        writer.writerow(["line", "reason", *source.columns])
        for entry in rejected:
            padding = [""] * (len(source.columns) - len(entry.cells))
            writer.writerow([entry.line, entry.reason, *entry.cells, *padding])
