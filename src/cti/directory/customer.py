"""What the directory hands out: customer files, lookup results and histories.

Frozen dataclasses with a `to_json()` each, built at the edge from database rows or CRM answers;
the screen pop embeds `LookupResult.to_json()` as is, so its shape is a public contract
(documented in docs/directory.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cti.directory.numbers import CallerNumber, display_form

LookupStatus = Literal["withheld", "invalid", "found", "several", "unknown", "unavailable"]
Source = Literal["sql", "crm"]
# "ok" answered (even with nothing); "timeout" and "error" mean the source could not say.
SourceState = Literal["ok", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class Phone:
    e164: str
    label: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"e164": self.e164, "label": self.label}


@dataclass(frozen=True, slots=True)
class CustomerFile:
    """A customer as the desktop shows it ("fiche client").

    `id` is the directory's own key; CRM customers have none until someone saves them locally,
    and carry the CRM's key in `external_id` instead."""

    id: int | None
    name: str
    account: str | None = None
    address: str | None = None
    notes: str | None = None
    vip: bool = False
    queue_priority: int = 0
    phones: tuple[Phone, ...] = ()
    source: Source = "sql"
    external_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "account": self.account,
            "address": self.address,
            "notes": self.notes,
            "vip": self.vip,
            "queue_priority": self.queue_priority,
            "phones": [p.to_json() for p in self.phones],
            "source": self.source,
            "external_id": self.external_id,
        }


@dataclass(frozen=True, slots=True)
class LookupResult:
    number: CallerNumber
    status: LookupStatus
    customers: tuple[CustomerFile, ...] = ()
    # Which sources were asked and how they answered, e.g. (("sql", "ok"), ("crm", "timeout")).
    sources: tuple[tuple[Source, SourceState], ...] = ()
    # More customers share the number than a pop can list.
    truncated: bool = False
    region: str = "FR"

    @property
    def customer(self) -> CustomerFile | None:
        return self.customers[0] if self.status == "found" else None

    def to_json(self) -> dict[str, Any]:
        return {
            "number": {
                "raw": self.number.raw,
                "e164": self.number.e164,
                "kind": self.number.kind,
                "display": display_form(self.number.e164, self.region) or self.number.raw,
            },
            "status": self.status,
            "customers": [c.to_json() for c in self.customers],
            "sources": dict(self.sources),
            "truncated": self.truncated,
        }


def status_for(customers: tuple[CustomerFile, ...], degraded: bool) -> LookupStatus:
    """Nobody found while a source failed is not "unknown": offering the new-customer form then
    would create duplicates of customers the failed source knows."""
    if len(customers) == 1:
        return "found"
    if customers:
        return "several"
    return "unavailable" if degraded else "unknown"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class CallSummary:
    id: int
    server: str
    linkedid: str
    direction: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    caller_e164: str | None
    queue: str | None
    agent: str | None
    outcome: str
    wait_s: float | None
    talk_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "server": self.server,
            "linkedid": self.linkedid,
            "direction": self.direction,
            "started_at": _iso(self.started_at),
            "answered_at": _iso(self.answered_at),
            "ended_at": _iso(self.ended_at),
            "caller_e164": self.caller_e164,
            "queue": self.queue,
            "agent": self.agent,
            "outcome": self.outcome,
            "wait_s": self.wait_s,
            "talk_s": self.talk_s,
        }


@dataclass(frozen=True, slots=True)
class TicketSummary:
    id: int
    server: str
    linkedid: str
    agent: str
    queue: str | None
    category: str | None
    notes: str | None
    status: str
    opened_at: datetime
    resolved_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "server": self.server,
            "linkedid": self.linkedid,
            "agent": self.agent,
            "queue": self.queue,
            "category": self.category,
            "notes": self.notes,
            "status": self.status,
            "opened_at": _iso(self.opened_at),
            "resolved_at": _iso(self.resolved_at),
        }


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    customer_id: int
    calls: tuple[CallSummary, ...]
    tickets: tuple[TicketSummary, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "calls": [c.to_json() for c in self.calls],
            "tickets": [t.to_json() for t in self.tickets],
        }
