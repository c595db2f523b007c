"""Domain events of the tickets domain, published on the same bus as the tracker's call events.

Each carries the ticket as `TicketView.to_json(at)`, so a consumer (the WebSocket hub, a
supervisor's wallboard) can push it as is; `agent` is repeated at the top level for routing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from cti.calls.events import Event
from cti.tickets.models import TicketView


@dataclass(frozen=True, slots=True)
class TicketEvent(Event):
    ticket_id: int
    agent: str
    ticket: dict[str, Any]

    @classmethod
    def of(cls, view: TicketView, at: float, **extra: Any) -> Self:
        return cls(
            server=view.server, at=at, ticket_id=view.id, agent=view.agent, ticket=view.to_json(at), **extra
        )


@dataclass(frozen=True, slots=True)
class TicketOpened(TicketEvent):
    kind: ClassVar[str] = "ticket_opened"


@dataclass(frozen=True, slots=True)
class TicketUpdated(TicketEvent):
    """Any change of state: `change` says which, `previous_agent` is set on a hand-over so that
    the ticket can be withdrawn from the previous agent's desktop."""

    kind: ClassVar[str] = "ticket_updated"
    # qualified / held / resumed / resolved / reopened / handed_over / customer_linked
    change: str = ""
    previous_agent: str | None = None


@dataclass(frozen=True, slots=True)
class TicketSlaBreached(TicketEvent):
    """A ticket's chronometer reached its SLA target; published once per ticket, for supervisors."""

    kind: ClassVar[str] = "ticket_sla_breached"
    queue: str | None = None
    sla_target_s: float | None = None
