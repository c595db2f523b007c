"""Tickets: opened when an agent answers, qualified, held, resolved; SLA chronometer and breaches.

`TicketService` holds the logic and the authorisation (it knows no HTTP); `TicketConsumer` opens
and hands over tickets from the tracker's domain events; `BreachWatcher` marks SLA breaches.
"""

from cti.tickets.bus_consume import TicketConsumer
from cti.tickets.events import TicketOpened, TicketSlaBreached, TicketUpdated
from cti.tickets.exceptions import (
    InvalidCategory,
    InvalidCustomer,
    InvalidNotes,
    InvalidTransition,
    TicketError,
    TicketForbidden,
    TicketNotFound,
)
from cti.tickets.models import SYSTEM, Actor, TicketView
from cti.tickets.service import BreachSweep, TicketService
from cti.tickets.sla import next_breach_at, sla_target_s
from cti.tickets.watcher import BreachWatcher

__all__ = [
    "SYSTEM",
    "Actor",
    "BreachSweep",
    "BreachWatcher",
    "InvalidCategory",
    "InvalidCustomer",
    "InvalidNotes",
    "InvalidTransition",
    "TicketConsumer",
    "TicketError",
    "TicketForbidden",
    "TicketNotFound",
    "TicketOpened",
    "TicketService",
    "TicketSlaBreached",
    "TicketUpdated",
    "TicketView",
    "next_breach_at",
    "sla_target_s",
]
