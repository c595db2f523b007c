"""SLA rules, free of I/O: which target applies to a ticket, and when the next breach falls due."""

from __future__ import annotations

from collections.abc import Iterable

from cti.config import TicketSettings
from cti.tickets.models import TicketView


def sla_target_s(settings: TicketSettings, queue: str | None, category: str | None) -> float:
    """The target for a ticket: "queue/category" beats "queue" beats the default."""
    if queue is not None:
        if category is not None and f"{queue}/{category}" in settings.sla:
            return settings.sla[f"{queue}/{category}"]
        if queue in settings.sla:
            return settings.sla[queue]
    return settings.default_sla_s


def breach_pending(view: TicketView) -> bool:
    """Whether the ticket can still breach: only a running chronometer moves towards its target."""
    return view.running and view.breached_at is None and view.sla_target_s is not None


def next_breach_at(views: Iterable[TicketView], now: float) -> float | None:
    """The earliest instant one of `views` reaches its SLA target, so the watcher can sleep until
    exactly then; None when none can breach. A ticket already due gives an instant <= now."""
    dues = (view.sla_due_at(now) for view in views if breach_pending(view))
    return min((due for due in dues if due is not None), default=None)
