"""The customer directory service: caller lookups for screen pops, customer files for the desktop.

`lookup()` is on the pop's path and therefore never raises and never waits longer than its
timeout: a database or CRM that is slow or gone turns into `status: "unavailable"` (or a result
from the source that did answer). The other methods serve the desktop's REST calls and raise
`DirectoryError`s that the web layer renders.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cti.config import DirectorySettings
from cti.db.engine import session_factory, sqlite_file
from cti.directory import store
from cti.directory.crm import CrmSource, CrmUnavailable
from cti.directory.customer import (
    CustomerFile,
    CustomerHistory,
    LookupResult,
    Phone,
    Source,
    SourceState,
    status_for,
)
from cti.directory.exceptions import CustomerNotFound, DirectoryUnavailable, InvalidCustomer
from cti.directory.numbers import CallerNumber, normalize, stored_forms
from cti.directory.outage import OutageLog
from cti.directory.sqlite_lookup import SqliteLookup

log = structlog.get_logger(__name__)

LOOKUP_TIMEOUT_S: Final = 0.5
MAX_MATCHES: Final = 20
FIELD_LIMITS: Final = {"name": 200, "account": 64, "address": 500, "notes": 4000, "label": 40}
MAX_PRIORITY: Final = 1000
# One answer serves every lookup of the same number for a few seconds: an inbound call is looked
# up twice within milliseconds (the FastAGI lookup before the SVI, and the screen pop at the
# call's first event), and the second one should not queue behind the first for the database.
SHARED_FOR_S: Final = 5.0
SHARED_MAX: Final = 2048

# A phone as callers give it: "06 12 34 56 78", or (number, label).
PhoneInput = str | tuple[str, str | None] | Phone


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP


class CustomerDirectory:
    def __init__(
        self,
        engine: AsyncEngine,
        region: str = "FR",
        crm: CrmSource | None = None,
        *,
        timeout_s: float = LOOKUP_TIMEOUT_S,
        max_matches: int = MAX_MATCHES,
        sqlite_inline: bool = False,
    ) -> None:
        self.engine = engine
        self.region = region.upper()
        self.crm = crm
        self.timeout_s = timeout_s
        self.max_matches = max_matches
        self._sessions = session_factory(engine)
        self._sql_outage = OutageLog("sql", log)
        path = sqlite_file(engine)
        # On SQLite, pop lookups run in their own thread (see sqlite_lookup.py), or on the loop
        # of a process that does nothing else (`sqlite_inline`); on PostgreSQL, asyncpg does
        # the I/O without holding the loop, and the query skips the ORM (`customers_by_phone_raw`).
        self._sqlite = SqliteLookup(path, inline=sqlite_inline) if path is not None else None
        self._shared: OrderedDict[str, tuple[float, asyncio.Future[LookupResult]]] = OrderedDict()
        # Told when a customer changes here: whoever shares answers elsewhere (the FastAGI worker).
        self.on_change: list[Callable[[], None]] = []

    @classmethod
    def from_settings(
        cls, engine: AsyncEngine, settings: DirectorySettings, *, sqlite_inline: bool = False
    ) -> CustomerDirectory:
        crm = None
        if settings.crm_url:
            crm = CrmSource(
                settings.crm_url,
                timeout_s=settings.crm_timeout_s,
                cache_ttl_s=settings.crm_cache_ttl_s,
                region=settings.region,
            )
        return cls(engine, settings.region, crm, sqlite_inline=sqlite_inline)

    async def close(self) -> None:
        """Close the CRM client and the lookup thread; the engine belongs to whoever created it."""
        if self.crm is not None:
            await self.crm.close()
        if self._sqlite is not None:
            await self._sqlite.close()

    # -- lookups (the pop's path) ------------------------------------------------------------

    async def lookup(self, raw_caller_id: str | None) -> LookupResult:
        number = normalize(raw_caller_id, self.region)
        if number.kind != "e164":
            return LookupResult(number, number.kind, region=self.region)
        assert number.e164 is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        shared = self._shared.get(number.e164)
        future: asyncio.Future[LookupResult]
        if shared is None or shared[0] <= now:
            future = asyncio.ensure_future(self._lookup_e164(number))
            self._shared[number.e164] = (now + SHARED_FOR_S, future)
            self._shared.move_to_end(number.e164)
            future.add_done_callback(functools.partial(self._unshare_degraded, number.e164))
            # Oldest first: expired entries and, past the bound, the least recently asked.
            while self._shared and (
                len(self._shared) > SHARED_MAX or next(iter(self._shared.values()))[0] <= now
            ):
                self._shared.popitem(last=False)
        else:
            future = shared[1]
        # shield: a caller that gives up (the FastAGI's deadline) does not cancel it for the other.
        result = await asyncio.shield(future)
        return result if result.number == number else dataclasses.replace(result, number=number)

    def _unshare_degraded(self, key: str, done: asyncio.Future[LookupResult]) -> None:
        """An answer from a degraded directory is not kept for the next caller."""
        degraded = done.cancelled() or done.exception() is not None
        if not degraded:
            degraded = any(state != "ok" for _, state in done.result().sources)
        if degraded:
            entry = self._shared.get(key)
            if entry is not None and entry[1] is done:
                del self._shared[key]

    def forget_lookups(self) -> None:
        """A customer changed: the next lookups go to the database again."""
        self._shared.clear()
        for hook in self.on_change:
            hook()

    async def _lookup_e164(self, number: CallerNumber) -> LookupResult:
        if self.crm is None:
            sql_files, truncated, sql_state = await self._sql_lookup(number)
            return self._result(number, sql_files, truncated, (("sql", sql_state),))
        (sql_files, truncated, sql_state), (crm_files, crm_state) = await asyncio.gather(
            self._sql_lookup(number), self._crm_lookup(number)
        )
        merged = _merge(sql_files, crm_files)
        states: tuple[tuple[Source, SourceState], ...] = (("sql", sql_state), ("crm", crm_state))
        return self._result(number, merged, truncated, states)

    async def lookup_json(self, raw_caller_id: str | None) -> dict[str, Any]:
        """`lookup()` as the screen pop embeds it."""
        return (await self.lookup(raw_caller_id)).to_json()

    def _result(
        self,
        number: CallerNumber,
        files: Sequence[CustomerFile],
        truncated: bool,
        states: tuple[tuple[Source, SourceState], ...],
    ) -> LookupResult:
        shown = tuple(files[: self.max_matches])
        truncated = truncated or len(files) > self.max_matches
        degraded = any(state != "ok" for _, state in states)
        status = status_for(shown, degraded)
        return LookupResult(number, status, shown, states, truncated, self.region)

    async def _sql_lookup(self, number: CallerNumber) -> tuple[list[CustomerFile], bool, SourceState]:
        assert number.e164 is not None
        forms = stored_forms(number.e164, self.region)
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._sqlite is not None:
                    files, truncated = await self._sqlite.customers_by_phone(forms, self.max_matches)
                else:
                    raw = store.customers_by_phone_raw(self.engine, forms, self.max_matches)
                    files, truncated = await raw
        except TimeoutError:
            self._sql_outage.failed("timeout", timeout_s=self.timeout_s)
            return [], False, "timeout"
        except Exception as exc:  # whatever the driver raises, the pop goes on without the database
            self._sql_outage.failed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return [], False, "error"
        self._sql_outage.succeeded()
        return files, truncated, "ok"

    async def _crm_lookup(self, number: CallerNumber) -> tuple[tuple[CustomerFile, ...], SourceState]:
        assert self.crm is not None
        try:
            return await self.crm.lookup(number), "ok"
        except CrmUnavailable as exc:
            return (), "timeout" if str(exc) == "timeout" else "error"
        except Exception as exc:  # a CRM bug must not cost the pop its SQL answer
            log.exception("CRM lookup failed unexpectedly", error=str(exc))
            return (), "error"

    # -- customer files (the desktop's REST calls) -------------------------------------------

    @asynccontextmanager
    async def _unit(self) -> AsyncIterator[AsyncSession]:
        """One transaction; a database failure becomes DirectoryUnavailable (503)."""
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except (SQLAlchemyError, OSError) as exc:
            raise DirectoryUnavailable(f"directory database unavailable: {type(exc).__name__}") from exc

    async def get_customer(self, customer_id: int) -> CustomerFile:
        async with self._unit() as session:
            found = await store.customers_by_id(session, [customer_id])
        if not found:
            raise CustomerNotFound(customer_id)
        return found[0]

    async def search(self, text: str, limit: int = 20) -> list[CustomerFile]:
        """By name fragment, exact account, or phone number (any spelling)."""
        text = text.strip()
        if not text:
            return []
        number = normalize(text, self.region)
        forms = stored_forms(number.e164, self.region) if number.e164 else []
        async with self._unit() as session:
            return await store.search(session, text, forms, max(1, min(limit, 100)))

    async def create_customer(
        self,
        name: str,
        phones: Sequence[PhoneInput] = (),
        *,
        account: str | None = None,
        address: str | None = None,
        notes: str | None = None,
        vip: bool = False,
        queue_priority: int = 0,
    ) -> CustomerFile:
        fields = self._fields(
            name=name, account=account, address=address, notes=notes, vip=vip, queue_priority=queue_priority
        )
        checked = self._phones(phones)
        async with self._unit() as session:
            customer_id = await store.insert_customer(session, fields, checked)
        log.info("customer created", customer=customer_id, phones=len(checked))
        self.forget_lookups()
        return await self.get_customer(customer_id)

    async def update_customer(
        self,
        customer_id: int,
        *,
        name: str | _Keep = KEEP,
        phones: Sequence[PhoneInput] | _Keep = KEEP,
        account: str | _Keep | None = KEEP,
        address: str | _Keep | None = KEEP,
        notes: str | _Keep | None = KEEP,
        vip: bool | _Keep = KEEP,
        queue_priority: int | _Keep = KEEP,
    ) -> CustomerFile:
        """Change only the fields given; `phones`, when given, becomes the whole list."""
        given = {
            "name": name,
            "account": account,
            "address": address,
            "notes": notes,
            "vip": vip,
            "queue_priority": queue_priority,
        }
        fields = self._fields(**{k: v for k, v in given.items() if v is not KEEP})
        checked = None if isinstance(phones, _Keep) else self._phones(phones)
        async with self._unit() as session:
            if not await store.update_customer(session, customer_id, fields, checked):
                raise CustomerNotFound(customer_id)
        self.forget_lookups()
        return await self.get_customer(customer_id)

    def _fields(self, **given: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for key, value in given.items():
            if key == "vip":
                if not isinstance(value, bool):
                    raise InvalidCustomer("vip", "must be true or false", value)
                fields[key] = value
            elif key == "queue_priority":
                fields[key] = _priority(value)
            else:
                fields[key] = _text_field(key, value, required=key == "name")
        return fields

    def _phones(self, phones: Sequence[PhoneInput]) -> list[Phone]:
        checked: dict[str, Phone] = {}
        for index, item in enumerate(phones):
            raw, label = (item.e164, item.label) if isinstance(item, Phone) else _split_phone(item)
            number = normalize(raw, self.region)
            if number.e164 is None:
                raise InvalidCustomer(f"phones[{index}]", f"not a phone number ({number.kind})", raw)
            checked.setdefault(number.e164, Phone(number.e164, _text_field("label", label, False)))
        return list(checked.values())

    # -- history and the call's chosen customer ----------------------------------------------

    async def history(self, customer_id: int, limit: int = 20) -> CustomerHistory:
        """The customer's calls and tickets, newest first (at most `limit` of each)."""
        limit = max(1, min(limit, 200))
        async with self._unit() as session:
            if not await store.customers_by_id(session, [customer_id]):
                raise CustomerNotFound(customer_id)
            calls = await store.calls_for(session, customer_id, limit)
            tickets = await store.tickets_for(session, customer_id, limit)
        return CustomerHistory(customer_id, tuple(calls), tuple(tickets))

    async def choose_for_call(
        self, server: str, linkedid: str, customer_id: int, username: str | None
    ) -> CustomerFile:
        """Record the customer an agent picked (or created) for this call; a later choice wins."""
        async with self._unit() as session:
            found = await store.customers_by_id(session, [customer_id])
            if not found:
                raise CustomerNotFound(customer_id)
            await store.set_call_customer(session, server, linkedid, customer_id, username)
        log.info("customer chosen for call", call=linkedid, customer=customer_id, by=username)
        return found[0]

    async def customer_for_call(self, server: str, linkedid: str) -> CustomerFile | None:
        """The customer chosen for this call, if any; bounded like a lookup, since a transferred
        call's pop waits on it."""
        try:
            async with asyncio.timeout(self.timeout_s), self._unit() as session:
                customer_id = await store.call_customer_id(session, server, linkedid)
                found = await store.customers_by_id(session, [customer_id]) if customer_id else []
        except TimeoutError:
            raise DirectoryUnavailable("directory database did not answer in time") from None
        return found[0] if found else None


def _merge(sql: Sequence[CustomerFile], crm: Sequence[CustomerFile]) -> list[CustomerFile]:
    """SQL first; a CRM entry for an account the SQL directory already has is the same customer."""
    accounts = {c.account for c in sql if c.account}
    return [*sql, *(c for c in crm if not (c.account and c.account in accounts))]


def _split_phone(item: str | tuple[str, str | None]) -> tuple[str, str | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    raise InvalidCustomer("phones", "each phone is a number or a (number, label) pair", repr(item))


def _text_field(key: str, value: Any, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidCustomer(key, "must be text", value)
    text = " ".join(value.split()) if key in ("name", "account", "label") else value.strip()
    if not text:
        if required:
            raise InvalidCustomer(key, "must not be empty", value)
        return None
    if len(text) > FIELD_LIMITS[key]:
        raise InvalidCustomer(key, f"at most {FIELD_LIMITS[key]} characters", len(text))
    return text


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise InvalidCustomer("queue_priority", f"an integer from 0 to {MAX_PRIORITY}", value)
    return value


__all__ = ["KEEP", "CustomerDirectory", "PhoneInput"]
