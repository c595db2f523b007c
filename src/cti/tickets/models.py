"""What the rest of cti sees of a ticket: `Actor` (who acts) and `TicketView` (a ticket's stored
state). The chronometer is derived from the stored instants at a given `now`, never counted in
memory, so a view read after a restart shows the same elapsed time as before it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["open", "on_hold", "resolved"]
Role = Literal["agent", "supervisor", "admin", "system"]

# Roles that may act on any agent's ticket; "system" is the daemon itself (bus consumer, watcher).
OVERSEERS: frozenset[str] = frozenset({"supervisor", "admin", "system"})


@dataclass(frozen=True, slots=True)
class Actor:
    username: str
    role: str  # agent / supervisor / admin (system: the daemon itself)

    def may_act_on(self, agent: str) -> bool:
        return self.role in OVERSEERS or (self.role == "agent" and self.username == agent)


SYSTEM = Actor("cti", "system")


@dataclass(frozen=True, slots=True)
class TicketView:
    """A ticket as stored; instants are epoch seconds (like every domain event's `at`)."""

    id: int
    server: str
    linkedid: str
    customer_id: int | None
    agent: str
    queue: str | None
    category: str | None
    notes: str | None
    status: Status
    opened_at: float
    resolved_at: float | None
    hold_started_at: float | None
    held_s: float
    sla_target_s: float | None
    breached_at: float | None
    reopened: int
    updated_at: float

    @property
    def running(self) -> bool:
        return self.status == "open"

    def hold_total_s(self, now: float) -> float:
        """Time spent on hold, the current hold included."""
        current = now - self.hold_started_at if self.hold_started_at is not None else 0.0
        return self.held_s + max(current, 0.0)

    def elapsed_s(self, now: float) -> float:
        # A clock that stepped back must not show a negative chronometer.
        end = self.resolved_at if self.resolved_at is not None else now
        return max(end - self.opened_at - self.hold_total_s(now), 0.0)

    def sla_due_at(self, now: float) -> float | None:
        """The instant the SLA falls (or fell) due: it moves later while the ticket is on hold."""
        if self.sla_target_s is None:
            return None
        return self.opened_at + self.hold_total_s(now) + self.sla_target_s

    def sla_left_s(self, now: float) -> float | None:
        if self.sla_target_s is None:
            return None
        return self.sla_target_s - self.elapsed_s(now)

    def breached(self, now: float) -> bool:
        # True as soon as the target is reached, even in the instant before the watcher stores it.
        left = self.sla_left_s(now)
        return self.breached_at is not None or (left is not None and left <= 0)

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "server": self.server,
            "linkedid": self.linkedid,
            "customer_id": self.customer_id,
            "agent": self.agent,
            "queue": self.queue,
            "category": self.category,
            "notes": self.notes,
            "status": self.status,
            "opened_at": self.opened_at,
            "resolved_at": self.resolved_at,
            "hold_started_at": self.hold_started_at,
            "held_s": self.held_s,
            "elapsed_s": _ms(self.elapsed_s(now)),
            "running": self.running,
            "sla_target_s": self.sla_target_s,
            "sla_due_at": self.sla_due_at(now),
            "sla_left_s": _ms(self.sla_left_s(now)),
            "breached": self.breached(now),
            "breached_at": self.breached_at,
            "reopened": self.reopened,
            "updated_at": self.updated_at,
            "as_of": now,
        }


def _ms(seconds: float | None) -> float | None:
    # A desktop shows seconds; the millisecond keeps float noise (85.00000001) out of the JSON.
    return None if seconds is None else round(seconds, 3)
