"""The tickets' logic and authorisation; it knows no HTTP and no WebSocket.

Every change is written in one transaction and its domain events are published only after the
commit, so a consumer never sees a state the database does not hold. Writes of this process are
serialised by a lock; the row is also locked (`SELECT ... FOR UPDATE` on PostgreSQL) and a breach
is stored with a guarded UPDATE, so a second process can neither undo a change nor publish the
same breach twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import structlog
from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from cti.calls.events import Event
from cti.config import TicketSettings
from cti.db.engine import insert_on_conflict, session_factory
from cti.db.models import CallCustomer, Customer, Ticket
from cti.tickets.events import TicketOpened, TicketSlaBreached, TicketUpdated
from cti.tickets.exceptions import (
    InvalidCategory,
    InvalidCustomer,
    InvalidNotes,
    InvalidTransition,
    TicketForbidden,
    TicketNotFound,
)
from cti.tickets.models import SYSTEM, Actor, Status, TicketView
from cti.tickets.sla import breach_pending, next_breach_at, sla_target_s

log = structlog.get_logger(__name__)

NOTES_LIMIT = 10_000
HISTORY_LIMIT = 500
UNRESOLVED: tuple[Status, ...] = ("open", "on_hold")
STATUSES: frozenset[str] = frozenset({"open", "on_hold", "resolved"})
# Each retry follows a ticket another daemon opened for the same call meanwhile.
_OPEN_RETRIES = 5


@dataclass
class _Unit:
    """One write: its instant, its session, and the events to publish once it is committed."""

    now: float
    session: AsyncSession
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BreachSweep:
    breached: list[TicketSlaBreached]
    # When the next running ticket reaches its target; None when none can.
    next_due_at: float | None


class TicketService:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: TicketSettings,
        publish: Callable[[Event], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = session_factory(engine)
        self._dialect = engine.dialect.name
        self._settings = settings
        self._publish = publish
        self._clock = clock
        self._lock = asyncio.Lock()

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories a ticket may be qualified with, in the configured order."""
        return self._settings.categories

    # -- opened and handed over by the daemon ---------------------------------------------------

    async def open_for_answer(
        self,
        server: str,
        linkedid: str,
        agent_username: str,
        queue: str | None,
        customer_id: int | None = None,
        identified_id: int | None = None,
    ) -> TicketView:
        """The call's ticket for the agent who answered it.

        Its customer: `customer_id` when given, else the one the agent picked on the pop, else
        `identified_id` (the only customer the caller's number matched).

        Idempotent: the same agent answering the same call again gets the same ticket, whatever its
        state. When the call's ticket is still unresolved and another agent answers (a transfer), it
        is handed over to them: a transferred caller keeps one ticket and one chronometer. A
        resolved ticket of another agent is left alone and a new one opened.
        """
        # Two daemons may handle the same answer at the same instant: each inserts the call's
        # next `seq`, the unique key lets one row in, and the other reads it back and decides again.
        for _ in range(_OPEN_RETRIES):
            async with self._writing() as unit:
                current = await self._latest_for_call(unit.session, server, linkedid)
                if current is not None and current.agent == agent_username:
                    return _view(current)
                if current is not None and current.status in UNRESOLVED:
                    return await self._reassign(unit, current, agent_username)
                if customer_id is None:
                    customer_id = await self._chosen_customer(unit.session, server, linkedid)
                if customer_id is None:
                    customer_id = identified_id
                seq = 1 if current is None else current.seq + 1
                row = await self._insert_once(unit, server, linkedid, seq, agent_username, queue, customer_id)
                if row is None:
                    log.info("ticket opened meanwhile by another daemon", linkedid=linkedid, seq=seq)
                    continue
                view = _view(row)
                unit.events.append(TicketOpened.of(view, unit.now))
                log.info(
                    "ticket opened", ticket_id=view.id, linkedid=linkedid, agent=agent_username, queue=queue
                )
                return view
        raise RuntimeError(f"no ticket for {server}/{linkedid}: the call's tickets kept changing")

    async def _insert_once(
        self,
        unit: _Unit,
        server: str,
        linkedid: str,
        seq: int,
        agent: str,
        queue: str | None,
        customer_id: int | None,
    ) -> Ticket | None:
        """The call's ticket number `seq`, or None when another daemon inserted it first."""
        values = {
            "server": server,
            "linkedid": linkedid,
            "seq": seq,
            "customer_id": customer_id,
            "agent": agent,
            "queue": queue,
            "status": "open",
            "opened_at": _utc(unit.now),
            "held_s": 0.0,
            "sla_target_s": sla_target_s(self._settings, queue, None),
            "reopened": 0,
            "updated_at": _utc(unit.now),
        }
        statement = (
            insert_on_conflict(self._dialect, Ticket)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["server", "linkedid", "seq"])
            .returning(Ticket.id)
        )
        ticket_id = await unit.session.scalar(statement)
        return None if ticket_id is None else await unit.session.get(Ticket, ticket_id)

    async def hand_over(self, server: str, linkedid: str, to_agent: str) -> TicketView | None:
        """Give the call's unresolved ticket to `to_agent`; None when the call has none."""
        async with self._writing() as unit:
            current = await self._latest_for_call(unit.session, server, linkedid)
            if current is None or current.status not in UNRESOLVED:
                return None
            if current.agent == to_agent:
                return _view(current)
            return await self._reassign(unit, current, to_agent)

    async def _reassign(self, unit: _Unit, row: Ticket, to_agent: str) -> TicketView:
        previous = row.agent
        # The SLA and the queue stay those of the first answer: the caller's wait goes on.
        self._settle_breach(unit, row)
        row.agent = to_agent
        view = await self._changed(unit, row, "handed_over", previous_agent=previous)
        log.info("ticket handed over", ticket_id=row.id, previous_agent=previous, agent=to_agent)
        return view

    # -- the agent's actions ----------------------------------------------------------------------

    async def qualify(
        self, ticket_id: int, actor: Actor, category: str | None = None, notes: str | None = None
    ) -> TicketView:
        """Set the category (which re-computes the SLA target) and/or the notes ("" clears them)."""
        self._check_qualification(category, notes)
        async with self._writing() as unit:
            row = await self._for_action(unit, ticket_id, actor, "qualify", UNRESOLVED)
            self._apply_qualification(row, category, notes)
            return await self._changed(unit, row, "qualified")

    async def hold(self, ticket_id: int, actor: Actor) -> TicketView:
        async with self._writing() as unit:
            row = await self._for_action(unit, ticket_id, actor, "hold", ("open",))
            row.status = "on_hold"
            row.hold_started_at = _utc(unit.now)
            return await self._changed(unit, row, "held")

    async def resume(self, ticket_id: int, actor: Actor) -> TicketView:
        async with self._writing() as unit:
            row = await self._for_action(unit, ticket_id, actor, "resume", ("on_hold",))
            _end_hold(row, unit.now)
            row.status = "open"
            return await self._changed(unit, row, "resumed")

    async def resolve(
        self, ticket_id: int, actor: Actor, category: str | None = None, notes: str | None = None
    ) -> TicketView:
        """Resolve, optionally qualifying in the same step; a hold in progress ends with it."""
        self._check_qualification(category, notes)
        async with self._writing() as unit:
            row = await self._for_action(unit, ticket_id, actor, "resolve", UNRESOLVED)
            self._apply_qualification(row, category, notes)
            _end_hold(row, unit.now)
            row.status = "resolved"
            row.resolved_at = _utc(unit.now)
            return await self._changed(unit, row, "resolved")

    async def reopen(self, ticket_id: int, actor: Actor) -> TicketView:
        """Open a resolved ticket again; its chronometer resumes where resolving stopped it."""
        async with self._writing() as unit:
            row = await self._for_action(unit, ticket_id, actor, "reopen", ("resolved",))
            # The time it spent resolved is not time worked on it: book it with the holds.
            if row.resolved_at is not None:
                row.held_s += max(unit.now - row.resolved_at.timestamp(), 0.0)
            row.resolved_at = None
            row.status = "open"
            row.reopened += 1
            return await self._changed(unit, row, "reopened")

    async def link_customer(self, ticket_id: int, actor: Actor, customer_id: int) -> TicketView:
        """Attach the customer the agent picked (or created) from the pop."""
        async with self._writing() as unit:
            row = await self._for_action(unit, ticket_id, actor, "link_customer", tuple(STATUSES))
            if await unit.session.get(Customer, customer_id) is None:
                raise InvalidCustomer(customer_id)
            row.customer_id = customer_id
            return await self._changed(unit, row, "customer_linked")

    # -- reads ------------------------------------------------------------------------------------

    async def get(self, ticket_id: int, actor: Actor) -> TicketView:
        async with self._sessions() as session:
            row = await session.get(Ticket, ticket_id)
            return _view(_authorised(row, ticket_id, actor, "read"))

    async def open_for_agent(self, username: str, actor: Actor = SYSTEM) -> list[TicketView]:
        """The agent's unresolved tickets, oldest first (what a reconnecting desktop gets back)."""
        if not actor.may_act_on(username):
            raise TicketForbidden(None, actor.username, "list")
        query = select(Ticket).where(Ticket.agent == username, Ticket.status.in_(UNRESOLVED))
        return await self._views(query.order_by(Ticket.opened_at, Ticket.id))

    async def for_call(self, server: str, linkedid: str, actor: Actor = SYSTEM) -> list[TicketView]:
        """The call's tickets the actor may see (an agent: only their own)."""
        query = select(Ticket).where(Ticket.server == server, Ticket.linkedid == linkedid)
        views = await self._views(query.order_by(Ticket.id))
        return [v for v in views if actor.may_act_on(v.agent)]

    async def for_customer(self, customer_id: int, limit: int = 20) -> list[TicketView]:
        """The customer's ticket history, newest first. Every role may read it: it is part of the
        customer file the desktop shows, and carries no action."""
        limit = min(max(limit, 1), HISTORY_LIMIT)
        query = select(Ticket).where(Ticket.customer_id == customer_id)
        return await self._views(query.order_by(Ticket.opened_at.desc(), Ticket.id.desc()).limit(limit))

    async def _views(self, query: Select[Ticket]) -> list[TicketView]:
        async with self._sessions() as session:
            return [_view(row) for row in (await session.scalars(query)).all()]

    # -- SLA breaches -----------------------------------------------------------------------------

    async def check_breaches(self, now: float | None = None) -> list[TicketSlaBreached]:
        """Store and publish every breach not yet stored; each ticket breaches once."""
        return (await self.breach_sweep(now)).breached

    async def breach_sweep(self, now: float | None = None, lookahead_s: float = 60.0) -> BreachSweep:
        """`check_breaches`, plus when the next breach falls due (the watcher sleeps until then,
        or its regular interval); exact for every breach due within `lookahead_s`."""
        async with self._writing(now) as unit:
            candidates = await self._breach_candidates(unit.session, unit.now + lookahead_s)
            for row in candidates:
                await self._store_breach_once(unit, row)
            views = [_view(row) for row in candidates if row.breached_at is None]
            breached = [e for e in unit.events if isinstance(e, TicketSlaBreached)]
            return BreachSweep(breached, next_breach_at(views, unit.now))

    async def _breach_candidates(self, session: AsyncSession, until: float) -> Sequence[Ticket]:
        """The running, unbreached tickets that can be due by `until`. A floor of a thousand agents
        keeps a thousand or more tickets open: loading them all on every pass held the event loop
        (and the screen pops) for tens of milliseconds. A ticket is due no earlier than its opening
        plus the shortest target, so only those opened long enough ago are loaded (`opened_at` is
        indexed); the due instant itself is computed here rather than in backend-specific SQL."""
        pending = (Ticket.status == "open", Ticket.breached_at.is_(None), Ticket.sla_target_s.is_not(None))
        shortest = await session.scalar(select(func.min(Ticket.sla_target_s)).where(*pending))
        if shortest is None:
            return []
        query = select(Ticket).where(*pending, Ticket.opened_at <= _utc(until - shortest))
        return (await session.scalars(query)).all()

    async def _store_breach_once(self, unit: _Unit, row: Ticket) -> None:
        due = _view(row).sla_due_at(unit.now)
        if due is None or due > unit.now:
            return
        # Guarded on breached_at IS NULL: another process may have stored it in the meantime.
        stored = await unit.session.execute(
            update(Ticket)
            .where(Ticket.id == row.id, Ticket.breached_at.is_(None))
            .values(breached_at=_utc(due), updated_at=_utc(unit.now))
            .execution_options(synchronize_session=False)
        )
        if stored.rowcount != 1:  # type: ignore[attr-defined]
            await unit.session.refresh(row)
            return
        await unit.session.refresh(row)
        self._breach_event(unit, row)

    def _settle_breach(self, unit: _Unit, row: Ticket, not_before: float | None = None) -> None:
        """Store a breach that is due before changing the ticket, so that a change made in the
        second before the watcher's next pass cannot hide it (resolving late still counts)."""
        view = _view(row)
        due = view.sla_due_at(unit.now)
        if not breach_pending(view) or due is None or due > unit.now:
            return
        # A target that became stricter cannot have been missed before it was set.
        row.breached_at = _utc(max(due, not_before) if not_before is not None else due)
        self._breach_event(unit, row)

    def _breach_event(self, unit: _Unit, row: Ticket) -> None:
        view = _view(row)
        unit.events.append(
            TicketSlaBreached.of(view, unit.now, queue=view.queue, sla_target_s=view.sla_target_s)
        )
        log.warning("ticket SLA breached", ticket_id=view.id, agent=view.agent, queue=view.queue)

    # -- plumbing ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _writing(self, now: float | None = None) -> AsyncIterator[_Unit]:
        async with self._lock:
            async with self._sessions.begin() as session:
                unit = _Unit(self._clock() if now is None else now, session)
                yield unit
            # Reached only once committed: a rolled-back change publishes nothing.
            for event in unit.events:
                self._publish(event)

    async def _for_action(
        self, unit: _Unit, ticket_id: int, actor: Actor, action: str, allowed: Sequence[str]
    ) -> Ticket:
        query = select(Ticket).where(Ticket.id == ticket_id).with_for_update()
        row = _authorised(await unit.session.scalar(query), ticket_id, actor, action)
        if row.status not in allowed:
            raise InvalidTransition(ticket_id, row.status, action)
        self._settle_breach(unit, row)
        return row

    async def _changed(
        self, unit: _Unit, row: Ticket, change: str, previous_agent: str | None = None
    ) -> TicketView:
        self._settle_breach(unit, row, not_before=unit.now)
        row.updated_at = _utc(unit.now)
        # Otherwise an unchanged value (two changes in the same instant) is left out of the UPDATE
        # and the model's onupdate replaces it with the database's clock, not ours.
        flag_modified(row, "updated_at")
        await unit.session.flush()
        view = _view(row)
        unit.events.append(TicketUpdated.of(view, unit.now, change=change, previous_agent=previous_agent))
        return view

    def _check_qualification(self, category: str | None, notes: str | None) -> None:
        if category is not None and category not in self._settings.categories:
            raise InvalidCategory(category, self._settings.categories)
        if notes is not None and len(notes) > NOTES_LIMIT:
            raise InvalidNotes(len(notes), NOTES_LIMIT)

    def _apply_qualification(self, row: Ticket, category: str | None, notes: str | None) -> None:
        if category is not None and category != row.category:
            row.category = category
            row.sla_target_s = sla_target_s(self._settings, row.queue, category)
        if notes is not None:
            row.notes = notes

    async def _latest_for_call(self, session: AsyncSession, server: str, linkedid: str) -> Ticket | None:
        query = (
            select(Ticket)
            .where(Ticket.server == server, Ticket.linkedid == linkedid)
            .order_by(Ticket.id.desc())
            .limit(1)
            .with_for_update()
        )
        return await session.scalar(query)

    async def _chosen_customer(self, session: AsyncSession, server: str, linkedid: str) -> int | None:
        # The agent may have picked the caller's file from the pop while the phone was ringing.
        query = select(CallCustomer.customer_id).where(
            CallCustomer.server == server, CallCustomer.linkedid == linkedid
        )
        return await session.scalar(query)


def _authorised(row: Ticket | None, ticket_id: int, actor: Actor, action: str) -> Ticket:
    if row is None:
        raise TicketNotFound(ticket_id)
    if not actor.may_act_on(row.agent):
        raise TicketForbidden(ticket_id, actor.username, action)
    return row


def _end_hold(row: Ticket, now: float) -> None:
    if row.hold_started_at is not None:
        row.held_s += max(now - row.hold_started_at.timestamp(), 0.0)
        row.hold_started_at = None


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _epoch(instant: datetime | None) -> float | None:
    return None if instant is None else instant.timestamp()


def _view(row: Ticket) -> TicketView:
    if row.status not in STATUSES:
        raise ValueError(f"ticket {row.id}: unknown status {row.status!r}")
    return TicketView(
        id=row.id,
        server=row.server,
        linkedid=row.linkedid,
        customer_id=row.customer_id,
        agent=row.agent,
        queue=row.queue,
        category=row.category,
        notes=row.notes,
        status=cast(Status, row.status),
        opened_at=row.opened_at.timestamp(),
        resolved_at=_epoch(row.resolved_at),
        hold_started_at=_epoch(row.hold_started_at),
        held_s=row.held_s,
        sla_target_s=row.sla_target_s,
        breached_at=_epoch(row.breached_at),
        reopened=row.reopened,
        updated_at=row.updated_at.timestamp(),
    )
