"""Errors of the tickets domain. Each carries the HTTP status, a stable `error_id` and a `details`
dict, like wazo-calld's `APIException`, so that one piece of web middleware renders them all and
the service itself never imports anything HTTP."""

from __future__ import annotations

from typing import Any


class TicketError(Exception):
    status_code: int = 400
    error_id: str = "ticket-error"
    resource = "tickets"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_json(self) -> dict[str, Any]:
        return {
            "error_id": self.error_id,
            "message": self.message,
            "resource": self.resource,
            "details": self.details,
        }


class TicketNotFound(TicketError):
    status_code = 404
    error_id = "ticket-not-found"

    def __init__(self, ticket_id: int) -> None:
        super().__init__(f"no such ticket: {ticket_id}", {"ticket_id": ticket_id})


class TicketForbidden(TicketError):
    status_code = 403
    error_id = "ticket-forbidden"

    def __init__(self, ticket_id: int | None, username: str, action: str) -> None:
        super().__init__(
            f"{username} may not {action} this ticket",
            {"ticket_id": ticket_id, "username": username, "action": action},
        )


class InvalidTransition(TicketError):
    status_code = 409
    error_id = "ticket-invalid-transition"

    def __init__(self, ticket_id: int, status: str, action: str) -> None:
        super().__init__(
            f"cannot {action} a ticket that is {status}",
            {"ticket_id": ticket_id, "status": status, "action": action},
        )


class InvalidCategory(TicketError):
    status_code = 400
    error_id = "ticket-invalid-category"

    def __init__(self, category: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"unknown ticket category: {category!r}", {"category": category, "allowed": list(allowed)}
        )


class InvalidNotes(TicketError):
    status_code = 400
    error_id = "ticket-invalid-notes"

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"notes too long: {length} characters, at most {limit}", {"length": length, "limit": limit}
        )


class InvalidCustomer(TicketError):
    status_code = 400
    error_id = "ticket-invalid-customer"

    def __init__(self, customer_id: int) -> None:
        super().__init__(f"no such customer: {customer_id}", {"customer_id": customer_id})
