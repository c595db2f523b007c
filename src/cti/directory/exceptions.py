"""Errors of the directory domain: an HTTP status, a stable `error_id` and a `details` dict each,
so that the web layer's one middleware renders them; the directory itself knows no HTTP."""

from __future__ import annotations

from typing import Any


class DirectoryError(Exception):
    status: int = 400
    error_id: str = "directory-error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    @property
    def status_code(self) -> int:
        # The tickets domain spells it this way; answer to both.
        return self.status

    def to_json(self) -> dict[str, Any]:
        return {"error_id": self.error_id, "message": self.message, "details": self.details}


class CustomerNotFound(DirectoryError):
    status = 404
    error_id = "customer-not-found"

    def __init__(self, customer_id: int) -> None:
        super().__init__(f"no such customer: {customer_id}", {"customer_id": customer_id})


class InvalidCustomer(DirectoryError):
    """A field of a customer being created or updated is unusable; `details.field` says which."""

    status = 400
    error_id = "customer-invalid"

    def __init__(self, field: str, reason: str, value: object = None) -> None:
        super().__init__(f"{field}: {reason}", {"field": field, "reason": reason, "value": value})


class DirectoryUnavailable(DirectoryError):
    """The database did not answer in time (or at all) for a write or a history read."""

    status = 503
    error_id = "directory-unavailable"
