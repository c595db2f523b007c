"""SQL for the directory: every query the service runs, on a session it is given.

No timeouts, no error handling here: the service (`lookup.py`) decides how long a query may take
and what a failure means for the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cti.db.models import Call, CallCustomer, Customer, CustomerPhone, Ticket
from cti.directory.customer import CallSummary, CustomerFile, Phone, TicketSummary

_FILE_COLUMNS = (
    Customer.id,
    Customer.name,
    Customer.account,
    Customer.address,
    Customer.notes,
    Customer.vip,
    Customer.queue_priority,
    CustomerPhone.e164,
    CustomerPhone.label,
)


def files_from_rows(rows: Iterable[Sequence[Any]]) -> list[CustomerFile]:
    """Customer files from rows of `_FILE_COLUMNS` (by position) ordered by customer: one row
    per phone."""
    files: dict[int, tuple[Sequence[Any], list[Phone]]] = {}
    for row in rows:
        entry = files.setdefault(row[0], (row, []))
        if row[7] is not None:
            entry[1].append(Phone(row[7], row[8]))
    return [
        CustomerFile(
            id=cid,
            name=name,
            account=account,
            address=address,
            notes=notes,
            vip=bool(vip),
            queue_priority=priority,
            phones=tuple(phones),
        )
        for (cid, name, account, address, notes, vip, priority, *_), phones in files.values()
    ]


def rank_matches(found: list[CustomerFile], exact: str, limit: int) -> tuple[list[CustomerFile], bool]:
    """Customers holding the exact E.164 first, then by name; (the first `limit`, truncated)."""
    found.sort(key=lambda c: (all(p.e164 != exact for p in c.phones), c.name.casefold(), c.id or 0))
    return found[:limit], len(found) > limit


def customers_by_phone_sql(forms: int, *, numbered: bool = False) -> str:
    """`customers_by_phone`'s query in plain SQL (parameters: the forms, then the limit), run
    without SQLAlchemy's statement layer: qmark for the SQLite lookup thread (`sqlite_lookup.py`),
    `$n` (`numbered`) for asyncpg (`customers_by_phone_raw`).
    tests/test_directory_lookup.py checks that they give the ORM query's answers."""
    marks = [f"${n}" if numbered else "?" for n in range(1, forms + 2)]
    return (
        "SELECT c.id, c.name, c.account, c.address, c.notes, c.vip, c.queue_priority, p.e164, p.label"
        " FROM customers AS c LEFT OUTER JOIN customer_phones AS p ON p.customer_id = c.id"
        " WHERE c.id IN (SELECT DISTINCT customer_id FROM customer_phones"
        f" WHERE e164 IN ({', '.join(marks[:-1])}) LIMIT {marks[-1]})"
        " ORDER BY c.id, p.id"
    )


async def customers_by_phone_raw(
    engine: AsyncEngine, forms: Sequence[str], limit: int
) -> tuple[list[CustomerFile], bool]:
    """`customers_by_phone` on PostgreSQL through the pool's asyncpg connection itself: one
    prepared statement (asyncpg caches it per connection), no transaction, and none of the ORM's
    statement handling, which cost about 2 ms of event-loop CPU per lookup."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        rows = await driver.fetch(customers_by_phone_sql(len(forms), numbered=True), *forms, limit + 1)
    return rank_matches(files_from_rows(rows), forms[0], limit)


async def customers_by_phone(
    session: AsyncSession, forms: Sequence[str], limit: int
) -> tuple[list[CustomerFile], bool]:
    """Customers holding any of `forms`, with all their phones, in one round trip.

    The inner query walks the e164 index; its LIMIT bounds the pop's size when a switchboard
    number is shared by hundreds of customers. Returns (files, truncated); customers holding the
    exact first form (E.164) come first."""
    matching = select(CustomerPhone.customer_id).where(CustomerPhone.e164.in_(forms)).distinct()
    query = (
        select(*_FILE_COLUMNS)
        .outerjoin(CustomerPhone, CustomerPhone.customer_id == Customer.id)
        .where(Customer.id.in_(matching.limit(limit + 1)))
        .order_by(Customer.id, CustomerPhone.id)
    )
    return rank_matches(files_from_rows((await session.execute(query)).all()), forms[0], limit)


async def customers_by_id(session: AsyncSession, ids: Sequence[int]) -> list[CustomerFile]:
    query = (
        select(*_FILE_COLUMNS)
        .outerjoin(CustomerPhone, CustomerPhone.customer_id == Customer.id)
        .where(Customer.id.in_(ids))
        .order_by(Customer.id, CustomerPhone.id)
    )
    return files_from_rows((await session.execute(query)).all())


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(
    session: AsyncSession, text: str, phone_forms: Sequence[str], limit: int
) -> list[CustomerFile]:
    """Customers whose name contains `text`, whose account is `text`, or holding the number."""
    conditions = [
        Customer.name.ilike(f"%{_escape_like(text)}%", escape="\\"),
        Customer.account == text,
    ]
    if phone_forms:
        holders = select(CustomerPhone.customer_id).where(CustomerPhone.e164.in_(phone_forms))
        conditions.append(Customer.id.in_(holders))
    ids = select(Customer.id).where(or_(*conditions)).order_by(Customer.name, Customer.id).limit(limit)
    found = await customers_by_id(session, list((await session.scalars(ids)).all()))
    return sorted(found, key=lambda c: (c.name.casefold(), c.id or 0))


async def calls_for(session: AsyncSession, customer_id: int, limit: int) -> list[CallSummary]:
    """The customer's calls, newest first: those an agent matched to them (call_customers, which
    also covers outbound calls), and those from one of their numbers that no agent matched to
    someone else (a number shared by two customers must not mix their histories)."""
    phones = select(CustomerPhone.e164).where(CustomerPhone.customer_id == customer_id)
    by_choice = (
        select(Call)
        .join(CallCustomer, (CallCustomer.server == Call.server) & (CallCustomer.linkedid == Call.linkedid))
        .where(CallCustomer.customer_id == customer_id)
    )
    by_number = (
        select(Call)
        .outerjoin(
            CallCustomer, (CallCustomer.server == Call.server) & (CallCustomer.linkedid == Call.linkedid)
        )
        .where(Call.caller_e164.in_(phones), CallCustomer.id.is_(None))
    )
    calls: dict[int, Call] = {}
    for query in (by_choice, by_number):
        newest = query.order_by(Call.started_at.desc(), Call.id.desc()).limit(limit)
        for call in (await session.scalars(newest)).all():
            calls[call.id] = call
    ordered = sorted(calls.values(), key=lambda c: (c.started_at, c.id), reverse=True)[:limit]
    return [_call_summary(c) for c in ordered]


def _call_summary(call: Call) -> CallSummary:
    return CallSummary(
        id=call.id,
        server=call.server,
        linkedid=call.linkedid,
        direction=call.direction,
        started_at=call.started_at,
        answered_at=call.answered_at,
        ended_at=call.ended_at,
        caller_e164=call.caller_e164,
        queue=call.queue,
        agent=call.agent,
        outcome=call.outcome,
        wait_s=call.wait_s,
        talk_s=call.talk_s,
    )


async def tickets_for(session: AsyncSession, customer_id: int, limit: int) -> list[TicketSummary]:
    query = (
        select(Ticket)
        .where(Ticket.customer_id == customer_id)
        .order_by(Ticket.opened_at.desc(), Ticket.id.desc())
        .limit(limit)
    )
    return [
        TicketSummary(
            id=t.id,
            server=t.server,
            linkedid=t.linkedid,
            agent=t.agent,
            queue=t.queue,
            category=t.category,
            notes=t.notes,
            status=t.status,
            opened_at=t.opened_at,
            resolved_at=t.resolved_at,
        )
        for t in (await session.scalars(query)).all()
    ]


async def set_call_customer(
    session: AsyncSession, server: str, linkedid: str, customer_id: int, username: str | None
) -> None:
    """Upsert: an agent may change their mind, and a transferred call's next agent may too."""
    values = {
        "server": server,
        "linkedid": linkedid,
        "customer_id": customer_id,
        "chosen_by": username,
        "chosen_at": datetime.now(UTC),
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(CallCustomer).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[CallCustomer.server, CallCustomer.linkedid],
        set_={k: statement.excluded[k] for k in ("customer_id", "chosen_by", "chosen_at")},
    )
    await session.execute(statement)


async def insert_customer(session: AsyncSession, fields: dict[str, Any], phones: Sequence[Phone]) -> int:
    row = Customer(**fields)
    session.add(row)
    await session.flush()
    session.add_all(CustomerPhone(customer_id=row.id, e164=p.e164, label=p.label) for p in phones)
    await session.flush()
    return row.id


async def update_customer(
    session: AsyncSession, customer_id: int, fields: dict[str, Any], phones: Sequence[Phone] | None
) -> bool:
    """Apply `fields`, and make the customer's numbers exactly `phones` when given (existing rows
    are kept, so their ids stay stable). False when there is no such customer."""
    row = await session.get(Customer, customer_id)
    if row is None:
        return False
    for name, value in fields.items():
        setattr(row, name, value)
    if phones is not None:
        await _replace_phones(session, customer_id, phones)
    await session.flush()
    return True


async def _replace_phones(session: AsyncSession, customer_id: int, phones: Sequence[Phone]) -> None:
    wanted = {p.e164: p for p in phones}
    current = await session.scalars(select(CustomerPhone).where(CustomerPhone.customer_id == customer_id))
    for stored in current.all():
        phone = wanted.pop(stored.e164, None)
        if phone is None:
            await session.delete(stored)
        elif phone.label != stored.label:
            stored.label = phone.label
    session.add_all(
        CustomerPhone(customer_id=customer_id, e164=p.e164, label=p.label) for p in wanted.values()
    )


async def call_customer_id(session: AsyncSession, server: str, linkedid: str) -> int | None:
    query = select(CallCustomer.customer_id).where(
        CallCustomer.server == server, CallCustomer.linkedid == linkedid
    )
    found: int | None = await session.scalar(query)
    return found
